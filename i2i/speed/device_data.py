"""``data.cache = "decoded"``: decode each image once, then jitter whole batches on the device.

The default loader decodes, resizes, crops and flips every item on a CPU core, every epoch; on a
GPU that can take longer than the step itself. Here each image is decoded once into a tensor kept
on the training device, and resizing, cropping and flipping run as batched tensor ops there. The
crop and flip of each item come from the dataset's own :meth:`geometry`, drawn under the same
(seed, epoch, index) seed as the default path, so both paths pick identical crops and flips; only
the resize differs by rounding (the default path resizes 8-bit images in integer arithmetic).

Nothing is copied from host memory to the device per batch: crops are slices at offsets the host
knows, and each flip is applied to its item's crop before the batch is stacked (the flag never
becomes a device tensor, so no blocking host-to-device copy stalls the queue). Drawing the flips
on the device instead (a device generator) would give other flips than the default path's, and so
other results on the CPU too; these flips are the default path's, bit for bit, on every device.

A dataset takes part by providing three methods (the default ``aligned`` and ``paired_folders``
datasets do):

- ``decoded_cache_problem() -> str | None``: why it cannot (e.g. class-map targets), or ``None``;
- ``decoded(index) -> dict``: ``"A"`` and ``"B"`` as stored (CxHxW, uint8 or float in [0, 1]),
  already in the network's channel counts, and ``"name"``;
- ``geometry(height, width) -> Geometry``: the resize target, crop and flip of one item, drawing
  from torch's global RNG exactly as its own transform does.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from i2i.data.order import EpochSampler, _mix


@dataclass(frozen=True)
class Geometry:
    """Resize to ``size`` (height, width), then crop ``crop`` (top, left, height, width), then flip."""

    size: tuple[int, int]
    crop: tuple[int, int, int, int] | None
    flip: bool


def supports_decoded_cache(dataset: Any) -> str | None:
    """Why ``dataset`` cannot use the decoded cache, or ``None`` when it can."""
    if not all(hasattr(dataset, m) for m in ("decoded", "geometry", "decoded_cache_problem")):
        return f"the dataset {type(dataset).__name__} does not offer decoded images"
    return dataset.decoded_cache_problem()


def resize(images: Tensor, size: tuple[int, int]) -> Tensor:
    """Antialiased bicubic resize of a (N, C, H, W) batch, as the default path does per image.

    8-bit images are resized in float and rounded back to whole levels; float images are clamped
    to [0, 1] (bicubic overshoots a little). Returns float in the input's range (0..255 or 0..1).
    """
    x = images.float()
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if images.dtype != torch.uint8:
        return F.interpolate(x, size=size, mode="bicubic", antialias=True).clamp_(0.0, 1.0)
    # As torch's 8-bit kernel: the horizontal pass, rounded and clipped to 0..255, then the
    # vertical one (clipping between the passes matters where bicubic overshoots at edges).
    x = F.interpolate(x, size=(x.shape[-2], size[1]), mode="bicubic", antialias=True)
    x = F.interpolate(x.round_().clamp_(0, 255), size=size, mode="bicubic", antialias=True)
    return x.round_().clamp_(0, 255)


class DecodedLoader:
    """Iterates like the training DataLoader (same sampler, same batches), from a decoded cache."""

    def __init__(self, dataset: Any, seed: int, sampler: EpochSampler, batch_size: int, device: torch.device):
        self.dataset = dataset
        self.seed = seed
        self.sampler = sampler
        self.batch_size = batch_size
        self.device = device
        self._cache: dict[int, dict[str, Any]] = {}

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.batch_size)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        keys = list(iter(self.sampler))
        for start in range(0, len(keys), self.batch_size):
            yield self.batch(keys[start : start + self.batch_size])

    def item(self, index: int) -> dict[str, Any]:
        """The decoded images of ``index`` on the device (decoded on first use)."""
        if index not in self._cache:
            item = self.dataset.decoded(index)
            self._cache[index] = {
                "A": item["A"].to(self.device),
                "B": item["B"].to(self.device),
                "name": item["name"],
            }
        return self._cache[index]

    def batch(self, keys: list[tuple[int, int]]) -> dict[str, Any]:
        """One batch for ``(epoch, index)`` keys: the default path's crops and flips, on the device."""
        items = [self.item(index) for _, index in keys]
        geometries = []
        for (epoch, index), item in zip(keys, items, strict=True):
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(_mix(self.seed, epoch, index))
                geometries.append(self.dataset.geometry(*item["A"].shape[-2:]))
        out: dict[str, Any] = {"name": [item["name"] for item in items]}
        for key in ("A", "B"):
            out[key] = self._jitter([item[key] for item in items], geometries)
        return out

    @staticmethod
    def _jitter(images: list[Tensor], geometries: list[Geometry]) -> Tensor:
        same = len({(tuple(x.shape), g.size) for x, g in zip(images, geometries, strict=True)}) == 1
        if same:  # the usual case: one resize call for the whole batch
            resized = list(resize(torch.stack(images), geometries[0].size))
        else:
            resized = [resize(x[None], g.size)[0] for x, g in zip(images, geometries, strict=True)]
        crops = []
        for x, g in zip(resized, geometries, strict=True):
            if g.crop is not None:
                top, left, h, w = g.crop
                x = x[..., top : top + h, left : left + w]
            crops.append(x.flip(-1) if g.flip else x)  # decided on the host: no flag goes to the device
        batch = torch.stack(crops)
        scale = 2.0 / 255.0 if images[0].dtype == torch.uint8 else 2.0
        return batch.mul_(scale).sub_(1.0).contiguous()
