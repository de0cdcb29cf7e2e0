"""Applying a trained generator to a folder of new images."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from rich.console import Console
from rich.progress import Progress

from i2i.assembly.host import PluginHost
from i2i.data.imaging import resize, save_image, to_signed
from i2i.errors import DataError, I2IError
from i2i.inference.loading import load_trained
from i2i.runs.outputs import output_folder, unique_name
from i2i.sampling import generate

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


@dataclass
class TranslateReport:
    count: int = 0
    notes: list[str] = field(default_factory=list)


def size_multiple(generator: torch.nn.Module) -> int:
    """The side-length multiple G needs: declared by the plugin, else derived for U-Nets."""
    declared = getattr(generator, "size_multiple", None)
    if declared:
        return int(declared)
    num_downs = getattr(generator, "num_downs", None)
    return 2 ** int(num_downs) if num_downs else 4


def read_input(path: Path, channels: int, large: list[str] | None = None) -> torch.Tensor:
    """An image file as a (C, H, W) tensor with ``channels`` channels, as the datasets decode it:
    8-bit files stay ``uint8`` (0..255), 16-bit ones become float in [0, 1]. Images big enough for
    Pillow to warn about are noted in ``large`` instead (one line each, for one summary)."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            img = Image.open(path)
        with img:
            if large is not None and any(w.category is Image.DecompressionBombWarning for w in caught):
                w, h = img.size
                large.append(f"{path.name} is {w}x{h} ({w * h / 1e6:.0f} megapixels)")
            img.load()
            return decode_image(img, channels, str(path))
    except Image.DecompressionBombError as exc:
        raise DataError(
            f"{path} is too large to open safely ({exc}); it may be a decompression bomb. "
            "Shrink it first if it is a real image."
        ) from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path} is not a readable image: {exc}") from None


def input_half(x: torch.Tensor, data_direction: str, translates: str = "AtoB") -> torch.Tensor:
    """The half of an A|B pair file (C, H, 2W) that a generator translating ``translates`` takes:
    the recipe's ``data.direction`` says which half is A (BtoA: the right one)."""
    half = x.shape[2] // 2
    right = (data_direction == "BtoA") != (translates == "BtoA")
    return x[:, :, half:] if right else x[:, :, :half]


