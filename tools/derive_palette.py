"""Recover the flat class colours of JPEG-compressed label maps, for a segmentation palette.

The pix2pix facades label maps are drawn with 12 flat colours, but they were resized and stored as
JPEG (chroma at half resolution), so every pixel is a little off and a band of two or three pixels
along each edge blends neighbouring colours; thin parts (sills, narrow blinds) are blended all
through. Clustering all pixels therefore finds blends as "colours". This finds the flat colours:

1. keep only the pixels of flat regions: those whose 5x5 neighbourhood varies by at most
   ``--flat`` levels in every channel (about half of the pixels);
2. count them in a coarse RGB histogram (8 levels per bin, 32**3 bins);
3. seed K centres greedily at the fullest bins that lie far enough from the centres already taken;
4. refine them with weighted k-means on the bins (each bin at the mean colour of its pixels);
5. move each centre to the mean of the pixels close to it (a few mean-shift steps), so the few
   blends left, which pull a plain mean off, no longer count;
6. assign every pixel to its nearest centre and report each centre's share of the pixels and how
   many of its pixels lie close to it;
7. describe where each colour sits (how many images hold it, its mean height in the image, the
   median height/width of its blobs), which tells the classes apart: doors are tall blocks at the
   bottom, shops wide ones, sills and moldings flat strips, pillars and blinds tall narrow ones.

Usage (from the repository root):

    python tools/derive_palette.py ../shared/datasets/facades/train [--classes 12] [--half right]

The centres come out sorted along the hue path blue -> cyan -> green -> yellow -> red -> dark red
(the order of the jet colour map, which is how the facades maps number their classes).
"""

from __future__ import annotations

import argparse
import colorsys
from pathlib import Path

import numpy as np
from PIL import Image

#: Drawing colours quoted for these maps, to compare the derived centres with.
REFERENCE = {
    "#0006d9": "background",
    "#0d3dfb": "facade/wall",
    "#a50000": "quoted as door",
    "#0075ff": "window",
}


