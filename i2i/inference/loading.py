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
    direction: str = "AtoB"  # what it translates: A to B, or B to A (a CycleGAN's second generator)


#: Directions a generator can translate, and where a checkpoint keeps each one's weights and channels.
DIRECTIONS = {"AtoB": ("generator", "io"), "BtoA": ("generator_BtoA", "io_BtoA")}


def _translator_of(state: dict[str, Any], direction: str) -> tuple[dict, dict]:
    """The weights and channels of the checkpoint's ``direction`` translator."""
    if direction not in DIRECTIONS:
        raise CheckpointError(f"--direction {direction!r}: use AtoB or BtoA.")
    weights_key, io_key = DIRECTIONS[direction]
    if direction == "BtoA" and weights_key not in state and "generator" in state:
        model = (state.get("recipe") or {}).get("model", {}).get("name", "pix2pix")
        raise CheckpointError(
            f"{state.get('path')} holds a {model} model, which translates A to B only; "
            "--direction BtoA needs a model with a generator for each direction (e.g. cyclegan)."
        )
    try:
        return state[weights_key], state[io_key]
    except KeyError as exc:
        raise CheckpointError(f"{state.get('path')} lacks {exc}: not a complete i2i checkpoint.") from None


def generator_from_checkpoint(
    state: dict[str, Any], host: PluginHost, device: torch.device, direction: str = "AtoB"
) -> torch.nn.Module:
    """Rebuild the checkpoint's generator (of ``direction``) from its recipe, with its weights."""
    if "recipe" not in state:
        raise CheckpointError(f"{state.get('path')} lacks 'recipe': not a complete i2i checkpoint.")
    weights, io = _translator_of(state, direction)
    return _with_weights(state["recipe"], io, weights, host, device, state.get("path"))


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
    path: str | Path, host: PluginHost, device: str | torch.device | None = None, direction: str = "AtoB"
) -> TrainedGenerator:
    """The generator of a run directory (its latest checkpoint), a checkpoint file, or an
    ``i2i export --format safetensors`` file, in eval mode on ``device`` (default: the recipe's).
    ``direction`` "BtoA" takes the reverse generator of a model that has one (CycleGAN)."""
    path = Path(path)
    if path.suffix == SUFFIX:
        export = read_export(path)
        if direction != "AtoB" and direction != export.direction:
            raise CheckpointError(
                f"{path} is an exported generator, which translates one way: {export.direction}, the "
                "direction it was exported in (i2i export --direction)."
            )
        direction = export.direction
        recipe, io, weights, step = export.recipe, export.io, export.tensors, export.step
        where = path
    else:
        state = load_checkpoint(path)
        if "recipe" not in state:
            raise CheckpointError(f"{state['path']} lacks 'recipe': not a complete i2i checkpoint.")
        recipe = state["recipe"]
        weights, io = _translator_of(state, direction)
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
        direction=direction,
    )
