"""Unpaired data: the ``unaligned`` dataset and ``unpaired_aligned``, an unpaired view of A|B files.

Unpaired methods (CycleGAN, CUT) learn from two collections of images that do not correspond.
Each item still holds an ``"A"`` and a ``"B"``, but they come from different files and each gets its
own random crop and flip. Both datasets read, resize, crop and flip images with the aligned
dataset's helpers (:mod:`i2i_pix2pix.datasets`), so every option means what it means there.

Randomness comes only from torch's global RNG, called inside ``__getitem__`` in a fixed order
(the partner B, then A's jitter, then B's). The training loop seeds that RNG per
(seed, epoch, index) around each item, as it does for the aligned dataset's jitter, so the partner
drawn for an item is replayed exactly when a killed run resumes, whatever the number of workers.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from i2i_pix2pix.datasets import (
    AlignedDataset,
    Channels,
    Direction,
    MaxItems,
    PairTransform,
    Preprocess,
    Size,
    _check_direction,
    _check_sizes,
    _limit,
    _subfolders,
    _training_size,
    aligned,
    list_images,
    read_image,
    to_channels,
)
from torch.utils.data import Dataset

from i2i import LARGE_PIXELS, DataError, ItemProblem, ScanResult, hookimpl, image_header, recipe_check

HINT = (
    "Download an unpaired dataset with `i2i data fetch horse2zebra` (see `i2i data fetch --help` "
    "for the others), or point the recipe at your own folder with `--set data.root=PATH`."
)


def _unaligned_layout(root: object, split: str) -> str:
    return (
        f"two folders of images, {root}/{split}A (domain A) and {root}/{split}B (domain B), "
        "of any sizes; the files need not correspond"
    )


class UnalignedDataset(Dataset):
    """Images of domain A and of domain B from two folders of different sizes.

    Item ``i`` holds A-file ``i % |A|`` and, for training, a B-file drawn at random (or B-file
    ``i % |B|`` with ``serial``), so an epoch of ``max(|A|, |B|)`` items sees every file of the
    larger folder once. Other splits are deterministic: ``|A|`` items (each input translated once,
    so output names do not repeat), B-file ``i % |B|``, no random jitter.
    """

    #: A and B of one item do not correspond: models must not compare them pixel by pixel.
    paired = False

    def __init__(
        self,
        files_a: list[Path],
        files_b: list[Path],
        *,
        folders: tuple[Path, Path],
        split: str,
        serial: bool,
        preprocess: str,
        load_size: int,
        crop_size: int,
        flip: bool,
        input_nc: int,
        output_nc: int,
        skipped: list[tuple[Path, str]] | None = None,
    ) -> None:
        self.files_a, self.files_b = files_a, files_b
        self.folders = folders
        self.split = split
        self.serial = bool(serial)
        self.input_nc, self.output_nc = input_nc, output_nc
        #: Entries named like images that are not files (see list_images), for scan().
        self.skipped = list(skipped or [])
        self.transform = PairTransform(preprocess, load_size, crop_size, train=split == "train", flip=flip)

    @property
    def random_partner(self) -> bool:
        """Whether B is drawn at random (training without ``serial``) or taken in order."""
        return self.split == "train" and not self.serial

    def __len__(self) -> int:
        if self.split == "train":
            return max(len(self.files_a), len(self.files_b))
        return len(self.files_a)

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"item {index} of a dataset with {len(self)} items")
        path_a = self.files_a[index % len(self.files_a)]
        if self.random_partner:
            path_b = self.files_b[int(torch.randint(len(self.files_b), ()))]
        else:
            path_b = self.files_b[index % len(self.files_b)]
        a = to_channels(read_image(path_a), self.input_nc, path_a, "input_nc")
        b = to_channels(read_image(path_b), self.output_nc, path_b, "output_nc")
        (a,) = self.transform([a], path_a)
        (b,) = self.transform([b], path_b)
        return {"A": a, "B": b, "name": path_a.stem}

    # -- i2i data verify and data.skip_bad ------------------------------------------------------------
    def scan(self) -> ScanResult:
        """Header-check every file; item indices here number the files, A's first, then B's.

        A bad file is not tied to one item (a B-file serves random items), so the scan counts files
        and :meth:`without` takes the same numbering.
        """
        files = self.files_a + self.files_b
        result = ScanResult(items=len(files), skipped=list(self.skipped))
        large = []
        for index, path in enumerate(files):
            size, reason = image_header(path)
            if reason is not None:
                result.bad.append(ItemProblem(index, path, reason))
            elif size is not None:
                result.sizes[size] += 1
                if size[0] * size[1] > LARGE_PIXELS:
                    large.append((path, size))
        if large:
            path, (w, h) = large[0]
            result.warnings.append(
                f"{len(large)} image(s) of {self.split!r} are very large, e.g. {path} at {w}x{h}. "
                "They load, slowly; shrinking them once beforehand makes every epoch faster."
            )
        return result

    def without(self, indices: set[int]) -> UnalignedDataset:
        """A copy without the files at ``indices`` (numbered as in :meth:`scan`), for data.skip_bad."""
        na = len(self.files_a)
        clone = copy.copy(self)
        clone.files_a = [f for i, f in enumerate(self.files_a) if i not in indices]
        clone.files_b = [f for i, f in enumerate(self.files_b) if i + na not in indices]
        for files, folder in ((clone.files_a, self.folders[0]), (clone.files_b, self.folders[1])):
            if not files:
                raise DataError(
                    f"Every image in {folder} is bad, so data.skip_bad leaves that side of the "
                    "unaligned dataset empty. Replace the files or point data.root at the right folder."
                )
        return clone

    def __repr__(self) -> str:
        return (
            f"UnalignedDataset(split={self.split!r}, items={len(self)}, A={len(self.files_a)}, "
            f"B={len(self.files_b)}, serial={self.serial}, input_nc={self.input_nc}, "
            f"output_nc={self.output_nc})"
        )


class UnpairedAlignedView(Dataset):
    """The halves of aligned A|B files served as unpaired data for training; real pairs otherwise.

    For split ``"train"``, item ``i`` holds the A half of file ``i`` and the B half of another file
    drawn at random (never file ``i``), each with its own crop and flip: the model never sees a
    corresponding pair. Every other split is the aligned dataset itself, real pairs with one shared
    geometry, so ``i2i eval`` can still score a translation against its true target.
    """

    def __init__(self, base: AlignedDataset) -> None:
        self.base = base
        self.split = base.split
        self.direction = base.direction
        self.input_nc, self.output_nc = base.input_nc, base.output_nc
        self.skipped = base.skipped
        #: Only the evaluation splits keep their pairs.
        self.paired = base.split != "train"
        if not self.paired and len(base) < 2:
            folder = base.files[0].parent if base.files else "its folder"
            raise DataError(
                f"The unpaired_aligned dataset needs at least 2 files in {folder} for training, to "
                f"give each A half the B half of another file; it holds {len(base)}."
            )

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict:
        if self.paired:
            return self.base[index]
        if not 0 <= index < len(self):
            raise IndexError(f"item {index} of a dataset with {len(self)} items")
        other = int(torch.randint(len(self.base) - 1, ()))
        other += other >= index  # any file but this one
        a, _, path_a = self.base._pair(index)
        _, b, path_b = self.base._pair(other)
        (a,) = self.base.transform([a], path_a)
        (b,) = self.base.transform([b], path_b)
        return {"A": a, "B": self.base.finish_target(b), "name": path_a.stem}

    def scan(self) -> ScanResult:
        return self.base.scan()

    def without(self, indices: set[int]) -> UnpairedAlignedView:
        return UnpairedAlignedView(self.base.without(indices))

    def __repr__(self) -> str:
        kind = "pairs" if self.paired else "unpaired halves"
        return (
            f"UnpairedAlignedView(split={self.split!r}, items={len(self)}, {kind}, "
            f"input_nc={self.input_nc}, output_nc={self.output_nc})"
        )


# -- factories (what recipes name) -----------------------------------------------------------------
def _root(root: str, split: str) -> Path:
    layout = _unaligned_layout(root, split)
    if root is None or str(root).strip() == "":
        raise DataError(f"The unaligned dataset needs data.root: {layout}. {HINT}")
    path = Path(root).expanduser()
    if not path.is_dir():
        what = "is a file, not a folder" if path.exists() else "does not exist"
        raise DataError(f"The dataset root {path} {what}. The unaligned dataset expects {layout}. {HINT}")
    return path


@recipe_check(_check_sizes, image_size=_training_size)
def unaligned(
    split: str,
    root: str,
    direction: Direction = "AtoB",
    serial: bool = False,
    preprocess: Preprocess = "resize_and_crop",
    load_size: Size = 286,
    crop_size: Size = 256,
    flip: bool = True,
    input_nc: Channels = 3,
    output_nc: Channels = 3,
    max_items: MaxItems = None,
) -> UnalignedDataset:
    """Unpaired images in two folders, as CycleGAN: root/<split>A/* and root/<split>B/*.

    root: folder holding trainA/ and trainB/ (and testA/, testB/ for the "test" split); the two
    folders may hold different numbers of unrelated images.
    direction: "AtoB" feeds domain A to the network; "BtoA" swaps the folders.
    serial: pair A-file i with B-file i % |B| instead of a random B (CycleGAN's --serial_batches).
    preprocess, load_size, crop_size, flip, input_nc, output_nc: as for "aligned"; each side gets
    its own random crop and flip.
    max_items: use only the first N files (natural order) of each folder.

    Training draws the B of each item at random, from torch's RNG seeded per (seed, epoch, item), so
    a resumed run sees the same partners; an epoch has max(|A|, |B|) items. Other splits are
    deterministic: |A| items, each with B-file i % |B|, no random jitter.
    """
    base = _root(root, split)
    _check_direction(direction)
    names = (f"{split}A", f"{split}B") if direction == "AtoB" else (f"{split}B", f"{split}A")
    folders = (base / names[0], base / names[1])
    missing = [f for f in folders if not f.is_dir()]
    if missing:
        hint = HINT
        if (base / split).is_dir():
            hint = (
                f"{base} holds a {split}/ folder, the aligned A|B layout: use the dataset "
                "'unpaired_aligned' to train unpaired on it."
            )
        raise DataError(
            f"The unaligned dataset found no {' and no '.join(repr(f.name) for f in missing)} folder "
            f"in {base} (its subfolders: {_subfolders(base)}). It expects {_unaligned_layout(root, split)}. "
            f"{hint}"
        )
    skipped: list[tuple[Path, str]] = []
    files_a = _limit(list_images(folders[0], f"unaligned {folders[0].name!r}", skipped), max_items)
    files_b = _limit(list_images(folders[1], f"unaligned {folders[1].name!r}", skipped), max_items)
    return UnalignedDataset(
        files_a,
        files_b,
        folders=folders,
        split=split,
        serial=serial,
        preprocess=preprocess,
        load_size=load_size,
        crop_size=crop_size,
        flip=flip,
        input_nc=input_nc,
        output_nc=output_nc,
        skipped=skipped,
    )


@recipe_check(_check_sizes, image_size=_training_size)
def unpaired_aligned(
    split: str,
    root: str,
    direction: Direction = "AtoB",
    preprocess: Preprocess = "resize_and_crop",
    load_size: Size = 286,
    crop_size: Size = 256,
    flip: bool = True,
    input_nc: Channels = 3,
    output_nc: Channels = 3,
    max_items: MaxItems = None,
) -> UnpairedAlignedView:
    """Aligned A|B files (root/<split>/*.jpg) served unpaired for training, as real pairs for eval.

    Options as for "aligned". For the "train" split the A half of each file is given the B half of
    another file drawn at random (seeded per item, so resume replays it), each half cropped and
    flipped on its own: an unpaired method learns from the same data pix2pix gets, without the
    pairing. Every other split keeps its real pairs, so evaluation scores against the true target.
    """
    base = aligned(
        split=split,
        root=root,
        direction=direction,
        preprocess=preprocess,
        load_size=load_size,
        crop_size=crop_size,
        flip=flip,
        input_nc=input_nc,
        output_nc=output_nc,
        max_items=max_items,
    )
    return UnpairedAlignedView(base)


@hookimpl
def i2i_register_datasets(registry) -> None:
    for factory in (unaligned, unpaired_aligned):
        registry.add(factory.__name__, factory)


__all__ = ["UnalignedDataset", "UnpairedAlignedView", "unaligned", "unpaired_aligned"]
