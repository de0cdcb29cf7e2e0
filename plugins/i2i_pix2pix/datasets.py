"""The default pix2pix datasets: side-by-side ``aligned`` pairs, ``paired_folders`` and ``single``.

Images are decoded with Pillow (8-bit and 16-bit), tifffile (TIFF with any number of channels) or
NumPy (``.npy``), turned into float tensors in [0, 1], brought to the requested number of channels,
resized/cropped/flipped like the original pix2pix code (``data/base_dataset.py``) and finally mapped
to [-1, 1]. Random jitter uses only torch's RNG, through :mod:`torchvision.transforms.v2` called on
the input and the target together, so both always get the same crop and flip and a seeded
``DataLoader`` reproduces it.

With ``target_palette`` the target is a colour-coded label map instead of a picture: it is snapped
to class indices by a :mod:`~i2i_pix2pix.palettes` palette at its stored size, resized with nearest
neighbour as a ``tv_tensors.Mask`` (so no blend of two classes ever appears), cropped and flipped
with the input, and handed out as a one-hot (K, H, W) tensor of -1 and +1, one channel per class.
"""

from __future__ import annotations

import errno
import os
import re
import typing
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from i2i import (
    LARGE_PIXELS,
    CheckContext,
    DataError,
    Geometry,
    ItemProblem,
    Range,
    ScanResult,
    hookimpl,
    image_header,
    recipe_check,
    suggest,
)
from i2i_pix2pix.palettes import Palette, get_palette

Direction = Literal["AtoB", "BtoA"]
Preprocess = Literal["resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none"]
DIRECTIONS: tuple[str, ...] = typing.get_args(Direction)
PREPROCESSES: tuple[str, ...] = typing.get_args(Preprocess)
#: Image sides, channel counts and item limits a recipe may ask for.
Size = Annotated[int, Range(1, 32768)]
Channels = Annotated[int, Range(1, 4096)]
MaxItems = Annotated[int | None, Range(1)]
#: The preprocess modes that end in a square crop_size x crop_size image.
CROPPING = ("resize_and_crop", "crop", "scale_width_and_crop")

#: File endings read as images (case-insensitive); ``.npy`` holds an HxWxC or CxHxW array.
IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".ppm",
    ".pgm",
    ".tif",
    ".tiff",
    ".webp",
    ".npy",
)
HINT = (
    "Download the example data with `i2i data fetch facades`, or point the recipe at your own "
    "folder with `--set data.root=PATH`."
)


# -- reading one image -----------------------------------------------------------------------------
def _array_to_float(arr: np.ndarray, path: Path) -> Tensor:
    """An HxW, HxWxC or CxHxW array of any numeric dtype → float CxHxW tensor in [0, 1]."""
    if arr.ndim == 2:
        arr = arr[None]
    elif arr.ndim == 3:
        # Channels are the short axis: tifffile gives HxWxC for interleaved and CxHxW for planar data.
        if arr.shape[-1] <= arr.shape[0]:
            arr = np.moveaxis(arr, -1, 0)
    else:
        raise DataError(
            f"Cannot use {path}: it holds an array of shape {arr.shape}, but an image must be "
            "HxW, HxWxC or CxHxW."
        )
    if arr.dtype == np.bool_:
        return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
    if np.issubdtype(arr.dtype, np.integer):
        scale = float(np.iinfo(arr.dtype).max)
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
        return (t / scale).clamp_(0.0, 1.0)
    if np.issubdtype(arr.dtype, np.floating):  # taken to be in [0, 1] already
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
        return torch.nan_to_num_(t).clamp_(0.0, 1.0)
    raise DataError(f"Cannot use {path}: its pixels have the unsupported type {arr.dtype}.")


def _png_is_16bit_colour(img: Image.Image) -> bool:
    """Pillow reads 16-bit RGB(A) PNGs as 8-bit; detect them to decode them another way."""
    if img.format != "PNG" or img.mode not in ("RGB", "RGBA") or not img.tile:
        return False
    rawmode = img.tile[0][3]
    if isinstance(rawmode, tuple):
        rawmode = rawmode[0]
    return ";16" in str(rawmode)


def _decode_png16(path: Path) -> Tensor:
    from torchvision.io import ImageReadMode, decode_png, read_file

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's image decoding is deprecated but works
        t = decode_png(read_file(str(path)), ImageReadMode.UNCHANGED)
    return t.to(torch.float32) / 65535.0


