"""i2i: plugin-based image-to-image translation on PyTorch.

Two kinds of names live here, and everything a user or a plugin author needs is one of them:

- the Python API: :func:`load` (a trained generator to call on images), :func:`train`,
  :func:`evaluate` and :func:`diversity` (the ``i2i run``, ``i2i eval`` and ``i2i diversity``
  commands as functions, returning result objects and raising :class:`I2IError`);
- the plugin contract: the hook markers, the base classes a component implements (``Loss``,
  ``Metric``, ``Sampler``), the recipe-checking helpers (``Range``, ``recipe_check``) and the
  helpers the default plugins use. docs/plugins.md documents each; the default plugins import
  nothing else from i2i (a test holds them to it).

The names are imported on first use, so that ``import i2i`` (and ``i2i --help``) does not wait for
torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from i2i.errors import CheckpointError, DataError, I2IError, RecipeError, suggest
from i2i.hookspecs import hookimpl, hookspec
from i2i.version import __version__

#: Public name -> the module that defines it.
_LAZY = {
    # the Python API
    "load": "i2i.inference.translator",
    "Translator": "i2i.inference.translator",
    "train": "i2i.workflows.train",
    "TrainResult": "i2i.workflows.train",
    "evaluate": "i2i.workflows.evaluate",
    "EvalResult": "i2i.workflows.evaluate",
    "DiversityResult": "i2i.diversity.api",
    "resolve_recipe": "i2i.assembly.sources",
    "get_host": "i2i.assembly.host",
    "set_host": "i2i.assembly.host",
    "PluginHost": "i2i.assembly.host",
    "pick_device": "i2i.assembly.build",
    # the plugin contract
    "TrainingModel": "i2i.models",
    "ModelParts": "i2i.models",
    "OptimiserGroup": "i2i.models",
    "StepTools": "i2i.models",
    "set_requires_grad": "i2i.models",
    "Loss": "i2i.losses",
    "StepContext": "i2i.losses",
    "call_frozen": "i2i.losses",
    "Metric": "i2i.metrics",
    "Component": "i2i.registry",
    "Provider": "i2i.registry",
    "Registry": "i2i.registry",
    "Sampler": "i2i.sampling",
    "check_mode": "i2i.sampling",
    "dropout_layers": "i2i.sampling",
    "latent_dim": "i2i.sampling",
    "generate": "i2i.sampling",
    "Range": "i2i.schema",
    "CheckContext": "i2i.schema",
    "recipe_check": "i2i.schema",
    "init_weights": "i2i.nn_init",
    "Palette": "i2i.palette",
    "make_palette": "i2i.palette",
    "load_palette": "i2i.palette",
    "PALETTE_JSON_EXAMPLE": "i2i.palette",
    "Geometry": "i2i.speed.device_data",
    "image_header": "i2i.data.scan",
    "ItemProblem": "i2i.data.scan",
    "ScanResult": "i2i.data.scan",
    "LARGE_PIXELS": "i2i.data.scan",
}
_RENAMED = {"PALETTE_JSON_EXAMPLE": "JSON_EXAMPLE"}

if TYPE_CHECKING:
    from i2i.assembly.build import pick_device
    from i2i.assembly.host import PluginHost, get_host, set_host
    from i2i.assembly.sources import resolve_recipe
    from i2i.data.scan import LARGE_PIXELS, ItemProblem, ScanResult, image_header
    from i2i.diversity.api import DiversityResult
    from i2i.inference.translator import Translator, load
    from i2i.losses import Loss, StepContext, call_frozen
    from i2i.metrics import Metric
    from i2i.models import ModelParts, OptimiserGroup, StepTools, TrainingModel, set_requires_grad
    from i2i.nn_init import init_weights
    from i2i.palette import JSON_EXAMPLE as PALETTE_JSON_EXAMPLE
    from i2i.palette import Palette, load_palette, make_palette
    from i2i.registry import Component, Provider, Registry
    from i2i.sampling import Sampler, check_mode, dropout_layers, generate, latent_dim
    from i2i.schema import CheckContext, Range, recipe_check
    from i2i.speed.device_data import Geometry
    from i2i.workflows.evaluate import EvalResult, evaluate
    from i2i.workflows.train import TrainResult, train


def __getattr__(name: str) -> Any:
    if name == "diversity":  # the subpackage, which is also callable: i2i.diversity(recipe)
        return importlib.import_module("i2i.diversity")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'i2i' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), _RENAMED.get(name, name))
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | {"diversity"})


__all__ = [
    "CheckContext",
    "CheckpointError",
    "Component",
    "DataError",
    "DiversityResult",
    "EvalResult",
    "Geometry",
    "I2IError",
    "ItemProblem",
    "LARGE_PIXELS",
    "Loss",
    "Metric",
    "ModelParts",
    "OptimiserGroup",
    "PALETTE_JSON_EXAMPLE",
    "Palette",
    "PluginHost",
    "Provider",
    "Range",
    "RecipeError",
    "Registry",
    "Sampler",
    "ScanResult",
    "StepContext",
    "StepTools",
    "TrainingModel",
    "TrainResult",
    "Translator",
    "__version__",
    "call_frozen",
    "check_mode",
    "diversity",
    "dropout_layers",
    "evaluate",
    "generate",
    "get_host",
    "hookimpl",
    "hookspec",
    "image_header",
    "init_weights",
    "latent_dim",
    "load",
    "load_palette",
    "make_palette",
    "pick_device",
    "recipe_check",
    "resolve_recipe",
    "set_host",
    "set_requires_grad",
    "suggest",
    "train",
]
