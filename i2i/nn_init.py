"""Weight initialisation and small helpers shared by network plugins.

:func:`init_weights` follows the scheme of the original pix2pix/CycleGAN code: convolution and
linear weights are drawn from the chosen distribution, their biases set to zero, and batch-norm
scales drawn from ``N(1, gain)`` with zero shifts.
"""

from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from i2i.errors import I2IError, suggest

#: The accepted ``init_type`` values.
INIT_TYPES = ("normal", "xavier", "kaiming", "orthogonal", "none")


def init_weights(net: nn.Module, init_type: str = "normal", gain: float = 0.02) -> nn.Module:
    """Initialise ``net``'s weights in place and return it.

    ``init_type`` is one of ``normal`` (``N(0, gain)``), ``xavier`` (Glorot normal with ``gain``),
    ``kaiming`` (He normal, fan-in; ``gain`` unused), ``orthogonal`` (with ``gain``) or ``none``
    (keep PyTorch's default initialisation).
    """
    if init_type not in INIT_TYPES:
        raise I2IError(f"Unknown weight initialisation {init_type!r}. {suggest(init_type, INIT_TYPES)}")
    if gain < 0:
        raise I2IError(f"The initialisation gain must not be negative, got {gain}.")
    if init_type == "none":
        return net

    for module in net.modules():
        if isinstance(module, (_ConvNd, nn.Linear)) and getattr(module, "weight", None) is not None:
            weight = module.weight.data
            if init_type == "normal":
                nn.init.normal_(weight, 0.0, gain)
            elif init_type == "xavier":
                nn.init.xavier_normal_(weight, gain=gain)
            elif init_type == "kaiming":
                nn.init.kaiming_normal_(weight, a=0, mode="fan_in")
            else:  # orthogonal
                nn.init.orthogonal_(weight, gain=gain)
            if module.bias is not None:
                nn.init.zeros_(module.bias.data)
        elif isinstance(module, _BatchNorm) and module.affine:
            nn.init.normal_(module.weight.data, 1.0, gain)
            nn.init.zeros_(module.bias.data)
    return net


def count_parameters(net: nn.Module, trainable_only: bool = False) -> int:
    """The number of parameter values in ``net`` (only trainable ones if ``trainable_only``)."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad or not trainable_only)