def _read_with_pil(path: Path) -> Tensor:
    with warnings.catch_warnings():  # the start-of-run scan has said it in our words, once
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = Image.open(path)
    with img:
        mode = img.mode
        if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
            # 16-bit greyscale (Pillow opens it as I;16 or I): full range is 0..65535.
            arr = np.asarray(img).astype(np.float32) / 65535.0
            return torch.from_numpy(arr).clamp_(0.0, 1.0)[None]
        if mode == "F":
            return _array_to_float(np.asarray(img, dtype=np.float32), path)
        if _png_is_16bit_colour(img):
            return _decode_png16(path)
        if mode == "1":
            img = img.convert("L")
        elif mode in ("P", "PA"):
            has_alpha = mode == "PA" or "transparency" in img.info
            img = img.convert("RGBA" if has_alpha else "RGB")
        elif mode not in ("L", "LA", "RGB", "RGBA"):
            img = img.convert("RGB")  # CMYK, YCbCr, LAB, ...
        arr = np.array(img, dtype=np.uint8)
    t = torch.from_numpy(arr)
    return t[None] if t.ndim == 2 else t.permute(2, 0, 1)


def read_image(path: Path) -> Tensor:
    """Decode ``path`` into a CxHxW tensor with the file's own channel count.

    8-bit files (through Pillow) stay ``uint8`` in 0..255, which keeps resizing fast; everything
    else becomes ``float32`` in [0, 1]: 16-bit files (PNG, TIFF) are divided by 65535, other integer
    types by their maximum, and float TIFF/NPY data is taken to be in [0, 1] already. Errors become
    a :class:`~i2i.errors.DataError` naming the file.
    """
    suffix = path.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            arr = tifffile.imread(path)
            if arr is None or not isinstance(arr, np.ndarray) or arr.size == 0:
                raise ValueError("no image data found in the file")
            t = _array_to_float(arr, path)
        elif suffix == ".npy":
            t = _array_to_float(np.load(path, allow_pickle=False), path)
        else:
            t = _read_with_pil(path)
    except DataError:
        raise
    except Exception as exc:  # Pillow/tifffile/NumPy raise many different types on bad files
        raise DataError(
            f"Could not read the image {path}: {type(exc).__name__}: {exc}. The file is probably "
            "corrupt, truncated or not an image; replace or delete it."
        ) from None
    if t.shape[-1] == 0 or t.shape[-2] == 0:
        raise DataError(f"The image {path} is empty (size {tuple(t.shape[-2:])}).")
    return t


def to_channels(t: Tensor, channels: int, path: Path, what: str) -> Tensor:
    """Bring ``t`` to ``channels`` channels: greyscale ↔ RGB automatically, alpha dropped."""
    have = t.shape[0]
    if have == channels:
        return t
    if channels == 1 and have in (3, 4):  # ITU-R 601-2 luma, as Pillow's convert("L")
        from torchvision.transforms.v2 import functional as TF

        return TF.rgb_to_grayscale(t[:3], num_output_channels=1)
    if channels == 1 and have == 2:  # greyscale + alpha
        return t[:1]
    if channels == 3 and have in (1, 2):
        return t[:1].expand(3, -1, -1)
    if channels == 3 and have == 4:  # RGBA
        return t[:3]
    raise DataError(
        f"The image {path} has {have} channels, but {what} is {channels}. Greyscale (1) and RGB (3) "
        "are converted into each other automatically; for any other number of channels store "
        f"images with exactly {channels} channels (for example a multi-channel TIFF or .npy file)."
    )


# -- listing files ---------------------------------------------------------------------------------
def _natural_key(path: Path) -> tuple:
    parts = re.split(r"(\d+)", path.name)
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p.lower()) for p in parts), path.name


