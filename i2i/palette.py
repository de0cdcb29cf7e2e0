"""Colour palettes: class names with one colour each, for colour-coded label maps.

A segmentation data set often stores its labels as a picture: one flat colour per class. A
:class:`Palette` names the classes and their colours so that such a picture becomes a class map
(each pixel snapped to the nearest palette colour, which also undoes JPEG noise), a one-hot target
for a network, or a picture again for viewing. Plugins register named palettes through
``i2i_register_palettes``; any labelled data set can also bring its own as a JSON file::

    {"classes": [{"name": "road", "colour": "#804080"}, {"name": "car", "colour": "#00008e"}]}

Images handed to :meth:`Palette.quantise` are RGB in [0, 1] (float) or 0..255 (``uint8``), the
forms the datasets and :func:`i2i.data.imaging.to_unit` give.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from i2i.errors import DataError

_HEX = re.compile(r"#?([0-9a-fA-F]{6})")
JSON_EXAMPLE = '{"classes": [{"name": "wall", "colour": "#0130fe"}, {"name": "window", "colour": "#017ffe"}]}'


@dataclass(frozen=True, eq=False)
class Palette:
    """Class names and one RGB colour per class (``colours``: uint8, shape (K, 3))."""

    name: str
    class_names: tuple[str, ...]
    colours: Tensor

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def nearest(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """Class index and RGB distance (0..255 units) of each pixel's nearest palette colour.

        ``image`` is (3, H, W) or (N, 3, H, W), float in [0, 1] or ``uint8``; returns two tensors of
        shape (H, W) or (N, H, W): int64 indices and float32 distances.
        """
        if image.dim() not in (3, 4) or image.shape[-3] != 3:
            raise DataError(
                f"The palette {self.name!r} maps RGB images (3, H, W) to classes, got shape "
                f"{tuple(image.shape)}."
            )
        x = image.float() if image.dtype == torch.uint8 else image.float() * 255.0
        colours = self.colours.to(device=x.device, dtype=torch.float32)
        pixels = x.flatten(-2)  # (..., 3, P)
        # |x - c|^2 = |x|^2 - 2 c.x + |c|^2: one matrix product for all classes instead of a pass per
        # class (few large operations are what stays fast when the CPU cores are busy). For 8-bit
        # pixels every term is an integer below 2**24, so float32 holds it exactly.
        cross = torch.einsum("kc,...cp->...kp", colours, pixels)
        partial = colours.square().sum(1).unsqueeze(-1) - 2.0 * cross  # (..., K, P)
        best, index = partial.min(dim=-2)  # ties go to the first class
        d2 = (best + pixels.square().sum(-2)).clamp_(min=0.0)
        shape = x.shape[:-3] + x.shape[-2:]
        return index.reshape(shape), d2.sqrt().reshape(shape)

    def quantise(self, image: Tensor) -> Tensor:
        """Class indices (int64, (H, W) or (N, H, W)) by nearest colour in squared RGB distance."""
        return self.nearest(image)[0]

    def colourise(self, indices: Tensor) -> Tensor:
        """The picture of a class map: float RGB in [0, 1], (3, H, W) for (H, W) indices."""
        indices = indices.long()
        if indices.numel() and (indices.min() < 0 or indices.max() >= self.num_classes):
            raise DataError(
                f"Class indices must lie in 0..{self.num_classes - 1} for the palette {self.name!r}, "
                f"got values from {int(indices.min())} to {int(indices.max())}."
            )
        rgb = self.colours.to(indices.device)[indices].float() / 255.0
        return rgb.movedim(-1, -3).contiguous()

    def one_hot(self, indices: Tensor) -> Tensor:
        """One channel per class, 1 where the pixel has that class, 0 elsewhere: float (K, H, W)."""
        return F.one_hot(indices.long(), self.num_classes).movedim(-1, -3).float().contiguous()

    def __repr__(self) -> str:
        return f"Palette({self.name!r}, {self.num_classes} classes)"


def make_palette(name: str, classes: list[tuple[str, str]] | tuple[tuple[str, str], ...]) -> Palette:
    """A :class:`Palette` from (class name, ``#rrggbb``) pairs."""
    rgb = [_parse_colour(colour, f"the colour of {cls!r} in the palette {name!r}") for cls, colour in classes]
    return Palette(name, tuple(cls for cls, _ in classes), torch.tensor(rgb, dtype=torch.uint8))


def _parse_colour(value: object, where: str) -> list[int]:
    if isinstance(value, str):
        match = _HEX.fullmatch(value.strip())
        if match:
            return list(bytes.fromhex(match.group(1)))
    elif (
        isinstance(value, (list, tuple))
        and len(value) == 3
        and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value)
    ):
        return [int(v) for v in value]
    raise DataError(
        f'{where} is {value!r}, which is not a colour: write it as "#rrggbb" (six hex digits, e.g. '
        '"#0130fe") or as [r, g, b] with integers 0..255.'
    )


def load_palette(path: Path) -> Palette:
    """Read a palette file: ``{"classes": [{"name": ..., "colour": "#rrggbb"}, ...]}``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DataError(f"Could not read the palette file {path}: {exc.strerror or exc}.") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(
            f"The palette file {path} is not valid JSON ({exc}). It must look like {JSON_EXAMPLE}."
        ) from None
    classes = data.get("classes") if isinstance(data, dict) else None
    if not isinstance(classes, list) or len(classes) < 2:
        raise DataError(
            f'The palette file {path} needs a "classes" list with at least two entries, each with a '
            f"name and a colour, e.g. {JSON_EXAMPLE}."
        )
    pairs: list[tuple[str, str]] = []
    rgb: list[list[int]] = []
    for i, entry in enumerate(classes):
        where = f"In the palette file {path}, class {i + 1}"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
            raise DataError(f'{where} ({entry!r}) needs a "name" (a non-empty string) and a "colour".')
        colour = entry.get("colour", entry.get("color"))
        if colour is None:
            raise DataError(f'{where} ({entry["name"]!r}) has no "colour" ("#rrggbb").')
        rgb.append(_parse_colour(colour, f"{where} ({entry['name']!r}): the colour"))
        pairs.append((entry["name"], str(colour)))
    names = [n for n, _ in pairs]
    for problem, values in (("class name", names), ("colour", [tuple(c) for c in rgb])):
        repeated = sorted({str(v) for v in values if values.count(v) > 1})
        if repeated:
            raise DataError(
                f"The palette file {path} uses the same {problem} more than once ({', '.join(repeated)}); "
                "every class needs its own name and colour."
            )
    return Palette(str(path), tuple(names), torch.tensor(rgb, dtype=torch.uint8))
