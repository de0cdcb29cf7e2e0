"""Downloading and checking the example datasets (``i2i data fetch``).

Only the pix2pix CMP Facades archive is known for now. Downloads go through :mod:`urllib` with a
progress bar, archives are extracted only after every member has been checked to stay inside the
destination, and the result is verified (splits, file counts, image size) before it is reported as
ready. Without a network connection the call fails fast with a :class:`~i2i.errors.DataError` that
explains how to provide the files by hand.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from i2i.errors import DataError, suggest

FACADES_URL = "http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/facades.tar.gz"
FACADES_SPLITS = {"train": 400, "test": 106}  # required
FACADES_OPTIONAL_SPLITS = {"val": 100}  # in the original archive, missing from some copies
FACADES_SIZE = (512, 256)  # width x height: photo (A) left, label map (B) right
FACADES_LAYOUT = (
    "ROOT/train/1.jpg ... ROOT/train/400.jpg and ROOT/test/1.jpg ... ROOT/test/106.jpg "
    "(optionally ROOT/val/ with 100 more), each a 512x256 JPEG with the facade photo on the left "
    "and its colour label map on the right"
)
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class KnownDataset:
    name: str
    url: str
    description: str
    layout: str
    verify: Callable[[Path], dict[str, Any]]


def _images(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in _IMAGE_SUFFIXES
    )


def verify_facades(root: str | Path) -> dict[str, Any]:
    """Check a facades copy: train (400) and test (106) splits, optional val (100), 512x256 images.

    Returns a summary ``{"root", "splits": {split: count}, "total", "image_size"}``; raises a
    :class:`~i2i.errors.DataError` listing every problem found.
    """
    from PIL import Image

    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"The facades folder {root} does not exist. Expected layout: {FACADES_LAYOUT}.")
    problems: list[str] = []
    counts: dict[str, int] = {}
    expected = dict(FACADES_SPLITS)
    for split, count in FACADES_OPTIONAL_SPLITS.items():
        if (root / split).is_dir():
            expected[split] = count
    for split, count in expected.items():
        folder = root / split
        if not folder.is_dir():
            problems.append(f"the {split!r} folder is missing")
            continue
        files = _images(folder)
        counts[split] = len(files)
        if len(files) != count:
            problems.append(f"{split!r} holds {len(files)} images, expected {count}")
        wrong: list[str] = []
        for f in files:
            try:
                with Image.open(f) as img:  # reads the header only
                    size = img.size
            except Exception as exc:
                problems.append(f"{f} cannot be read ({type(exc).__name__}: {exc})")
                continue
            if size != FACADES_SIZE:
                wrong.append(f"{f.name} is {size[0]}x{size[1]}")
        if wrong:
            more = f" and {len(wrong) - 3} more" if len(wrong) > 3 else ""
            problems.append(
                f"in {split!r}, images must be {FACADES_SIZE[0]}x{FACADES_SIZE[1]}, but "
                + ", ".join(wrong[:3])
                + more
            )
    if problems:
        shown = "; ".join(problems[:8]) + (f"; and {len(problems) - 8} more" if len(problems) > 8 else "")
        raise DataError(
            f"{root} is not a complete copy of the facades dataset: {shown}. Expected layout: "
            f"{FACADES_LAYOUT}."
        )
    return {
        "root": str(root),
        "splits": counts,
        "total": sum(counts.values()),
        "image_size": FACADES_SIZE,
    }


DATASETS: dict[str, KnownDataset] = {
    "facades": KnownDataset(
        name="facades",
        url=FACADES_URL,
        description="CMP Facades, pix2pix aligned format (labels -> photo is direction BtoA)",
        layout=FACADES_LAYOUT,
        verify=verify_facades,
    ),
}


# -- archives ----------------------------------------------------------------------------------------
def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    name = member.name
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts:
        raise DataError(
            f"Refusing to extract {archive}: its member {name!r} would be written outside the "
            "destination folder (absolute path or '..'). The archive is damaged or malicious."
        )
    if member.issym() or member.islnk():
        raise DataError(
            f"Refusing to extract {archive}: its member {name!r} is a link, which a dataset "
            "archive does not need and which could point outside the destination folder."
        )
    if not (member.isfile() or member.isdir()):
        raise DataError(
            f"Refusing to extract {archive}: its member {name!r} is not a regular file or folder."
        )


def safe_extract(archive: str | Path, dest: str | Path) -> list[str]:
    """Extract a tar archive (any compression) into ``dest`` after checking every member.

    Members with absolute paths, ``..`` components, links or device files are rejected with a
    :class:`~i2i.errors.DataError` before anything is written. Returns the member names.
    """
    archive, dest = Path(archive), Path(dest)
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(member, archive)
            dest.mkdir(parents=True, exist_ok=True)
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: a second line of defence
                tar.extractall(dest, members=members, filter="data")
            else:  # pragma: no cover - older Pythons
                tar.extractall(dest, members=members)
    except DataError:
        raise
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(
            f"Could not extract {archive}: {type(exc).__name__}: {exc}. The download may be "
            "incomplete; delete it and fetch again."
        ) from None
    return [m.name for m in members]


# -- downloading -------------------------------------------------------------------------------------
def _offline_message(info: KnownDataset, url: str, dest: Path, reason: str) -> str:
    return (
        f"Could not download the {info.name} dataset from {url} ({reason}). If this machine has no "
        f"internet access, copy the data over by other means: any folder laid out as "
        f"{info.layout} works. Put it at {dest}, or keep it anywhere and point recipes at it "
        "with `--set data.root=PATH`."
    )


def _download(url: str, target: Path, timeout: float, info: KnownDataset, dest: Path, progress: bool) -> None:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise DataError(
            _offline_message(info, url, dest, f"the server answered HTTP {exc.code} {exc.reason}")
        ) from None
    except urllib.error.URLError as exc:
        raise DataError(_offline_message(info, url, dest, f"{exc.reason}")) from None
    except TimeoutError:
        raise DataError(_offline_message(info, url, dest, f"no answer within {timeout:g} s")) from None
    except (OSError, ValueError) as exc:
        raise DataError(_offline_message(info, url, dest, f"{type(exc).__name__}: {exc}")) from None

    with response:
        length = response.headers.get("Content-Length") if hasattr(response, "headers") else None
        total = int(length) if length and length.isdigit() else None
        columns = (
            TextColumn(f"[bold]{info.name}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
        )
        received = 0
        try:
            with (
                Progress(*columns, console=Console(stderr=True), disable=not progress) as bar,
                open(target, "wb") as out,
            ):
                task = bar.add_task("download", total=total)
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(task, advance=len(chunk))
        except (TimeoutError, urllib.error.URLError, OSError) as exc:
            raise DataError(_offline_message(info, url, dest, f"the download broke off: {exc}")) from None
    if total is not None and received != total:
        raise DataError(
            _offline_message(info, url, dest, f"received {received} of {total} bytes; the transfer was cut")
        )


def _find_dataset_folder(extracted: Path, info: KnownDataset) -> Path:
    """The folder inside an extracted archive that holds the splits (e.g. ``facades/``)."""
    candidates = [extracted / info.name, extracted]
    candidates += [p for p in extracted.iterdir() if p.is_dir()]
    for c in candidates:
        if c.is_dir() and all((c / s).is_dir() for s in FACADES_SPLITS):
            return c
    return extracted / info.name if (extracted / info.name).is_dir() else extracted


def fetch_dataset(
    name: str,
    dest: str | Path | None = None,
    url: str | None = None,
    timeout: float = 15,
    *,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Download, safely extract and verify the example dataset ``name`` into ``dest``.

    ``dest`` defaults to ``datasets/<name>``. A ``dest`` that already holds a verified copy is
    returned without downloading unless ``force`` is set. ``url`` overrides the download address
    (``file://`` URLs work, for a mirror on disk). Returns the dataset folder.
    """
    if name not in DATASETS:
        raise DataError(f"Unknown dataset {name!r}. {suggest(name, DATASETS)}")
    info = DATASETS[name]
    dest = Path(dest if dest is not None else Path("datasets") / name).expanduser()
    url = url or info.url

    if dest.exists() and not force:
        try:
            info.verify(dest)
            return dest
        except DataError:
            pass  # incomplete: fetch again below
    if dest.exists() and not dest.is_dir():
        raise DataError(f"Cannot fetch {name} into {dest}: it is a file, not a folder.")
    if dest.is_dir() and any(dest.iterdir()):
        raise DataError(
            f"Cannot fetch {name} into {dest}: the folder already holds files that are not a "
            "complete copy of the dataset. Move or delete it, or choose another destination."
        )

    created = [p for p in (dest.parent, *dest.parent.parents) if not p.exists()]
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-download-", dir=dest.parent))
    fetched = False
    try:
        archive = staging / f"{name}.tar.gz"
        _download(url, archive, timeout, info, dest, progress)
        extracted = staging / "extracted"
        safe_extract(archive, extracted)
        folder = _find_dataset_folder(extracted, info)
        info.verify(folder)  # raises DataError before anything is moved into place
        if dest.is_dir():
            dest.rmdir()  # empty, checked above
        shutil.move(os.fspath(folder), os.fspath(dest))
        fetched = True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not fetched:  # leave no empty datasets/ folder behind
            for folder in created:  # innermost first
                try:
                    folder.rmdir()
                except OSError:
                    break
    return dest
