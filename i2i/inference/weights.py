"""A generator as one small, safe file: its weights in safetensors with the recipe as metadata.

A checkpoint carries optimiser state and the discriminator; this carries only what inference needs,
optionally in half precision, and loading it cannot run code (safetensors holds tensors and
strings only). :func:`read_export` reads it; :func:`i2i.inference.loading.load_trained` builds the
generator from it, a checkpoint file or a run directory alike.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from i2i.assembly.recipe import Recipe
from i2i.errors import CheckpointError

SUFFIX = ".safetensors"
FORMAT = "i2i-generator"


def save_generator(
    state: dict[str, Any], generator: nn.Module, path: Path, *, half: bool = False, direction: str = "AtoB"
) -> Path:
    """Write ``generator``'s weights (fp16 if ``half``) with the checkpoint's recipe and the channels
    of the ``direction`` it translates."""
    from safetensors.torch import save_file

    tensors = {}
    for key, value in generator.state_dict().items():
        value = value.detach().cpu()
        if half and value.is_floating_point():
            value = value.half()
        tensors[key] = value.contiguous()
    metadata = {
        "format": FORMAT,
        "recipe": json.dumps(state["recipe"]),
        "io": json.dumps(state["io" if direction == "AtoB" else "io_BtoA"]),
        "direction": direction,
        "step": str(state.get("step", "")),
        "dtype": "float16" if half else "float32",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return path


@dataclass
class Export:
    """What an export file holds: the generator's weights (float32), its recipe and channels."""

    tensors: dict[str, torch.Tensor]
    recipe: Recipe
    io: dict[str, Any]
    step: int | None
    direction: str = "AtoB"  # what the exported generator translates


def read_export(path: str | Path) -> Export:
    """Read an ``i2i export --format safetensors`` file, refusing anything else with a clear message."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Generator weights {path} do not exist.")
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
            tensors = {key: fh.get_tensor(key) for key in fh.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not an i2i generator export.")
    try:
        recipe, io = json.loads(metadata["recipe"]), json.loads(metadata["io"])
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{path}: its metadata is damaged ({exc}).") from None
    if not isinstance(recipe, dict) or not isinstance(io, dict):
        raise CheckpointError(f"{path}: its metadata is damaged (the recipe or io is not a table).")
    step = metadata.get("step", "")
    floats = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    direction = metadata.get("direction", "AtoB")
    return Export(floats, recipe, io, int(step) if step.isdigit() else None, direction)