def is_image(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def not_a_file(path: Path) -> str | None:
    """Why an entry named like an image is not read as one; None for a file (or a link to one)."""
    try:
        info = path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "a symbolic-link loop"
        if path.is_symlink():
            return f"a link to {os.readlink(path)}, which does not exist"
        return f"cannot be read ({exc.strerror})"
    if path.is_dir():
        return "a folder"
    if not path.is_file():
        return f"not a regular file (mode {oct(info.st_mode)})"
    return None


def list_images(folder: Path, what: str, skipped: list[tuple[Path, str]] | None = None) -> list[Path]:
    """The image files directly inside ``folder``, in natural order (2.jpg before 10.jpg).

    Entries named like images that are not files (link loops, links to missing files, folders)
    are left out; each is appended to ``skipped`` with the reason, so that a scan can name them.
    """
    if not folder.is_dir():
        raise DataError(f"The {what} folder {folder} does not exist. {HINT}")
    files, odd = [], []
    for path in folder.iterdir():
        if path.name.startswith(".") or path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        reason = not_a_file(path)
        if reason is None:
            files.append(path)
        else:
            odd.append((path, reason))
    files.sort(key=_natural_key)
    odd.sort(key=lambda entry: _natural_key(entry[0]))
    if skipped is not None:
        skipped.extend(odd)
    if not files:
        looked = f"looked for files ending in {', '.join(IMAGE_EXTENSIONS)}; subfolders are not searched"
        if odd:
            names = "; ".join(f"{p.name} ({reason})" for p, reason in odd[:8])
            more = f"; ... and {len(odd) - 8} more" if len(odd) > 8 else ""
            found = f" The {len(odd)} entries named like images are not image files: {names}{more}."
        else:
            others = sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))
            found = (
                f" It contains: {', '.join(others[:8])}{', ...' if len(others) > 8 else ''}."
                if others
                else " It is empty."
            )
        raise DataError(f"The {what} folder {folder} is empty: it holds no images ({looked}).{found}")
    return files


def _subfolders(folder: Path) -> str:
    names = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    return ", ".join(names) if names else "none"


def _check_root(root: str | Path, dataset: str, layout: str) -> Path:
    if root is None or str(root).strip() == "":
        raise DataError(f"The {dataset} dataset needs data.root: {layout} {HINT}")
    path = Path(root).expanduser()
    if not path.is_dir():
        what = "is a file, not a folder" if path.exists() else "does not exist"
        raise DataError(f"The dataset root {path} {what}. The {dataset} dataset expects {layout} {HINT}")
    return path


def _limit(files: list, max_items: int | None) -> list:
    if max_items is None:
        return files
    if isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 1:
        raise DataError(f"max_items must be a positive integer or left out, got {max_items!r}.")
    return files[:max_items]


