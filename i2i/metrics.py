"""The metric contract used by evaluation.

Images reach metrics as float tensors of shape (C, H, W) with values in [0, 1]. A per-image metric
only implements :meth:`Metric.score`; a dataset-level one (FID) overrides :meth:`update` and
:meth:`compute` and sets ``per_image = False``.
"""

from __future__ import annotations

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

    def __init__(self) -> None:
        self.values: list[float] = []

    def reset(self) -> None:
        self.values = []

    def score(self, output: Tensor, target: Tensor) -> float:
        raise NotImplementedError

    def update(self, output: Tensor, target: Tensor) -> list[float]:
        """Score a batch (N, C, H, W); returns the per-image values."""
        batch = [self.score(o, t) for o, t in zip(output, target, strict=True)]
        self.values.extend(batch)
        return batch

    def compute(self) -> float:
        return sum(self.values) / len(self.values) if self.values else float("nan")
