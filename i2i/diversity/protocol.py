"""The sampling protocol: K samples for each of N inputs, with seeds that make every run repeatable.

Input i draws its K samples right after ``torch.manual_seed(seed + i)``, so two samplers (or two
runs) see the same random stream for the same input. A batched sampler draws the K samples in one
batch of K copies of the input; any other sampler runs K batches of one, which is what a test batch
of one means for train-mode batch normalisation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from i2i.data.imaging import to_unit
from i2i.diversity.measures import PairwiseMeasure, average, diversity_of, quality_of
from i2i.metrics import Metric
from i2i.sampling import Sampler, draw


@dataclass
class Inputs:
    """The N inputs of the protocol and their targets, in [-1, 1], with their file names."""

    A: Tensor
    B: Tensor
    names: list[str]


def protocol_record(settings: dict[str, Any], count: int, split: str) -> dict[str, Any]:
    """What a report states about how its numbers were made (and what cached results must match)."""
    return {
        "inputs": count,
        "samples": settings["samples"],
        "pairs_per_input": settings["samples"] - 1,
        "pairing": "consecutive samples (k, k+1)",
        "seed": settings["seed"],
        "seeding": "torch.manual_seed(seed + i) before the samples of input i",
        "split": split,
        "metrics": [m["name"] for m in settings["metrics"]],
        "quality": [m["name"] for m in settings["quality"]],
    }


def measure(
    generator: nn.Module,
    sampler: Sampler,
    inputs: Inputs,
    settings: dict[str, Any],
    measures: list[PairwiseMeasure],
    quality: dict[str, Metric],
    device: torch.device,
    *,
    figure_inputs: int = 0,
    figure_samples: int = 0,
    advance=None,
) -> dict[str, Any]:
    """Sample every input, score diversity and quality, and keep a few samples for the figure.

    Returns ``{"summary": {...}, "per_input": [...], "figure": [(input, [samples], target), ...]}``.
    ``advance`` is called once per input (for a progress bar).
    """
    net = sampler.prepare(generator).to(device)
    for metric in quality.values():
        metric.reset()
    rows: list[dict[str, Any]] = []
    figure = []
    for i in range(inputs.A.shape[0]):
        torch.manual_seed(settings["seed"] + i)
        samples = draw(net, sampler, inputs.A[i], settings["samples"], device)
        unit, target = to_unit(samples), to_unit(inputs.B[i])
        rows.append(
            {
                "name": inputs.names[i],
                **{f"div_{k}": v for k, v in diversity_of(unit, measures).items()},
                **{f"q_{k}": v for k, v in quality_of(unit, target, quality, to_unit(inputs.A[i])).items()},
            }
        )
        if i < figure_inputs:
            figure.append((inputs.A[i], list(samples[:figure_samples]), inputs.B[i]))
        if advance is not None:
            advance()
    summary = average([{k: v for k, v in row.items() if k != "name"} for row in rows])
    for name, metric in quality.items():
        if not metric.per_image:  # over every sample of every input at once
            summary[f"q_{name}"] = metric.compute()
    return {"summary": summary, "per_input": rows, "figure": figure}
