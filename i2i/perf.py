"""Process-level tuning for CPU training (see docs/performance.md for the measurements)."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_MMAP_THRESHOLD = -3
_tuned = False


def tune_allocator(threshold: int = 32 * 1024 * 1024) -> bool:
    """Keep glibc from returning large activation buffers to the OS after every step.

    By default glibc serves allocations above a dynamic threshold with fresh ``mmap`` calls, so
    each training step page-faults its activations in again. Raising the threshold keeps them in
    the heap: the same results, less system time. Returns whether the setting was applied.
    """
    global _tuned
    if _tuned:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _tuned = bool(libc.mallopt(_M_MMAP_THRESHOLD, int(threshold)))
    except (OSError, AttributeError):
        return False
    return _tuned
