"""A trained generator from whatever a user points at: a run directory, a checkpoint, an export.

Every command that uses a trained generator (translate, eval, export, serve, the diversity runner,
the FCN-score's segmenter, :func:`i2i.load`) loads it here, so they all accept the same things and
refuse the same things with the same words.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from i2i.assembly.build import build_generator, pick_device
from i2i.assembly.host import PluginHost
from i2i.assembly.recipe import Recipe
from i2i.errors import CheckpointError
from i2i.inference.weights import SUFFIX, read_export
from i2i.runs.checkpoint import load_checkpoint


@dataclass
class TrainedGenerator:
    """A generator in eval mode on its device, with the recipe it was trained with."""

    generator: nn.Module
    recipe: Recipe
    input_nc: int
    output_nc: int
    path: Path  # the file its weights came from
    step: int | None
    device: torch.device
    exported: bool  # from an ``i2i export`` safetensors file (weights and recipe only)


def generator_from_checkpoint(
    state: dict[str, Any], host: PluginHost, device: torch.device
) -> torch.nn.Module:
    """Rebuild the checkpoint's generator from its recipe through the registry, with its weights."""
    try:
        recipe, io = state["recipe"], state["io"]
        weights = state["generator"]
    except KeyError as exc:
        raise CheckpointError(f"{state.get('path')} lacks {exc}: not a complete i2i checkpoint.") from None
    return _with_weights(recipe, io, weights, host, device, state.get("path"))


def _with_weights(
    recipe: Recipe, io: dict[str, Any], weights: dict[str, torch.Tensor], host: PluginHost, device, path
) -> nn.Module:
    try:
        G = build_generator(recipe, host, int(io["input_nc"]), int(io["output_nc"]))
        G.load_state_dict(weights)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} lacks {exc}: not a complete i2i checkpoint.") from None
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path}: the weights do not fit the generator its recipe describes: {str(exc).splitlines()[0]}"
        ) from None
    return G.to(device).eval()


def load_trained(
    path: str | Path, host: PluginHost, device: str | torch.device | None = None
) -> TrainedGenerator:
    """The generator of a run directory (its latest checkpoint), a checkpoint file, or an
    ``i2i export --format safetensors`` file, in eval mode on ``device`` (default: the recipe's)."""
    path = Path(path)
    if path.suffix == SUFFIX:
        export = read_export(path)
        recipe, io, weights, step = export.recipe, export.io, export.tensors, export.step
        where = path
    else:
        state = load_checkpoint(path)
        try:
            recipe, io, weights = state["recipe"], state["io"], state["generator"]
        except KeyError as exc:
            raise CheckpointError(f"{state['path']} lacks {exc}: not a complete i2i checkpoint.") from None
        step, where = state.get("step"), Path(state["path"])
    if not isinstance(device, torch.device):
        device = pick_device(device or recipe["experiment"]["device"])
    G = _with_weights(recipe, io, weights, host, device, where)
    return TrainedGenerator(
        generator=G,
        recipe=recipe,
        input_nc=int(io["input_nc"]),
        output_nc=int(io["output_nc"]),
        path=where,
        step=int(step) if isinstance(step, int) else None,
        device=device,
        exported=path.suffix == SUFFIX,
    )
