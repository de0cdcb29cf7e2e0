"""Diversity and quality measures on drawn samples, and the same measures on real images.

Every image here is a float tensor in [0, 1]. For one input with K samples:

- a *pairwise* measure (a metric whose ``diversity`` kind is ``"distance"`` or ``"similarity"``)
  is averaged over the K-1 consecutive pairs (sample k, sample k+1), as BicycleGAN's evaluation
  does; a similarity s counts as the distance 1 - s (so SSIM gives 1 - SSIM);
- ``std`` is the per-pixel standard deviation over the K samples (population, not unbiased),
  averaged over pixels and channels;
- a quality metric compares each sample with the target and is averaged over the K samples.

The real-pair reference applies the pairwise measures to random pairs of *distinct* real targets
of the split, and ``std`` to random groups of K distinct targets, so a method's diversity can be
read as a fraction of the variation between real photos.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from i2i.errors import I2IError
from i2i.metrics import Metric

#: The measure that needs no metric plugin.
STD = "std"


@dataclass
class PairwiseMeasure:
    """A metric used as a distance between two samples."""

    name: str
    metric: Metric

    @property
    def label(self) -> str:
        return self.name if self.metric.diversity == "distance" else f"1-{self.name}"

    def distance(self, a: Tensor, b: Tensor) -> float:
        score = self.metric.score(a, b)
        return score if self.metric.diversity == "distance" else 1.0 - score

    def distances(self, a: Tensor, b: Tensor) -> list[float]:
        """Distances between matching rows of two batches (N, C, H, W)."""
        scores = self.metric.update(a, b)
        if self.metric.diversity == "distance":
            return list(scores)
        return [1.0 - s for s in scores]


def pairwise_measures(metrics: dict[str, Metric]) -> list[PairwiseMeasure]:
    """The diversity metrics, refusing any that is not a distance or a similarity."""
    measures = []
    for name, metric in metrics.items():
        kind = getattr(metric, "diversity", None)
        if kind not in ("distance", "similarity"):
            raise I2IError(
                f"diversity.metrics: {name!r} cannot measure how different two samples are (its "
                "diversity kind is not 'distance' or 'similarity'); use l1, ssim or lpips here and "
                "list it under diversity.quality instead."
            )
        measures.append(PairwiseMeasure(name, metric))
    return measures


def pixel_std(samples: Tensor) -> float:
    """Mean over pixels and channels of the standard deviation across samples (K, C, H, W)."""
    if samples.shape[0] < 2:
        return 0.0
    return float(samples.double().std(dim=0, unbiased=False).mean())


def diversity_of(samples: Tensor, measures: list[PairwiseMeasure]) -> dict[str, float]:
    """Diversity of K samples of one input: each measure over consecutive pairs, and ``std``."""
    result = {}
    for m in measures:
        values = m.distances(samples[:-1], samples[1:])
        result[m.label] = sum(values) / len(values)
    result[STD] = pixel_std(samples)
    return result


def quality_of(
    samples: Tensor, target: Tensor, metrics: dict[str, Metric], image: Tensor | None = None
) -> dict[str, float]:
    """Each per-image quality metric of every sample against the target, averaged over samples.

    Set-level metrics (``per_image = False``, e.g. the FCN-score's confusion matrix) only
    accumulate here; the protocol reads them with ``compute()`` once every input is sampled.
    ``image`` is the input the samples were drawn for, given to metrics that need it.
    """
    targets = target.unsqueeze(0).expand_as(samples)
    inputs = image.unsqueeze(0).expand(samples.shape[0], *image.shape) if image is not None else None
    result = {}
    for name, metric in metrics.items():
        if metric.needs_input:
            if inputs is None:
                raise I2IError(f"The quality metric {name!r} needs the input images.")
            values = metric.update(samples, targets, inputs=inputs)
        else:
            values = metric.update(samples, targets)
        if metric.per_image:
            result[name] = _mean(values)
    return result


def _mean(values: list[float]) -> float:
    """The mean, where +inf (a perfect PSNR) stays inf instead of turning into nan."""
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else float("nan")


def average(rows: list[dict[str, float]]) -> dict[str, float]:
    """Column means over per-input rows."""
    keys = list(dict.fromkeys(k for row in rows for k in row))
    return {k: _mean([row[k] for row in rows if k in row]) for k in keys}


def real_reference(
    targets: Tensor, measures: list[PairwiseMeasure], pairs: int, group: int, groups: int, seed: int
) -> dict[str, Any]:
    """The measures on real targets: ``pairs`` random pairs of distinct images, and ``groups``
    random groups of ``group`` distinct images for ``std``."""
    n = targets.shape[0]
    if n < 2:
        raise I2IError(
            "The real-pair reference needs at least two target images in the split; it has "
            f"{n}. Sample a larger split (diversity.split)."
        )
    gen = torch.Generator().manual_seed(seed)
    first = torch.randint(0, n, (pairs,), generator=gen)
    offset = torch.randint(1, n, (pairs,), generator=gen)  # never 0: the two images differ
    second = (first + offset) % n
    result: dict[str, Any] = {}
    for m in measures:
        result[m.label] = _mean(m.distances(targets[first], targets[second]))
    size = min(group, n)
    stds = [pixel_std(targets[torch.randperm(n, generator=gen)[:size]]) for _ in range(groups)]
    result[STD] = _mean(stds)
    return {"values": result, "pairs": pairs, "groups": groups, "group_size": size, "images": n}