def local_range(image: np.ndarray, size: int = 5) -> np.ndarray:
    """Per pixel, the largest max-minus-min over the channels in its size x size neighbourhood."""
    h, w = image.shape[:2]
    pad = size // 2
    padded = np.pad(image.astype(np.int16), ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    hi = np.full(image.shape, -1, np.int16)
    lo = np.full(image.shape, 256, np.int16)
    for dy in range(size):
        for dx in range(size):
            window = padded[dy : dy + h, dx : dx + w]
            np.maximum(hi, window, out=hi)
            np.minimum(lo, window, out=lo)
    return (hi - lo).max(-1)


def label_maps(folder: Path, half: str) -> list[np.ndarray]:
    """One half (HxWx3 uint8) of every image in ``folder``."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        raise SystemExit(f"no images in {folder}")
    maps = []
    for path in files:
        with Image.open(path) as img:
            arr = np.asarray(img.convert("RGB"))
        w = arr.shape[1] // 2
        maps.append(arr[:, w:] if half == "right" else arr[:, :w])
    return maps


def label_pixels(maps: list[np.ndarray], flat: int) -> tuple[np.ndarray, np.ndarray]:
    """All pixels of the maps, and those of their flat regions, as (N, 3) uint8 arrays."""
    every, flats = [], []
    for part in maps:
        every.append(part.reshape(-1, 3))
        flats.append(part[local_range(part) <= flat])
    pixels, flat_pixels = np.concatenate(every), np.concatenate(flats)
    print(
        f"{len(maps)} images, {len(pixels):,} label pixels, {len(flat_pixels) / len(pixels):.1%} of "
        f"them in flat regions (5x5 range <= {flat})"
    )
    return pixels, flat_pixels


def histogram(pixels: np.ndarray, step: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Occupied coarse bins: (mean colour of each bin as float (B, 3), pixel count (B,))."""
    q = pixels.astype(np.int64) // step
    levels = 256 // step
    index = (q[:, 0] * levels + q[:, 1]) * levels + q[:, 2]
    counts = np.bincount(index, minlength=levels**3)
    sums = np.stack([np.bincount(index, weights=pixels[:, c], minlength=levels**3) for c in range(3)], 1)
    used = counts > 0
    return sums[used] / counts[used, None], counts[used].astype(np.float64)


def seed_centres(colours: np.ndarray, counts: np.ndarray, k: int, min_dist: float) -> np.ndarray:
    """The fullest bins, skipping any closer than ``min_dist`` to one already chosen."""
    chosen: list[np.ndarray] = []
    for i in np.argsort(-counts):
        if all(np.sum((colours[i] - c) ** 2) >= min_dist**2 for c in chosen):
            chosen.append(colours[i])
            if len(chosen) == k:
                break
    if len(chosen) < k:
        raise SystemExit(f"found only {len(chosen)} well-separated colours; lower --min-dist")
    return np.array(chosen)


def nearest(points: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of and squared distance to the nearest centre, for each point (in chunks, to save memory)."""
    idx = np.empty(len(points), dtype=np.int64)
    best = np.empty(len(points), dtype=np.float32)
    c = centres.astype(np.float32)
    for start in range(0, len(points), 1 << 20):
        part = points[start : start + (1 << 20)].astype(np.float32)
        d2 = ((part[:, None, :] - c[None]) ** 2).sum(-1)
        idx[start : start + len(part)] = d2.argmin(1)
        best[start : start + len(part)] = d2.min(1)
    return idx, best


def kmeans(colours: np.ndarray, counts: np.ndarray, centres: np.ndarray, iters: int = 30) -> np.ndarray:
    """Weighted Lloyd iterations on the histogram bins."""
    for _ in range(iters):
        idx, _ = nearest(colours, centres)
        new = centres.copy()
        for j in range(len(centres)):
            w = counts[idx == j]
            if w.sum() > 0:
                new[j] = (colours[idx == j] * w[:, None]).sum(0) / w.sum()
        if np.allclose(new, centres, atol=1e-3):
            break
        centres = new
    return centres


def mode_shift(colours: np.ndarray, counts: np.ndarray, centres: np.ndarray, radius: float) -> np.ndarray:
    """Move each centre to the weighted mean of the bins within ``radius`` of it."""
    for _ in range(10):
        d2 = ((colours[:, None, :] - centres[None]) ** 2).sum(-1)
        near = d2 <= radius**2
        new = centres.copy()
        for j in range(len(centres)):
            w = counts * near[:, j]
            if w.sum() > 0:
                new[j] = (colours * w[:, None]).sum(0) / w.sum()
        centres = new
    return centres


def jet_position(rgb: np.ndarray) -> float:
    """Where a colour sits on the path dark blue -> blue -> cyan -> green -> yellow -> red -> dark red."""
    r, g, b = (float(v) / 255 for v in rgb)
    h, _, v = colorsys.rgb_to_hsv(r, g, b)
    hue = (2 / 3 - h) % 1.0  # 0 at blue, growing towards red
    if hue > 0.9:  # reds just past 0 degrees wrap around
        hue -= 1.0
    if hue <= 0.0 and r > b:  # pure and dark reds: the darker, the further along
        return 2 / 3 + (1 - v)
    if hue <= 0.0:  # dark blues come before bright blue
        return -(1 - v)
    return hue


def layout(maps: list[np.ndarray], centres: np.ndarray, close: float) -> None:
    """Where each colour sits: images holding it, mean height (0 top, 1 bottom), blob shapes."""
    from scipy import ndimage

    k = len(centres)
    holds, heights, shapes = np.zeros(k), [[] for _ in range(k)], [[] for _ in range(k)]
    for part in maps:
        idx, d2 = nearest(part.reshape(-1, 3), centres)
        idx = idx.reshape(part.shape[:2])
        sure = (d2 <= close**2).reshape(part.shape[:2])
        for j in range(k):
            mask = (idx == j) & sure
            if mask.sum() < 100:  # a few stray edge pixels do not count as holding the class
                continue
            holds[j] += 1
            heights[j].append(np.nonzero(mask)[0].mean() / part.shape[0])
            labelled, _ = ndimage.label(mask)
            for box in ndimage.find_objects(labelled):
                h, w = box[0].stop - box[0].start, box[1].stop - box[1].start
                if h * w > 30:
                    shapes[j].append(h / w)
    print(f"{'#':>3} {'colour':8} {'in images':>9} {'height':>7} {'blob h/w':>9}")
    for j, c in enumerate(centres):
        height = np.mean(heights[j]) if heights[j] else float("nan")
        shape = np.median(shapes[j]) if shapes[j] else float("nan")
        print(f"{j + 1:>3} {hexcode(c):8} {holds[j] / len(maps):9.0%} {height:7.2f} {shape:9.2f}")


def rgb_of(code: str) -> np.ndarray:
    return np.array(list(bytes.fromhex(code.lstrip("#"))), dtype=np.float64)


def hexcode(rgb: np.ndarray) -> str:
    return "#" + "".join(f"{int(round(float(c))):02x}" for c in rgb)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="folder of aligned pair images")
    parser.add_argument("--classes", type=int, default=12)
    parser.add_argument("--half", choices=("left", "right"), default="right", help="where the labels are")
    parser.add_argument("--flat", type=int, default=16, help="max 5x5 range of a flat pixel (levels)")
    parser.add_argument("--min-dist", type=float, default=40.0, help="seed separation (RGB units)")
    parser.add_argument("--radius", type=float, default=16.0, help="mode-shift radius (RGB units)")
    parser.add_argument("--close", type=float, default=40.0, help="'close' distance for the report")
    args = parser.parse_args(argv)

    maps = label_maps(args.folder, args.half)
    pixels, flat_pixels = label_pixels(maps, args.flat)
    colours, counts = histogram(flat_pixels)
    centres = seed_centres(colours, counts, args.classes, args.min_dist)
    centres = kmeans(colours, counts, centres)
    centres = mode_shift(colours, counts, centres, args.radius)
    centres = np.array(sorted(centres, key=jet_position))
    rounded = np.clip(np.round(centres), 0, 255)

    idx, d2 = nearest(pixels, rounded)
    close = d2 <= args.close**2
    flat_idx, flat_d2 = nearest(flat_pixels, rounded)
    print("share: of all pixels, by nearest colour; flat: of the flat pixels; close: of the class's")
    print(f"pixels, the fraction within {args.close:.0f} (RGB distance) of its colour")
    print(f"{'#':>3} {'colour':8} {'rgb':>13} {'share':>7} {'flat':>7} {'close':>7}  nearest reference")
    for j, c in enumerate(rounded):
        mine = idx == j
        share = mine.mean()
        flat_share = (flat_idx == j).mean()
        within = (close & mine).sum() / max(mine.sum(), 1)
        ref = min(REFERENCE, key=lambda h: np.sum((rgb_of(h) - c) ** 2))
        dist = float(np.sqrt(np.sum((rgb_of(ref) - c) ** 2)))
        rgb = ",".join(str(int(v)) for v in c)
        note = f"{ref} {REFERENCE[ref]} (distance {dist:.0f})" if dist < 40 else ""
        print(f"{j + 1:>3} {hexcode(c):8} {rgb:>13} {share:7.2%} {flat_share:7.2%} {within:7.1%}  {note}")
    print(
        f"within {args.close:.0f} of their colour: {close.mean():.2%} of all pixels, "
        f"{(flat_d2 <= args.close**2).mean():.2%} of the flat ones"
    )
    layout(maps, rounded, args.close)


if __name__ == "__main__":
    main()
