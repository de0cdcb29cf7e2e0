"""Finding bad image files before a run starts, not hours into it.

A dataset opts in by offering ``scan() -> ScanResult`` (and ``without(indices)`` for
``data.skip_bad``); the pix2pix datasets do. The checks read file headers only: a corrupt,
truncated, empty or non-image file is reported at once with every other bad file, in well under a
second for thousands of files.
"""

from __future__ import annotations

import os
import stat
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from i2i.errors import DataError

#: Pillow refuses images above twice this many pixels; above it, it only warns (in its words).
LARGE_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485


@dataclass
class ItemProblem:
    """Why item ``index`` of a dataset cannot be used."""

    index: int
    path: Path
    reason: str


@dataclass
class ScanResult:
    """What a header scan of one split found."""

    items: int
    bad: list[ItemProblem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    sizes: Counter = field(default_factory=Counter)  # (width, height) -> number of files
    #: Entries the dataset found but did not take as items, with why: names ending like an image
    #: that are symbolic-link loops, links to missing files, folders, pipes...
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def bad_indices(self) -> set[int]:
        return {p.index for p in self.bad}

    def all_bad(self) -> bool:
        """True when not one item is usable: leaving the bad ones out leaves nothing."""
        return self.items > 0 and len(self.bad_indices()) >= self.items


def describe_skipped(skipped: list[tuple[Path, str]], limit: int = 8) -> str:
    """``N entries named like images were skipped: a.jpg (a folder), ...`` for a warning."""
    shown = "; ".join(f"{path} ({reason})" for path, reason in skipped[:limit])
    more = f"; ... and {len(skipped) - limit} more" if len(skipped) > limit else ""
    noun = "entry named like an image was" if len(skipped) == 1 else "entries named like images were"
    return f"{len(skipped)} {noun} skipped, not being image files: {shown}{more}."


def where_items_are(result: ScanResult, fallback: str) -> str:
    """The folder that holds a split's bad files (their common parent), for messages."""
    paths = [str(p.path) for p in result.bad]
    try:
        common = os.path.commonpath(paths) if paths else ""
    except ValueError:  # paths on different drives
        common = ""
    if common and Path(common) in {p.path for p in result.bad}:  # a single file: its folder
        common = str(Path(common).parent)
    return common or fallback


def describe_all_bad(result: ScanResult, what: str) -> str:
    """Every item of a split is bad: the split is empty once they are left out."""
    return (
        f"{what[:1].upper()}{what[1:]} is empty once its bad files are left out: not one of its "
        f"{result.items} items can be used (looked in {where_items_are(result, what)}), so "
        "data.skip_bad cannot help. Replace the files or point data.root at the right folder."
    )


def _jpeg_truncated(path: Path) -> bool:
    """A complete JPEG ends with the end-of-image marker (possibly followed by padding)."""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - 4096))
        tail = fh.read()
    return b"\xff\xd9" not in tail


def image_header(path: Path) -> tuple[tuple[int, int] | None, str | None]:
    """``((width, height), None)`` for a usable image file, else ``(None, reason)``.

    Reads the header (plus the chunk checksums of a PNG and the end marker of a JPEG), never the
    pixels, so it is cheap. Files Pillow does not read (``.npy``, multi-channel TIFF) pass with an
    unknown size: the dataset decodes them itself.
    """
    try:
        info = path.stat()
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror})"
    if not stat.S_ISREG(info.st_mode):
        return None, "is not a regular file"
    if info.st_size == 0:
        return None, "is empty (0 bytes)"
    if path.suffix.lower() == ".npy":
        return None, None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                size, fmt = img.size, img.format
                if fmt == "PNG":
                    img.verify()  # walks the chunks and their checksums without decoding
    except Image.DecompressionBombError:
        return None, "is too large for Pillow to open safely (a decompression bomb?)"
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        if path.suffix.lower() in (".tif", ".tiff"):
            return None, None  # float or many-channel TIFFs: tifffile reads what Pillow cannot
        detail = str(exc) or type(exc).__name__
        return None, f"is not a readable image ({detail})"
    if size[0] == 0 or size[1] == 0:
        return None, f"has no pixels ({size[0]}x{size[1]})"
    if fmt == "JPEG" and _jpeg_truncated(path):
        return None, "is a truncated JPEG (no end-of-image marker)"
    return size, None


def describe_problems(result: ScanResult, what: str, limit: int = 20) -> str:
    lines = [f"  {p.path}: {p.reason}" for p in result.bad[:limit]]
    if len(result.bad) > limit:
        lines.append(f"  ... and {len(result.bad) - limit} more")
    return f"{len(result.bad)} of {result.items} items of {what} cannot be used:\n" + "\n".join(lines)


def check_split(dataset: Any, what: str, skip_bad: bool) -> tuple[Any, list[str]]:
    """Scan ``dataset`` if it can be scanned; returns the dataset to use and notes to show.

    Bad files stop the run with all of them listed, or, with ``skip_bad``, are left out (counted
    in the notes). Datasets without ``scan()`` are used as they are.
    """
    scan = getattr(dataset, "scan", None)
    if scan is None:
        return dataset, []
    result: ScanResult = scan()
    notes = list(result.warnings)
    if result.skipped:
        notes.append(describe_skipped(result.skipped))
    if not result.bad:
        return dataset, notes
    if result.all_bad():
        raise DataError(describe_problems(result, what) + "\n" + describe_all_bad(result, what))
    if not skip_bad:
        raise DataError(
            describe_problems(result, what)
            + "\nFix or delete these files, or set data.skip_bad = true to train on the rest."
        )
    if len(result.bad_indices()) >= result.items:
        raise DataError(describe_problems(result, what) + "\nNo usable items are left.")
    without = getattr(dataset, "without", None)
    if without is None:
        raise DataError(
            describe_problems(result, what) + f"\n{type(dataset).__name__} cannot leave items out "
            "(it has no without() method), so data.skip_bad cannot be used with it."
        )
    notes.append(
        f"data.skip_bad: left out {len(result.bad_indices())} of {result.items} items of {what} "
        f"(first: {result.bad[0].path}: {result.bad[0].reason})."
    )
    return without(result.bad_indices()), notes


@dataclass
class SplitReport:
    """``i2i data verify RECIPE``: what one split of a recipe's data holds."""

    split: str
    items: int = 0
    sizes: Counter = field(default_factory=Counter)
    bad: list[ItemProblem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None  # the split cannot be used at all (missing folder, unpaired files)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # see ScanResult.skipped

    @property
    def ok(self) -> bool:
        return self.error is None and not self.bad


def verify_splits(build: Any, splits: list[str]) -> list[SplitReport]:
    """Build each split with ``build(split)`` and scan it; problems are collected, not raised."""
    reports = []
    for split in splits:
        report = SplitReport(split)
        try:
            dataset = build(split)
        except DataError as exc:
            report.error = str(exc)
            reports.append(report)
            continue
        report.items = len(dataset)
        scan = getattr(dataset, "scan", None)
        if scan is None:
            report.warnings.append(f"{type(dataset).__name__} cannot be scanned; only its size is known.")
        else:
            result: ScanResult = scan()
            report.sizes, report.bad, report.warnings = result.sizes, result.bad, list(result.warnings)
            report.skipped = list(result.skipped)
            if result.skipped:
                report.warnings.append(describe_skipped(result.skipped))
            if result.all_bad():
                report.error = describe_all_bad(result, f"The {split!r} split")
        if report.items == 0 and report.error is None:
            report.error = (
                f"The {split!r} split is empty: the dataset built for it holds no items ({dataset!r})."
            )
        reports.append(report)
    return reports
