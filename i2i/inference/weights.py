"""A generator as one small, safe file: its weights in safetensors with the recipe as metadata.

A checkpoint carries optimiser state and the discriminator; this carries only what inference needs,
optionally in half precision, and loading it cannot run code (safetensors holds tensors and
strings only). :func:`load_generator` reads it, a checkpoint file or a run directory alike.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from i2i.assembly.build import build_generator
from i2i.assembly.host import PluginHost
from i2i.assembly.recipe import Recipe
from i2i.errors import CheckpointError
from i2i.inference.evaluate import generator_from_checkpoint
from i2i.runs.checkpoint import load_checkpoint

SUFFIX = ".safetensors"
FORMAT = "i2i-generator"


def save_generator(state: dict[str, Any], generator: nn.Module, path: Path, *, half: bool = False) -> Path:
    """Write ``generator``'s weights (fp16 if ``half``) with the checkpoint's recipe and channels."""
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
        "io": json.dumps(state["io"]),
        "step": str(state.get("step", "")),
        "dtype": "float16" if half else "float32",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return path


def load_generator(path: str | Path, host: PluginHost, device: torch.device) -> tuple[nn.Module, Recipe]:
    """The generator (eval mode, float32) and its recipe, from a ``.safetensors`` export, a
    checkpoint file or a run directory."""
    path = Path(path)
    if path.suffix != SUFFIX:
        state = load_checkpoint(path)
        return generator_from_checkpoint(state, host, device), state["recipe"]
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
    G = build_generator(recipe, host, io["input_nc"], io["output_nc"])
    try:
        G.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in tensors.items()})
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path}: the weights do not fit the generator its recipe describes: {str(exc).splitlines()[0]}"
        ) from None
    return G.to(device).eval(), recipe
