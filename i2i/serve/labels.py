"""The drawing canvas's palette: which one fits the generator's inputs, and snapping strokes to it.

Brush strokes are anti-aliased, so a drawn label map holds colours between the classes; the network
only ever saw the class colours, so every pixel is snapped to its nearest palette colour first.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from i2i.assembly.host import PluginHost
from i2i.errors import DataError
from i2i.palette import JSON_EXAMPLE, Palette, load_palette

#: A registered palette fits a data set when this share of its input pixels lies within
#: ``MATCH_DISTANCE`` (RGB units) of a palette colour; JPEG label maps blur class edges, so not all do
#: (78% of the facades train label pixels are that close to a CMP colour, a photo has far fewer).
MATCH_SHARE = 0.6
MATCH_DISTANCE = 40.0


def palette_fit(palette: Palette, images: list[torch.Tensor]) -> float:
    """The share of the pixels of ``images`` (uint8 (3, H, W)) close to a colour of ``palette``."""
    close = total = 0
    for image in images:
        _, distance = palette.nearest(image)
        close += int((distance <= MATCH_DISTANCE).sum())
        total += distance.numel()
    return close / total if total else 0.0


def choose_palette(
    spec: str | None, host: PluginHost, examples: list[torch.Tensor]
) -> tuple[Palette | None, str]:
    """The palette named by ``spec`` (a registered name or a JSON file), else the registered one
    that best explains the ``examples`` (the training data's inputs). Returns it and a note."""
    if spec:
        palette = find_palette(spec, host)
        return palette, f"Palette {palette.name} ({palette.num_classes} classes), as asked."
    rgb = [x for x in examples if x.shape[0] == 3]
    if not rgb:
        return None, (
            "No palette: the training inputs could not be read to recognise one. Pass --palette NAME "
            "or --palette FILE.json to draw with class colours."
        )
    scored = []
    for component in host.registry("palette"):
        palette = component.build()
        scored.append((palette_fit(palette, rgb), palette))
    best = max(scored, key=lambda s: s[0], default=(0.0, None))
    if best[1] is None or best[0] < MATCH_SHARE:
        return None, (
            "No registered palette matches the training inputs (they look like pictures, not label "
            "maps): the canvas offers free colours. Pass --palette NAME or --palette FILE.json to "
            "choose one."
        )
    palette = best[1]
    return palette, (
        f"Palette {palette.name} ({palette.num_classes} classes): {best[0]:.0%} of the training "
        "inputs' pixels are its colours."
    )


def snap(image: np.ndarray, palette: Palette) -> np.ndarray:
    """An RGB uint8 image (H, W, 3) with every pixel replaced by its nearest palette colour."""
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    index, _ = palette.nearest(tensor)
    return palette.colours[index].numpy()


def blank(palette: Palette | None, height: int, width: int) -> np.ndarray:
    """A canvas filled with the palette's first class (its background), or white without one."""
    colour = palette.colours[0].numpy() if palette is not None else np.array([255, 255, 255], np.uint8)
    return np.broadcast_to(colour, (height, width, 3)).copy()


def hex_colour(rgb: torch.Tensor) -> str:
    return "#" + "".join(f"{int(v):02x}" for v in rgb)


def fill_rectangle(
    image: np.ndarray, colour: np.ndarray, left: float, top: float, right: float, bottom: float
) -> np.ndarray:
    """A copy of an RGB uint8 canvas (H, W, 3) with the rectangle between the two corners (pixel
    coordinates, either order, clipped to the canvas, both edges included) filled with ``colour``.

    Facades are mostly rectangles (windows, doors, balconies), which a brush draws badly.
    """
    h, w = image.shape[:2]
    x0, x1 = sorted((int(round(left)), int(round(right))))
    y0, y1 = sorted((int(round(top)), int(round(bottom))))
    x0, y0 = max(0, x0), max(0, y0)
    x1, y1 = min(w - 1, x1), min(h - 1, y1)
    out = np.array(image[..., :3], dtype=np.uint8, copy=True)
    if x0 <= x1 and y0 <= y1:
        out[y0 : y1 + 1, x0 : x1 + 1] = np.asarray(colour, dtype=np.uint8)[:3]
    return out


def find_palette(spec: str, host: PluginHost) -> Palette:
    """A palette registered under ``spec`` through ``i2i_register_palettes``, or read from the JSON
    file ``spec`` names."""
    spec = str(spec).strip()
    registry = host.registry("palette")
    if spec in registry:
        return registry.build(spec)
    path = Path(spec).expanduser()
    if path.is_file():
        return load_palette(path)
    known = ", ".join(registry.names()) or "none installed"
    raise DataError(
        f"Unknown palette {spec!r}: it is neither a registered palette ({known}) nor an existing "
        f"palette file. Give one of those names or the path of a JSON file like {JSON_EXAMPLE}."
    )
