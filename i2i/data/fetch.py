"""Downloading and checking the datasets the pix2pix and CycleGAN authors published (``i2i data fetch``).

pix2pix's aligned datasets (facades, maps, edges2shoes, edges2handbags, night2day) come as
``.tar.gz`` archives of A|B images in ``train/``, ``val/`` and/or ``test/``; CycleGAN's unaligned ones
(horse2zebra, monet2photo, ...) as ``.zip`` archives of ``trainA/ trainB/ testA/ testB/``. CycleGAN's
copies of maps and facades are named ``cyclegan/maps`` and ``cyclegan/facades`` here, since pix2pix
has datasets of those names. Cityscapes cannot be downloaded for the user (see :data:`CITYSCAPES_HELP`).

Downloads go through :mod:`urllib` with a progress bar, archives (tar or zip, recognised by their
first bytes) are extracted only after every member has been checked to stay inside the
destination, and the result is verified before it is reported as ready. The authors publish no
checksums and their download scripts give no archive sizes, so none are recorded here: what is
checked is the extracted layout (the split folders, none of them empty), a few image headers per
folder, and for facades the exact file counts and image size. Without a network connection the call
fails fast with a :class:`~i2i.errors.DataError` that explains how to provide the files by hand.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
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


PIX2PIX_URL = "http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/{name}.tar.gz"
CYCLEGAN_URL = "https://efrosgans.eecs.berkeley.edu/cyclegan/datasets/{name}.zip"
UNALIGNED_FOLDERS = ("trainA", "trainB", "testA", "testB")
#: How many image headers of each folder a verification reads (all of them for facades).
HEADER_SAMPLE = 5

CITYSCAPES_HELP = (
    "Cityscapes cannot be downloaded by i2i: its licence does not allow others to redistribute it, "
    "so register at https://www.cityscapes-dataset.com and download it yourself. Get gtFine_trainvaltest.zip "
    "(the label maps) and leftImg8bit_trainvaltest.zip (the photos) there and unzip both. The "
    "pix2pix authors' datasets/prepare_cityscapes_dataset.py then pairs each colour label map "
    "(gtFine/<split>/<city>/*_gtFine_color.png) with its photo (leftImg8bit/<split>/<city>/"
    "*_leftImg8bit.png), both resized to 256x256, into one 512x256 image, photo on the left (A) and "
    "label map on the right (B): Cityscapes' train split becomes ROOT/train/, its val split "
    "ROOT/test/ (and the halves alone go to trainA/, trainB/, testA/, testB/ for CycleGAN). Use ROOT "
    "with the 'aligned' dataset (direction = \"BtoA\" for labels -> photo) or the 'unaligned' one."
)


@dataclass(frozen=True)
class KnownDataset:
    name: str
    url: str
    description: str
    layout: str
    verify: Callable[[Path], dict[str, Any]]
    #: Folders that mark the dataset's root inside an extracted archive.
    markers: tuple[str, ...] = tuple(FACADES_SPLITS)
    #: "pix2pix" (aligned A|B files) or "cyclegan" (unaligned trainA/trainB folders).
    source: str = "pix2pix"


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


def _problems_text(problems: list[str]) -> str:
    return "; ".join(problems[:8]) + (f"; and {len(problems) - 8} more" if len(problems) > 8 else "")


def verify_layout(root: str | Path, info: KnownDataset) -> dict[str, Any]:
    """Check a copy of a known dataset by its layout: the split folders, none empty, a few headers.

    pix2pix datasets need ``train/`` and ``val/`` or ``test/`` (which of the two depends on the
    archive), holding A|B images twice as wide as high; CycleGAN datasets need ``trainA/``,
    ``trainB/``, ``testA/`` and ``testB/``. The first few images of each folder must have readable
    headers. File counts are reported, not checked: the authors publish none for the archives.
    Returns ``{"root", "splits": {folder: count}, "total"}``; raises a DataError listing every problem.
    """
    from i2i.data.scan import image_header

    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"The {info.name} folder {root} does not exist. Expected layout: {info.layout}.")
    if info.source == "cyclegan":
        folders = list(UNALIGNED_FOLDERS)
        problems = [f"the {f!r} folder is missing" for f in folders if not (root / f).is_dir()]
    else:
        folders = [f for f in ("train", "val", "test") if (root / f).is_dir()]
        problems = [] if "train" in folders else ["the 'train' folder is missing"]
        if not {"val", "test"} & set(folders):
            problems.append("there is neither a 'val' nor a 'test' folder")
    counts: dict[str, int] = {}
    for name in folders:
        if not (root / name).is_dir():
            continue
        files = _images(root / name)
        counts[name] = len(files)
        if not files:
            problems.append(f"{name!r} holds no images")
        for path in files[:HEADER_SAMPLE]:
            size, reason = image_header(path)
            if reason is not None:
                problems.append(f"{path} {reason}")
            elif size is not None and info.source == "pix2pix" and size[0] != 2 * size[1]:
                problems.append(f"{path} is {size[0]}x{size[1]}, not an A|B pair twice as wide as high")
    if problems:
        raise DataError(
            f"{root} is not a complete copy of the {info.name} dataset: {_problems_text(problems)}. "
            f"Expected layout: {info.layout}."
        )
    return {"root": str(root), "splits": counts, "total": sum(counts.values())}


def _aligned_layout(what: str) -> str:
    return (
        f"ROOT/train/ and ROOT/val/ or ROOT/test/ (as the archive has them), each image a pair side "
        f"by side: {what}"
    )


def _unaligned_layout(a: str, b: str) -> str:
    return f"ROOT/trainA/ and ROOT/testA/ with {a}, ROOT/trainB/ and ROOT/testB/ with {b}"


def _pix2pix(name: str, description: str, what: str) -> KnownDataset:
    layout = _aligned_layout(what)
    return KnownDataset(
        name=name,
        url=PIX2PIX_URL.format(name=name),
        description=description,
        layout=layout,
        verify=lambda root: verify_layout(root, DATASETS[name]),
        markers=("train",),
    )


def _cyclegan(name: str, description: str, a: str, b: str, archive: str | None = None) -> KnownDataset:
    return KnownDataset(
        name=name,
        url=CYCLEGAN_URL.format(name=archive or name),
        description=description,
        layout=_unaligned_layout(a, b),
        verify=lambda root: verify_layout(root, DATASETS[name]),
        markers=("trainA", "trainB"),
        source="cyclegan",
    )


DATASETS: dict[str, KnownDataset] = {
    "facades": KnownDataset(
        name="facades",
        url=FACADES_URL,
        description="CMP Facades, pix2pix aligned format (labels -> photo is direction BtoA)",
        layout=FACADES_LAYOUT,
        verify=verify_facades,
    ),
    **{
        info.name: info
        for info in (
            _pix2pix("maps", "Google Maps: aerial photo | map, pix2pix aligned format", "aerial photo | map"),
            _pix2pix(
                "edges2shoes",
                "UT Zappos50K shoes with HED edges, pix2pix aligned format (large download)",
                "edge map | shoe photo",
            ),
            _pix2pix(
                "edges2handbags",
                "Amazon handbags (iGAN project) with HED edges, pix2pix aligned format (large download)",
                "edge map | handbag photo",
            ),
            _pix2pix(
                "night2day",
                "Transient Attributes scenes at night and by day, pix2pix aligned format",
                "the same scene at two times of day",
            ),
            _cyclegan("horse2zebra", "ImageNet horses and zebras", "horses", "zebras"),
            _cyclegan("apple2orange", "ImageNet apples and oranges", "apples", "oranges"),
            _cyclegan(
                "summer2winter_yosemite",
                "Yosemite in summer and in winter (Flickr)",
                "summer photos",
                "winter photos",
            ),
            _cyclegan("monet2photo", "Monet paintings and landscape photos", "paintings", "photos"),
            _cyclegan("cezanne2photo", "Cezanne paintings and landscape photos", "paintings", "photos"),
            _cyclegan("ukiyoe2photo", "Ukiyo-e prints and landscape photos", "prints", "photos"),
            _cyclegan("vangogh2photo", "Van Gogh paintings and landscape photos", "paintings", "photos"),
            _cyclegan(
                "iphone2dslr_flower",
                "flower photos from iPhones and from DSLRs (shallow depth of field)",
                "iPhone photos",
                "DSLR photos",
            ),
            _cyclegan(
                "cyclegan/maps",
                "CycleGAN's maps: aerial photos and maps in unaligned folders (pix2pix's is 'maps')",
                "one domain",
                "the other",
                archive="maps",
            ),
            _cyclegan(
                "cyclegan/facades",
                "CycleGAN's facades: photos and label maps in unaligned folders (pix2pix's is 'facades')",
                "one domain",
                "the other",
                archive="facades",
            ),
        )
    },
}


#: Said with every unknown name: where the clashing names went, and Cityscapes.
NAMING_NOTE = (
    "pix2pix's datasets are A|B pairs; CycleGAN's are unaligned trainA/trainB folders, and its maps "
    "and facades are named 'cyclegan/maps' and 'cyclegan/facades' (plain 'maps' and 'facades' are "
    "pix2pix's). Cityscapes needs your own download: `i2i data fetch cityscapes` says how."
)


def known_datasets() -> str:
    """The names ``i2i data fetch`` knows, grouped by source, for help texts."""
    groups = {"pix2pix (aligned A|B pairs)": "pix2pix", "CycleGAN (unaligned folders)": "cyclegan"}
    parts = [
        f"{title}: {', '.join(n for n, i in DATASETS.items() if i.source == source)}"
        for title, source in groups.items()
    ]
    return "; ".join(parts) + ". " + NAMING_NOTE


# -- archives ----------------------------------------------------------------------------------------
def _check_name(name: str, archive: Path) -> None:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts:
        raise DataError(
            f"Refusing to extract {archive}: its member {name!r} would be written outside the "
            "destination folder (absolute path or '..'). The archive is damaged or malicious."
        )


def _refuse_link(name: str, archive: Path) -> None:
    raise DataError(
        f"Refusing to extract {archive}: its member {name!r} is a link, which a dataset "
        "archive does not need and which could point outside the destination folder."
    )


def _refuse_special(name: str, archive: Path) -> None:
    raise DataError(f"Refusing to extract {archive}: its member {name!r} is not a regular file or folder.")


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    _check_name(member.name, archive)
    if member.issym() or member.islnk():
        _refuse_link(member.name, archive)
    if not (member.isfile() or member.isdir()):
        _refuse_special(member.name, archive)


def _check_zip_member(member: zipfile.ZipInfo, archive: Path) -> None:
    _check_name(member.filename, archive)
    mode = member.external_attr >> 16  # Unix mode bits, when the archive was made on Unix
    if stat.S_ISLNK(mode):
        _refuse_link(member.filename, archive)
    if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        _refuse_special(member.filename, archive)


def is_zip(archive: str | Path) -> bool:
    """Whether ``archive`` starts like a zip file (else it is read as a tar, any compression)."""
    with open(archive, "rb") as fh:
        return fh.read(4) in (b"PK\x03\x04", b"PK\x05\x06")


def _extract_zip(archive: Path, dest: Path) -> list[str]:
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        for member in members:
            _check_zip_member(member, archive)
        dest.mkdir(parents=True, exist_ok=True)
        zf.extractall(dest, members=members)
    return [m.filename for m in members]


def _extract_tar(archive: Path, dest: Path) -> list[str]:
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        for member in members:
            _check_member(member, archive)
        dest.mkdir(parents=True, exist_ok=True)
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: a second line of defence
            tar.extractall(dest, members=members, filter="data")
        else:  # pragma: no cover - older Pythons
            tar.extractall(dest, members=members)
    return [m.name for m in members]


def safe_extract(archive: str | Path, dest: str | Path) -> list[str]:
    """Extract a zip or tar archive (any compression) into ``dest`` after checking every member.

    Members with absolute paths, ``..`` components, links or device files are rejected with a
    :class:`~i2i.errors.DataError` before anything is written. Returns the member names.
    """
    archive, dest = Path(archive), Path(dest)
    try:
        return _extract_zip(archive, dest) if is_zip(archive) else _extract_tar(archive, dest)
    except DataError:
        raise
    except (tarfile.TarError, zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
        raise DataError(
            f"Could not extract {archive}: {type(exc).__name__}: {exc}. The download may be "
            "incomplete; delete it and fetch again."
        ) from None


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


def _archive_folder(info: KnownDataset) -> str:
    """The folder the authors' archive holds the dataset in: its file name (``maps`` for cyclegan/maps)."""
    return PurePosixPath(info.url).name.split(".")[0]


