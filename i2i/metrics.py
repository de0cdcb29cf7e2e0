"""The metric contract used by evaluation.

Images reach metrics as float tensors of shape (C, H, W) with values in [0, 1]. A per-image metric
only implements :meth:`Metric.score`; a dataset-level one (FID) overrides :meth:`update` and
:meth:`compute` and sets ``per_image = False``. A metric that judges an output against the network's
*input* (the FCN-score segments a generated photo and compares it with the input label map) sets
``needs_input = True`` and receives ``inputs`` (the same layout, also in [0, 1]) in :meth:`update`.

A metric that runs a network of its own (FID's Inception, the FCN-score's segmenter) can follow the
evaluation onto its device: evaluation calls :meth:`Metric.use_device` with the device the
generator runs on before the first :meth:`update` (:func:`tell_device` does it for a set of
metrics, also for duck-typed ones without the method).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor


class Metric:
    """Accumulates a score over an evaluation run."""

    #: Used to sort galleries and to word reports ("higher is better").
    higher_is_better: bool = True
    #: Whether :meth:`update` yields one value per image (shown in the per-image CSV).
    per_image: bool = True
    #: How the diversity experiment can use :meth:`score` between two generated samples:
    #: ``"distance"`` (the score is a distance, e.g. L1, LPIPS), ``"similarity"`` (1 − score is a
    #: distance, e.g. SSIM), or ``None`` (not a pairwise measure, e.g. PSNR, FID).
    diversity: str | None = None
    #: Whether :meth:`update` needs the network's input images as well (``inputs=``).
    needs_input: bool = False

    def __init__(self) -> None:
        self.values: list[float] = []

    def reset(self) -> None:
        self.values = []

    def use_device(self, device: torch.device) -> None:
        """The device the evaluation runs on, told before the first :meth:`update` (the default
        does nothing). A metric whose ``device`` parameter is ``"auto"`` moves its network there."""

    def score(self, output: Tensor, target: Tensor) -> float:
        raise NotImplementedError

    def update(self, output: Tensor, target: Tensor, inputs: Tensor | None = None) -> list[float]:
        """Score a batch (N, C, H, W); returns the per-image values (``[]`` for set-level metrics).

        ``inputs`` is given to metrics with ``needs_input = True``; others may ignore it.
        """
        batch = [self.score(o, t) for o, t in zip(output, target, strict=True)]
        self.values.extend(batch)
        return batch

    def compute(self) -> float:
        return sum(self.values) / len(self.values) if self.values else float("nan")


def tell_device(metrics: Iterable[Any], device: torch.device) -> None:
    """Call :meth:`Metric.use_device` of each metric that has it (metrics written before it existed
    may not subclass :class:`Metric`)."""
    for metric in metrics:
        use = getattr(metric, "use_device", None)
        if callable(use):
            use(torch.device(device))
