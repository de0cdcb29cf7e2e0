"""i2i: plugin-based paired image-to-image translation on PyTorch."""

from i2i.errors import I2IError
from i2i.hookspecs import hookimpl, hookspec
from i2i.losses import Loss, StepContext
from i2i.metrics import Metric
from i2i.registry import Component, Provider, Registry
from i2i.sampling import Sampler

__version__ = "0.1.0"

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