def decode_image(img: Image.Image, channels: int, what: str) -> torch.Tensor:
    """A loaded PIL image as :func:`read_input` returns a file's pixels (``what`` names it in errors)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(img, dtype=np.float32) / 65535.0
        array = array[..., None]
    else:
        img = img.convert("L" if channels == 1 else "RGB")
        array = np.array(img, dtype=np.uint8)
        array = array[..., None] if array.ndim == 2 else array
    tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)
    if tensor.shape[0] != channels:
        if tensor.shape[0] == 1:
            tensor = tensor.expand(channels, -1, -1)
        else:
            raise DataError(f"{what} has {tensor.shape[0]} channels; the generator takes {channels}.")
    return tensor


def load_input(path: Path, channels: int) -> torch.Tensor:
    """An image file as a (C, H, W) float tensor in [-1, 1] with ``channels`` channels."""
    return to_signed(read_input(path, channels))


def fit_to_network(
    x: torch.Tensor, multiple: int, size: int | None = None
) -> tuple[torch.Tensor, tuple[int, int], list[str]]:
    """Make ``x`` (``uint8`` 0..255 or float 0..1, as :func:`read_input` gives) fit the network:
    resize to ``size`` if asked, up to ``multiple`` if smaller, map to [-1, 1], then reflect-pad to
    a multiple. Resizing is the datasets' (:func:`i2i.data.imaging.resize`), so that ``--size`` at the
    training crop size feeds G what evaluation does. Returns the image, its size before padding,
    and notes."""
    _, h, w = x.shape
    notes = []
    nh, nw = (size, size) if size else (h, w)
    if min(nh, nw) < multiple:
        scale = multiple / min(nh, nw)
        nh, nw = round(nh * scale), round(nw * scale)
        notes.append(f"the network needs at least {multiple}px")
    if (nh, nw) != (h, w):
        x = resize(x, (nh, nw))
        notes.insert(0, f"resized from {w}x{h} to {nw}x{nh}")
    x = to_signed(x)
    ph, pw = (-nh) % multiple, (-nw) % multiple
    if ph or pw:
        pad_mode = "reflect" if ph < nh and pw < nw else "replicate"
        x = F.pad(x[None], (0, pw, 0, ph), mode=pad_mode)[0]
        notes.append(f"padded from {nw}x{nh} to {nw + pw}x{nh + ph} (multiple of {multiple})")
    return x, (nh, nw), notes


def translate_tensor(
    x: torch.Tensor, multiple: int, size: int | None, run: Callable[[torch.Tensor], torch.Tensor]
) -> tuple[torch.Tensor, list[str]]:
    """Outputs (N, C, H, W) in [-1, 1] at the size of ``x`` (as :func:`read_input` gives it).

    ``run`` maps the fitted input (C, H', W') to N outputs (N, C, H', W'); fitting and undoing it
    live here so that every front end (``i2i translate``, ``i2i serve``) gives the same pixels.
    """
    _, h, w = x.shape
    fitted, (rh, rw), notes = fit_to_network(x, multiple, size)
    y = run(fitted).float().cpu()[:, :, :rh, :rw]
    if (rh, rw) != (h, w):
        y = resize(y, (h, w))
    return y.clamp(-1, 1), notes


def output_names(files: list[Path]) -> list[str]:
    """``STEM.png`` per input, in order; a stem an earlier input had (``1.jpg``, then ``1.png``)
    gets ``STEM-2.png``, as ``i2i eval`` names its rows and gallery images (:func:`unique_name`)."""
    taken: set[str] = set()
    return [f"{unique_name(p.stem, taken)}.png" for p in files]


def check_not_overwriting(input_dir: Path, output_dir: Path, files: list[Path], names: list[str]) -> None:
    """Refuse an output folder whose outputs would replace input images (the same folder, or a
    link to it): translating would destroy the inputs."""
    if output_dir.exists() and output_dir.resolve() == input_dir.resolve():
        raise I2IError(
            f"The output folder {output_dir} is the input folder {input_dir}: the translated images "
            "would overwrite the inputs. Choose another output folder."
        )
    inputs = {(st.st_dev, st.st_ino): p for p in files if (st := p.stat())}  # hard links too
    for name in names:
        target = output_dir / name
        if not target.exists():
            continue
        st = target.stat()
        clash = inputs.get((st.st_dev, st.st_ino))
        if clash is not None:
            raise I2IError(
                f"Writing {target} would overwrite the input image {clash} (output folder "
                f"{output_dir}, input folder {input_dir}). Choose another output folder."
            )


@torch.no_grad()
def translate_folder(
    checkpoint: Path,
    input_dir: Path,
    output_dir: Path,
    host: PluginHost,
    *,
    aligned: bool = False,
    direction: str = "AtoB",
    size: int | None = None,
    mode: str = "eval",
    device: str | None = None,
    console: Console | None = None,
) -> TranslateReport:
    """Translate every image in ``input_dir``; outputs keep each input's size.

    ``size`` resizes inputs to size x size first (e.g. the training crop size); otherwise images
    are only padded or enlarged as far as the network requires.
    """
    if size is not None and size < 1:
        raise I2IError(f"--size {size}: must be a positive number of pixels.")
    trained = load_trained(checkpoint, host, device, direction)
    recipe, dev, G = trained.recipe, trained.device, trained.generator
    if mode == "train":
        G = copy.deepcopy(G).train()
    elif mode != "eval":
        raise I2IError(f"--mode {mode!r}: use eval or train.")
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not input_dir.is_dir():
        raise DataError(f"Input folder {input_dir} does not exist.")
    candidates = sorted(p for p in input_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    files = [p for p in candidates if p.is_file()]  # never open a pipe or a device: it may block
    if not files:
        raise DataError(f"{input_dir} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}).")
    names = output_names(files)
    check_not_overwriting(input_dir, output_dir, files, names)
    output_folder(output_dir, "The output folder")
    in_nc = trained.input_nc
    multiple = size_multiple(G)
    report = TranslateReport()
    large: list[str] = []
    skipped = [p.name for p in candidates if not p.is_file()]
    if skipped:
        report.notes.append(
            f"Skipped {len(skipped)} entries that are not regular files: {', '.join(skipped[:5])}."
        )
    crop = recipe["data"].get("crop_size")
    other_sizes: set[str] = set()
    resized = 0
    pair_like = squashed = 0
    direction = recipe["data"].get("direction", "AtoB")
    torch.manual_seed(recipe["experiment"]["seed"])
    with Progress(console=console or Console(stderr=True)) as bar:
        task = bar.add_task("translating", total=len(files))
        for path, out_name in zip(files, names, strict=True):
            x = read_input(path, in_nc, large)
            if aligned:
                x = input_half(x, direction, trained.direction)
            _, h, w = x.shape
            pair_like += not aligned and w == 2 * h
            squashed += bool(size) and h != w
            if size is None and crop and (h, w) != (crop, crop):
                other_sizes.add(f"{w}x{h}")
            ys, notes = translate_tensor(x, multiple, size, lambda fitted: generate(G, fitted[None].to(dev)))
            if size and len(notes) == 1 and notes[0].startswith("resized"):
                resized += 1  # what the user asked for: summarised once below
            elif notes:
                report.notes.append(f"{path.name}: {'; '.join(notes)}; the output is {w}x{h} like the input")
            save_image(ys[0], output_dir / out_name)
            report.count += 1
            bar.advance(task)
    if large:
        report.notes.append(
            f"{len(large)} input(s) are very large ({large[0]}{', ...' if len(large) > 1 else ''}): "
            "they take several GB of memory and long to translate; shrinking them first is faster."
        )
    if resized:
        report.notes.append(
            f"{resized} image(s) were resized to {size}x{size} for the network and back to their own size."
        )
    if pair_like == len(files):
        report.notes.append(
            f"Every input is exactly twice as wide as high, like the A|B pair files the model was "
            "trained on, and each was translated whole. If they are pairs, pass --aligned to "
            f"translate only the input half (direction {direction})."
        )
    if squashed:
        report.notes.append(
            f"{squashed} input(s) are not square, and --size {size} resized them to {size}x{size}, "
            "changing their aspect ratio for the network (outputs are resized back)."
        )
    if other_sizes and pair_like < len(files):
        report.notes.append(
            f"The model was trained on {crop}x{crop} crops and these inputs are "
            f"{', '.join(sorted(other_sizes))}: the network runs at their size, which changes the scale "
            f"of what it sees. Pass --size {crop} to resize inputs to the training size instead."
        )
    return report