def _find_dataset_folder(extracted: Path, info: KnownDataset) -> Path:
    """The folder inside an extracted archive that holds the splits (e.g. ``facades/``)."""
    named = extracted / _archive_folder(info)
    candidates = [named, extracted]
    candidates += [p for p in extracted.iterdir() if p.is_dir()]
    for c in candidates:
        if c.is_dir() and all((c / s).is_dir() for s in info.markers):
            return c
    return named if named.is_dir() else extracted


def _unknown(name: str) -> DataError:
    if name.strip().lower().rstrip("/").split("/")[-1] == "cityscapes":
        return DataError(CITYSCAPES_HELP)
    return DataError(f"Unknown dataset {name!r}. {suggest(name, DATASETS)} {NAMING_NOTE}")


def fetch_dataset(
    name: str,
    dest: str | Path | None = None,
    url: str | None = None,
    timeout: float = 15,
    *,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Download, safely extract and verify the published dataset ``name`` into ``dest``.

    ``name`` is one of :data:`DATASETS` (:func:`known_datasets` lists them); ``cityscapes`` raises
    a DataError saying how to prepare it by hand. ``dest`` defaults to ``datasets/<name>``. A
    ``dest`` that already holds a verified copy is returned without downloading unless ``force``
    is set. ``url`` overrides the download address (``file://`` URLs work, for a mirror on disk).
    Returns the dataset folder.
    """
    if name not in DATASETS:
        raise _unknown(name)
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
    stem = name.replace("/", "-")  # cyclegan/maps: one file name
    staging = Path(tempfile.mkdtemp(prefix=f".{stem}-download-", dir=dest.parent))
    fetched = False
    try:
        archive = staging / f"{stem}.download"  # tar.gz or zip: safe_extract reads the first bytes
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
