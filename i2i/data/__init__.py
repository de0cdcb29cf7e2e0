"""Datasets' machinery: replayable order and jitter, file checks, downloads, pixel conversions."""
