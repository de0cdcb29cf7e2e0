"""Turning network tensors into pictures: single PNGs and labelled input|output|target grids.

Networks work in [-1, 1]; metrics and files want [0, 1] or 8-bit pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from torch import Tensor

#: Pixels between grid cells and around the border.
GRID_PAD = 2
#: Height of the label header of :func:`save_triplet_grid`.
GRID_HEADER = 16
_BACKGROUND = (255, 255, 255)
_TEXT = (0, 0, 0)


def to_unit(t: Tensor) -> Tensor:
    """Map a tensor from [-1, 1] to [0, 1], clamping anything outside."""
    return ((t.detach().float() + 1.0) / 2.0).clamp(0.0, 1.0)


def resize(image: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize (C, H, W) or (N, C, H, W) to ``size`` (height, width): bicubic with antialiasing.

    The datasets resize this way (``torchvision.transforms.v2``); inference resizes through here so
    that a network sees the same pixels in ``i2i translate`` as in training and evaluation. 8-bit
    images stay ``uint8`` (rounded, as the datasets keep them), floats stay floats.
    """
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    return TF.resize(image, list(size), interpolation=InterpolationMode.BICUBIC, antialias=True)


def to_signed(image: Tensor) -> Tensor:
    """uint8 0..255 or float 0..1 → contiguous float32 in [-1, 1], as the datasets map pixels.

    Bicubic resizing of float images can overshoot [0, 1] a little, hence the clamp.
    """
    if image.dtype == torch.uint8:
        return image.to(torch.float32).mul_(2.0 / 255.0).sub_(1.0).contiguous()
    return image.to(torch.float32).clamp(0.0, 1.0).mul_(2.0).sub_(1.0).contiguous()


def to_pixels(t: Tensor) -> Tensor:
    """[-1, 1] → 8-bit pixels (uint8, any shape), rounded as :func:`to_pil` rounds.

    Converting a whole batch at once spares evaluation a handful of tiny tensor operations per image.
    """
    return (to_unit(t.cpu()) * 255.0).round().to(torch.uint8)


def to_pil(t: Tensor) -> Image.Image:
    """One image (C, H, W) or (H, W) in [-1, 1], or uint8 pixels from :func:`to_pixels` → PIL image.

    1 channel → "L"; 2 channels → the first one as "L"; 3 → "RGB"; 4 or more → the first three as
    "RGB". A leading batch dimension of size 1 is accepted.
    """
    if t.dim() == 4 and t.shape[0] == 1:
        t = t[0]
    if t.dim() == 2:
        t = t.unsqueeze(0)
    if t.dim() != 3:
        raise ValueError(f"to_pil expects one image (C, H, W), got shape {tuple(t.shape)}")
    channels = t.shape[0]
    if channels == 0:
        raise ValueError("to_pil got an image with no channels")
    t = t[:1] if channels < 3 else t[:3]
    pixels = t.cpu() if t.dtype == torch.uint8 else to_pixels(t)
    if pixels.shape[0] == 1:
        return Image.fromarray(pixels[0].numpy())
    return Image.fromarray(pixels.permute(1, 2, 0).contiguous().numpy())


def save_image(t: Tensor, path: str | Path) -> Path:
    """Save one image (C, H, W) in [-1, 1] as a PNG, creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    to_pil(t).save(path, format="PNG")
    return path


def make_grid_image(
    rows: Sequence[Sequence[Tensor]], labels: Sequence[str] | None = ("input", "output", "target")
) -> Image.Image:
    """The picture :func:`save_triplet_grid` writes, as a PIL RGB image."""
    if not rows:
        raise ValueError("a grid needs at least one row of images")
    pictures = [[to_pil(t).convert("RGB") for t in row] for row in rows]
    columns = max(len(row) for row in pictures)
    if columns == 0:
        raise ValueError("a grid needs at least one image")
    cell_w = max(p.width for row in pictures for p in row)
    cell_h = max(p.height for row in pictures for p in row)
    header = GRID_HEADER if labels else 0
    width = columns * cell_w + (columns + 1) * GRID_PAD
    height = header + len(pictures) * cell_h + (len(pictures) + 1) * GRID_PAD
    grid = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(grid)
    if labels:
        for col, label in enumerate(list(labels)[:columns]):
            x0 = GRID_PAD + col * (cell_w + GRID_PAD)
            left, top, right, bottom = draw.textbbox((0, 0), label)
            x = x0 + max(0, (cell_w - (right - left)) // 2)
            y = max(0, (header - (bottom - top)) // 2 - top)
            draw.text((x, y), label, fill=_TEXT)
    for r, row in enumerate(pictures):
        y = header + GRID_PAD + r * (cell_h + GRID_PAD)
        for c, picture in enumerate(row):
            x = GRID_PAD + c * (cell_w + GRID_PAD)
            grid.paste(picture, (x, y))
    return grid


def save_triplet_grid(
    rows: Sequence[Sequence[Tensor]],
    path: str | Path,
    labels: Sequence[str] | None = ("input", "output", "target"),
    compress_level: int = 6,
) -> Path:
    """Save rows of (input, output[, target, ...]) images in [-1, 1] (or uint8 pixels) as one PNG grid.

    Images may have different channel counts and sizes (each sits in a cell as large as the largest
    image). ``labels`` head the columns; ``None`` or ``()`` leaves the header out, e.g. for a
    one-row strip. ``compress_level`` is zlib's (0-9): evaluation writes one strip per image and
    uses 1: about three times faster to write than 6, for files 3-10% larger.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    make_grid_image(rows, labels).save(path, format="PNG", compress_level=compress_level)
    return path