# -- transforms ------------------------------------------------------------------------------------
class PairTransform:
    """Resize, crop and flip one or more same-sized images exactly alike, then map them to [-1, 1].

    The deterministic resizing is done per image; the random crop and flip are one
    ``transforms.v2`` call on all images wrapped as ``tv_tensors.Image``, so they share parameters.
    Class maps passed as ``tv_tensors.Mask`` take the same geometry with nearest-neighbour
    resizing and come back as plain index tensors, not mapped to [-1, 1].
    """

    def __init__(self, preprocess: str, load_size: int, crop_size: int, train: bool, flip: bool) -> None:
        if preprocess not in PREPROCESSES:
            raise DataError(f"Unknown preprocess {preprocess!r}. {suggest(str(preprocess), PREPROCESSES)}")
        for name, value in (("load_size", load_size), ("crop_size", crop_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise DataError(f"{name} must be a positive integer, got {value!r}.")
        if preprocess in ("resize_and_crop", "scale_width_and_crop") and crop_size > load_size:
            raise DataError(
                f"crop_size ({crop_size}) is larger than load_size ({load_size}): with "
                f"preprocess={preprocess!r} images are first resized to load_size and then cropped "
                "to crop_size, so crop_size must not exceed load_size (pix2pix uses 286 and 256)."
            )
        self.preprocess = preprocess
        self.load_size = load_size
        self.crop_size = crop_size
        self.train = train
        self.flip = flip
        self.crops = preprocess in ("resize_and_crop", "crop", "scale_width_and_crop")
        from torchvision.transforms import v2  # imported here: torchvision is slow to import

        ops: list[v2.Transform] = []
        if self.crops and (train or preprocess != "resize_and_crop"):
            ops.append(v2.RandomCrop(crop_size) if train else v2.CenterCrop(crop_size))
        if train and flip:
            ops.append(v2.RandomHorizontalFlip(p=0.5))
        self.random = v2.Compose(ops) if ops else None

    def target_size(self, h: int, w: int) -> tuple[int, int]:
        """The (height, width) each image is resized to before cropping."""
        p, load, crop = self.preprocess, self.load_size, self.crop_size
        if p == "resize_and_crop":
            return (load, load) if self.train else (crop, crop)
        if p.startswith("scale_width"):
            nh = (load * h) // w
            if p == "scale_width_and_crop":
                nh = max(nh, crop)  # as pix2pix: never shorter than the crop
            return max(nh, 1), load
        if p == "none":  # pix2pix rounds to a multiple of 4 (the minimum the networks accept)
            return max(4, round(h / 4) * 4), max(4, round(w / 4) * 4)
        return h, w  # "crop"

    def check_size(self, h: int, w: int, path: Path) -> tuple[int, int]:
        """The resize target of an h x w image; a DataError if it is smaller than the crop."""
        th, tw = self.target_size(h, w)
        if self.crops and (th < self.crop_size or tw < self.crop_size):
            raise DataError(
                f"The image {path} is {tw}x{th} (width x height) after resizing, smaller than "
                f"crop_size {self.crop_size} for preprocess={self.preprocess!r}. Lower crop_size, "
                "or use preprocess='resize_and_crop'."
            )
        return th, tw

    def geometry(self, h: int, w: int) -> Geometry:
        """The resize, crop and flip :meth:`__call__` would apply to an h x w image.

        For the decoded cache (:mod:`i2i.speed.device_data`): the crop offsets and the flip are
        drawn from torch's RNG with the same calls, in the same order, as ``transforms.v2``'s
        RandomCrop and RandomHorizontalFlip draw them, so both paths jitter identically.
        """
        th, tw = self.target_size(h, w)
        crop = None
        if self.crops and (self.train or self.preprocess != "resize_and_crop"):
            c = self.crop_size
            if self.train:
                top = int(torch.randint(0, th - c + 1, size=())) if th > c else 0
                left = int(torch.randint(0, tw - c + 1, size=())) if tw > c else 0
            else:  # CenterCrop's rounding
                top, left = int(round((th - c) / 2.0)), int(round((tw - c) / 2.0))
            crop = (top, left, c, c)
        flip = bool(self.train and self.flip and bool(torch.rand(1) < 0.5))
        return Geometry((th, tw), crop, flip)

    def __call__(self, images: Sequence[Tensor], path: Path) -> list[Tensor]:
        h, w = images[0].shape[-2:]
        th, tw = self.check_size(h, w, path)
        from torchvision import tv_tensors
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms.v2 import functional as TF

        wrapped = []
        for img in images:
            if isinstance(img, tv_tensors.Mask):
                # Nearest neighbour at pixel centres: lines up with the antialiased picture and
                # never invents a class where two meet.
                if (th, tw) != (h, w):
                    img = TF.resize(img, [th, tw], interpolation=InterpolationMode.NEAREST_EXACT)
            else:
                img = tv_tensors.Image(img)
                if (th, tw) != (h, w):
                    img = TF.resize(img, [th, tw], interpolation=InterpolationMode.BICUBIC, antialias=True)
            wrapped.append(img)
        if self.random is not None:
            out = self.random(*wrapped)
            wrapped = list(out) if len(wrapped) > 1 else [out]
        return [
            x.as_subclass(Tensor) if isinstance(x, tv_tensors.Mask) else _to_unit_range(x.as_subclass(Tensor))
            for x in wrapped
        ]


def _to_unit_range(x: Tensor) -> Tensor:
    """uint8 0..255 or float 0..1 → contiguous float32 in [-1, 1]."""
    if x.dtype == torch.uint8:
        return x.to(torch.float32).mul_(2.0 / 255.0).sub_(1.0).contiguous()
    # Bicubic resizing of float images can overshoot [0, 1] a little.
    return x.to(torch.float32).clamp(0.0, 1.0).mul_(2.0).sub_(1.0).contiguous()


def _check_nc(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DataError(f"{name} must be a positive integer (1 greyscale, 3 RGB), got {value!r}.")
    return value


def _check_direction(direction: str) -> str:
    if direction not in DIRECTIONS:
        raise DataError(f"Unknown direction {direction!r}. {suggest(str(direction), DIRECTIONS)}")
    return direction


# -- datasets --------------------------------------------------------------------------------------
class _ImageDataset(Dataset):
    def __init__(
        self,
        *,
        split: str,
        preprocess: str,
        load_size: int,
        crop_size: int,
        flip: bool,
        input_nc: int,
        output_nc: int,
        target_palette: str = "",
        skipped: list[tuple[Path, str]] | None = None,
    ) -> None:
        self.split = split
        #: Entries of the split's folders named like images that are not files (see list_images).
        self.skipped = list(skipped or [])
        self.input_nc = _check_nc("input_nc", input_nc)
        self.output_nc = _check_nc("output_nc", output_nc)
        #: The palette that turns the targets into classes, or ``None`` for picture targets.
        self.palette: Palette | None = None
        if not isinstance(target_palette, str):
            raise DataError(
                f"target_palette must be a palette name or the path of a palette JSON file, got "
                f"{target_palette!r}."
            )
        if target_palette.strip():
            self.palette = get_palette(target_palette)
            classes = self.palette.num_classes
            if self.output_nc not in (3, classes):
                raise DataError(
                    f"output_nc is {self.output_nc}, but with target_palette = {target_palette!r} the "
                    f"target has one channel per class ({classes}); leave output_nc out (the label "
                    "images themselves are read as RGB)."
                )
            self.output_nc = classes
        self.transform = PairTransform(
            preprocess, load_size, crop_size, train=split == "train", flip=bool(flip)
        )

    def prepare_target(self, image: Tensor, path: Path) -> Tensor:
        """The target as read, ready for the joint geometry: the picture, or its class map.

        Classes are found at the stored resolution, before any resizing blends the colours.
        """
        if self.palette is None:
            return to_channels(image, self.output_nc, path, "output_nc")
        from torchvision import tv_tensors

        rgb = to_channels(image, 3, path, "the channel count of a target_palette label map")
        classes = self.palette.quantise(rgb)
        small = torch.uint8 if self.palette.num_classes <= 256 else torch.int64
        return tv_tensors.Mask(classes[None].to(small))

    def finish_target(self, target: Tensor) -> Tensor:
        """After the geometry: a class map becomes one-hot -1/+1 channels, keeping B in [-1, 1]."""
        if self.palette is None:
            return target
        return self.palette.one_hot(target[0]).mul_(2.0).sub_(1.0)

    def item_files(self) -> list[tuple[Path, ...]]:
        """The files each item is read from, in item order."""
        raise NotImplementedError

    def _keep(self, indices: set[int]) -> None:
        raise NotImplementedError

    def without(self, indices: set[int]) -> _ImageDataset:
        """A copy of this dataset with the items at ``indices`` left out (for data.skip_bad)."""
        import copy

        clone = copy.copy(self)
        clone._keep({i for i in range(len(self)) if i not in indices})
        return clone

    def check_sizes(self, files: tuple[Path, ...], sizes: list[tuple[int, int]]) -> str | None:
        """A reason the item's files cannot be used together (None: fine); see the subclasses."""
        return None

    def scan(self) -> ScanResult:
        """Header-check every file of the split (see :mod:`i2i.data.scan`)."""
        items = self.item_files()
        result = ScanResult(items=len(items), skipped=list(self.skipped))
        large = []
        for index, files in enumerate(items):
            sizes = []
            for path in files:
                size, reason = image_header(path)
                if reason is not None:
                    result.bad.append(ItemProblem(index, path, reason))
                elif size is not None:
                    sizes.append(size)
                    result.sizes[size] += 1
                    if size[0] * size[1] > LARGE_PIXELS:
                        large.append((path, size))
            if len(sizes) == len(files):
                reason = self.check_sizes(files, sizes)
                if reason is not None:
                    result.bad.append(ItemProblem(index, files[0], reason))
        if large:
            path, (w, h) = large[0]
            gb = w * h * 3 * 4 / 1e9
            result.warnings.append(
                f"{len(large)} image(s) of {self.split!r} are very large, e.g. {path} at {w}x{h} "
                f"({w * h / 1e6:.0f} megapixels, about {gb:.1f} GB while it is decoded and resized). "
                "They load, slowly; shrinking them once beforehand makes every epoch faster."
            )
        self._aspect_warning(result)
        return result

    def _aspect_warning(self, result: ScanResult) -> None:
        pass

    # -- the decoded cache (see i2i.speed.device_data) -----------------------------------------------
    def decoded_cache_problem(self) -> str | None:
        if self.palette is not None:
            return "class-map targets (target_palette) are not supported by the decoded cache"
        return None

    def decoded(self, index: int) -> dict:
        """A and B as read (before any resizing or jitter), for the decoded cache."""
        a, b, path = self._pair(index)
        self.transform.check_size(*a.shape[-2:], path)
        return {"A": a, "B": b, "name": path.stem}

    def geometry(self, height: int, width: int) -> Geometry:
        return self.transform.geometry(height, width)

    def __repr__(self) -> str:
        palette = f", target_palette={self.palette.name!r}" if self.palette is not None else ""
        return (
            f"{type(self).__name__}(split={self.split!r}, items={len(self)}, "
            f"input_nc={self.input_nc}, output_nc={self.output_nc}{palette})"
        )


class AlignedDataset(_ImageDataset):
    """Each file holds A and B side by side; the left half is A, the right half B."""

    def __init__(self, files: list[Path], direction: str, **options) -> None:
        super().__init__(**options)
        self.files = files
        self.direction = _check_direction(direction)

    def __len__(self) -> int:
        return len(self.files)

    def item_files(self) -> list[tuple[Path, ...]]:
        return [(f,) for f in self.files]

    def _keep(self, indices: set[int]) -> None:
        self.files = [f for i, f in enumerate(self.files) if i in indices]

    def check_sizes(self, files: tuple[Path, ...], sizes: list[tuple[int, int]]) -> str | None:
        w, h = sizes[0]
        if w % 2:
            return f"is {w} pixels wide, an odd number, so it cannot be split into A|B halves"
        return None

    def _aspect_warning(self, result: ScanResult) -> None:
        odd = [(w, h) for (w, h) in result.sizes if w != 2 * h]
        if odd:
            n = sum(result.sizes[s] for s in odd)
            w, h = odd[0]
            result.warnings.append(
                f"{n} of {result.items} aligned images of {self.split!r} are not twice as wide as "
                f"high (e.g. {w}x{h}): each file should hold A and B side by side, same size. "
                "If they are single images, use the paired_folders or single dataset instead."
            )

    def __getitem__(self, index: int) -> dict:
        a, b, path = self._pair(index)
        a, b = self.transform([a, b], path)
        return {"A": a, "B": self.finish_target(b), "name": path.stem}

    def _pair(self, index: int) -> tuple[Tensor, Tensor, Path]:
        path = self.files[index]
        ab = read_image(path)
        w = ab.shape[-1]
        if w % 2:
            raise DataError(
                f"The aligned image {path} is {w} pixels wide, an odd number, so it cannot be split "
                "into two equal halves (A on the left, B on the right). Check that it really holds "
                "a pair, or use the paired_folders dataset for separate A and B files."
            )
        left, right = ab[..., : w // 2], ab[..., w // 2 :]
        src, dst = (left, right) if self.direction == "AtoB" else (right, left)
        a = to_channels(src, self.input_nc, path, "input_nc")
        return a, self.prepare_target(dst, path), path


class PairedFoldersDataset(_ImageDataset):
    """A and B in two folders, paired by file stem."""

    def __init__(self, pairs: list[tuple[Path, Path]], direction: str, **options) -> None:
        super().__init__(**options)
        self.pairs = pairs
        self.direction = _check_direction(direction)

    def __len__(self) -> int:
        return len(self.pairs)

    def item_files(self) -> list[tuple[Path, ...]]:
        return list(self.pairs)

    def _keep(self, indices: set[int]) -> None:
        self.pairs = [p for i, p in enumerate(self.pairs) if i in indices]

    def check_sizes(self, files: tuple[Path, ...], sizes: list[tuple[int, int]]) -> str | None:
        if sizes[0] != sizes[1]:
            (wa, ha), (wb, hb) = sizes
            return f"is {wa}x{ha} but its partner {files[1]} is {wb}x{hb}; a pair must be pixel-aligned"
        return None

    def __getitem__(self, index: int) -> dict:
        a, b, path_a = self._pair(index)
        a, b = self.transform([a, b], path_a)
        return {"A": a, "B": self.finish_target(b), "name": path_a.stem}

    def _pair(self, index: int) -> tuple[Tensor, Tensor, Path]:
        path_a, path_b = self.pairs[index]
        if self.direction == "BtoA":
            path_a, path_b = path_b, path_a
        a = to_channels(read_image(path_a), self.input_nc, path_a, "input_nc")
        b = self.prepare_target(read_image(path_b), path_b)
        if a.shape[-2:] != b.shape[-2:]:
            raise DataError(
                f"The pair {path_a.stem!r} is not pixel-aligned: {path_a} is "
                f"{a.shape[-1]}x{a.shape[-2]} but {path_b} is {b.shape[-1]}x{b.shape[-2]} "
                "(width x height). Both images of a pair must have the same size."
            )
        return a, b, path_a


class SingleDataset(_ImageDataset):
    """Inputs only, for inference: items have ``"A"`` and ``"name"`` but no ``"B"``."""

    def __init__(self, files: list[Path], **options) -> None:
        super().__init__(**options)
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def item_files(self) -> list[tuple[Path, ...]]:
        return [(f,) for f in self.files]

    def _keep(self, indices: set[int]) -> None:
        self.files = [f for i, f in enumerate(self.files) if i in indices]

    def __getitem__(self, index: int) -> dict:
        path = self.files[index]
        a = to_channels(read_image(path), self.input_nc, path, "input_nc")
        (a,) = self.transform([a], path)
        return {"A": a, "name": path.stem}


# -- factories (what recipes name) -----------------------------------------------------------------
def _check_sizes(params: dict, context: CheckContext) -> list[str]:
    """One rule for every preprocess mode, so a recipe never depends on which mode ignores what."""
    load, crop, mode = params["load_size"], params["crop_size"], params["preprocess"]
    if crop <= load:
        return []
    why = (
        f"preprocess = {mode!r} does not resize, but set load_size to at least {crop} anyway"
        if mode in ("crop", "none")
        else "images are resized to load_size before the crop_size crop is taken"
    )
    return [f"crop_size = {crop}: larger than load_size ({load}), allowed range [1, {load}]; {why}."]


def _training_size(params: dict) -> int | None:
    """The side of the square images the networks train on, when the mode crops."""
    return params["crop_size"] if params["preprocess"] in CROPPING else None


def _check_single(params: dict, context: CheckContext) -> list[str]:
    return [
        "name = 'single': this dataset holds inputs only, without targets, so it cannot train a model; "
        "it is for inference ('i2i translate'). Train on 'aligned' or 'paired_folders' pairs."
    ]


@recipe_check(_check_sizes, image_size=_training_size)
def aligned(
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
    target_palette: str = "",
) -> AlignedDataset:
    """Pairs stored side by side in one image (A left, B right), as in pix2pix: root/<split>/*.jpg.

    root: folder with one subfolder per split (train, test, ...), each holding the pair images.
    direction: "AtoB" feeds the left half to the network and learns the right one; "BtoA" swaps them.
    preprocess: "resize_and_crop" resizes to load_size x load_size (bicubic) then crops crop_size;
    "crop" only crops; "scale_width" resizes the width to load_size keeping the aspect ratio;
    "scale_width_and_crop" does that (never below crop_size in height) then crops; "none" only
    rounds the size to a multiple of 4.
    flip: random horizontal flips when training.
    input_nc, output_nc: channels of the network input and target (1 greyscale, 3 RGB, other
    numbers need files with exactly that many channels, e.g. TIFF).
    max_items: use only the first N files (in natural order), for quick experiments.
    target_palette: make the target a class map, for training a segmenter: a built-in palette
    ("cmp_facades") or the path of a JSON file {"classes": [{"name": ..., "colour": "#rrggbb"}, ...]}.
    The target half (B after direction) is snapped pixel by pixel to the nearest palette colour at
    its stored size, then resized with nearest neighbour and cropped/flipped with the input; "B"
    becomes one-hot, K channels of -1/+1 (K classes), and output_nc is K. Empty: off.

    Random jitter (random crop, flip) is applied only to the "train" split. Every other split is
    deterministic: "resize_and_crop" resizes straight to crop_size, the crop variants take the
    centre crop, and nothing is flipped. Input and target always get the same crop and flip.
    """
    layout = f"one image per pair, photo A and B side by side, in {root}/{split}/ (e.g. 1.jpg)."
    base = _check_root(root, "aligned", layout)
    folder = base / split
    if not folder.is_dir():
        raise DataError(
            f"The dataset root {base} has no {split!r} folder (its subfolders: "
            f"{_subfolders(base)}). The aligned dataset expects {layout} {HINT}"
        )
    skipped: list[tuple[Path, str]] = []
    files = _limit(list_images(folder, f"aligned {split!r}", skipped), max_items)
    return AlignedDataset(
        files,
        direction,
        skipped=skipped,
        split=split,
        preprocess=preprocess,
        load_size=load_size,
        crop_size=crop_size,
        flip=flip,
        input_nc=input_nc,
        output_nc=output_nc,
        target_palette=target_palette,
    )


def _stem_map(files: list[Path], folder: Path) -> dict[str, Path]:
    stems: dict[str, Path] = {}
    for f in files:
        if f.stem in stems:
            raise DataError(
                f"The folder {folder} holds two images with the stem {f.stem!r} "
                f"({stems[f.stem].name} and {f.name}), so they cannot be paired by name. "
                "Keep one of them."
            )
        stems[f.stem] = f
    return stems


def _few(names: list[str], n: int = 5) -> str:
    shown = ", ".join(names[:n])
    return f"{shown}, ... ({len(names)} in all)" if len(names) > n else shown


@recipe_check(_check_sizes, image_size=_training_size)
def paired_folders(
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
    target_palette: str = "",
) -> PairedFoldersDataset:
    """Pairs in two folders matched by file name: root/<split>/A/x.png with root/<split>/B/x.png.

    When root has no <split> folder, root/A and root/B are used for every split. The two images of
    a pair may differ in format (x.jpg with x.png) but must have the same size. Every image must
    have a partner. Options as for "aligned": direction "AtoB" feeds A to the network, "BtoA" B.
    target_palette (a palette name such as "cmp_facades", or a JSON palette file) turns the target
    (B after direction) into a one-hot class map with K channels of -1/+1, as for "aligned".

    Random jitter (random crop, flip) is applied only to the "train" split. Every other split is
    deterministic: "resize_and_crop" resizes straight to crop_size, the crop variants take the
    centre crop, and nothing is flipped. Input and target always get the same crop and flip.
    """
    layout = f"the folders {root}/{split}/A and {root}/{split}/B (or {root}/A and {root}/B)."
    base = _check_root(root, "paired_folders", layout)
    folder = base / split if (base / split).is_dir() else base
    dir_a, dir_b = folder / "A", folder / "B"
    if not (dir_a.is_dir() and dir_b.is_dir()):
        missing = " and ".join(str(d) for d in (dir_a, dir_b) if not d.is_dir())
        raise DataError(
            f"{missing} not found (subfolders of {folder}: {_subfolders(folder)}). The "
            f"paired_folders dataset expects {layout} {HINT}"
        )
    skipped: list[tuple[Path, str]] = []
    map_a = _stem_map(list_images(dir_a, "A", skipped), dir_a)
    map_b = _stem_map(list_images(dir_b, "B", skipped), dir_b)
    only_a = sorted(set(map_a) - set(map_b))
    only_b = sorted(set(map_b) - set(map_a))
    if only_a or only_b:
        parts = []
        if only_a:
            parts.append(f"only in {dir_a}: {_few(only_a)}")
        if only_b:
            parts.append(f"only in {dir_b}: {_few(only_b)}")
        raise DataError(
            "The A and B folders do not pair up: every image needs a partner with the same file "
            f"name stem in the other folder; {'; '.join(parts)}."
        )
    stems = sorted(map_a, key=lambda s: _natural_key(Path(s)))
    pairs = _limit([(map_a[s], map_b[s]) for s in stems], max_items)
    return PairedFoldersDataset(
        pairs,
        direction,
        skipped=skipped,
        split=split,
        preprocess=preprocess,
        load_size=load_size,
        crop_size=crop_size,
        flip=flip,
        input_nc=input_nc,
        output_nc=output_nc,
        target_palette=target_palette,
    )


@recipe_check(_check_single, image_size=_training_size)
def single(
    split: str,
    root: str,
    preprocess: Preprocess = "resize_and_crop",
    load_size: Size = 286,
    crop_size: Size = 256,
    input_nc: Channels = 3,
    output_nc: Channels = 3,
    max_items: MaxItems = None,
) -> SingleDataset:
    """Input images only, for inference: root/<split>/*, or root/* when there is no such folder.

    Items hold "A" and "name" but no "B". output_nc only records the channels the model produces.
    The "train" split gets a random crop (no flips); other splits are deterministic:
    "resize_and_crop" resizes straight to crop_size and the crop variants take the centre crop.
    Use preprocess="none" to keep the full image size (rounded to a multiple of 4).
    """
    layout = f"input images in {root}/{split}/ or directly in {root}/."
    base = _check_root(root, "single", layout)
    folder = base / split if (base / split).is_dir() else base
    skipped: list[tuple[Path, str]] = []
    files = _limit(list_images(folder, "input", skipped), max_items)
    return SingleDataset(
        files,
        skipped=skipped,
        split=split,
        preprocess=preprocess,
        load_size=load_size,
        crop_size=crop_size,
        flip=False,
        input_nc=input_nc,
        output_nc=output_nc,
    )


@hookimpl
def i2i_register_datasets(registry):
    for factory in (aligned, paired_folders, single):
        registry.add(factory.__name__, factory)
