"""i2i: plugin-based paired image-to-image translation on PyTorch.

The public names are imported on first use, so that ``import i2i`` (and ``i2i --help``) does not
wait for torch: ``Loss``, ``Metric`` and ``Sampler`` need it, the hook markers do not.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from i2i.errors import I2IError
from i2i.hookspecs import hookimpl, hookspec

__version__ = "0.1.0"

_LAZY = {
    "Loss": "i2i.losses",
    "StepContext": "i2i.losses",
    "Metric": "i2i.metrics",
    "Component": "i2i.registry",
    "Provider": "i2i.registry",
    "Registry": "i2i.registry",
    "Sampler": "i2i.sampling",
}

if TYPE_CHECKING:
    from i2i.losses import Loss, StepContext
    from i2i.metrics import Metric
    from i2i.registry import Component, Provider, Registry
    from i2i.sampling import Sampler


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'i2i' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "Component",
    "I2IError",
    "Loss",
    "Metric",
    "Provider",
    "Registry",
    "Sampler",
    "StepContext",
    "__version__",
    "hookimpl",
    "hookspec",
]
