"""The recipe's ``[speed]`` table, and what its ``"auto"`` values mean on each kind of device.

``"auto"`` turns on only what a benchmark measured to help on that device (docs/performance.md);
everything else stays off until it is measured. Explicit ``true``/``false`` always win.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from i2i.schema import Param

Switch = bool | Literal["auto"]

#: The ``[speed]`` keys (documented in docs/recipes.md; a test keeps the two in step).
SPEED_SETTINGS: dict[str, Param] = {
    p.name: p
    for p in [
        Param("amp", Literal["auto", "off", "bf16"], "auto", "bf16 autocast of the forward passes"),
        Param("channels_last", Switch, "auto", "channels-last memory format for G, D and inputs"),
        Param("compile", Switch, "auto", "torch.compile of G and D"),
        Param("cuda_graphs", Switch, "auto", "replay the whole step as one CUDA graph (CUDA only)"),
        Param("cudnn_benchmark", Switch, "auto", "let cuDNN time its kernels for the fixed crop size"),
        Param(
            "tf32",
            Literal["auto", "on", "off"],
            "auto",
            "TF32 matmuls and convolutions on CUDA (Ampere and newer); 'off': full fp32",
        ),
        Param("allocator", Switch, "auto", "keep large CPU buffers in the heap (glibc)"),
        Param("threads", int, 0, "CPU threads for torch (0: torch's default)", minimum=0),
    ]
}

#: The ``[speed]`` settings that have run on CUDA and been measured there (``tools/gpu-check.sh``
#: measures them; a setting is added here with the figure that justifies it). None has yet.
MEASURED_ON_CUDA: frozenset[str] = frozenset()

#: What ``"auto"`` turns on, per device type: only what was measured to help there. On CUDA only
#: settings of :data:`MEASURED_ON_CUDA` may appear (a test checks it): until a GPU has run the
#: check, "auto" there is the plain fp32 step (no cuDNN autotuning, no TF32).
AUTO_ON: dict[str, frozenset[str]] = {
    "cpu": frozenset({"allocator"}),  # 1.13x (cpu-step-profile); fused Adam is optim.fused
    "cuda": frozenset(),
}


@dataclass(frozen=True)
class SpeedChoices:
    """The ``[speed]`` table with every ``"auto"`` decided for one device."""

    amp: str = "off"
    channels_last: bool = False
    compile: bool = False
    cuda_graphs: bool = False
    cudnn_benchmark: bool = False
    tf32: bool = False
    allocator: bool = False
    threads: int = 0
    #: Keys the user set explicitly (a fallback of those is worth a note; of "auto" ones it is not).
    explicit: frozenset[str] = field(default_factory=frozenset)


def decide(table: dict[str, Any] | None, device: torch.device) -> SpeedChoices:
    """Resolve ``table`` (a resolved ``[speed]``, or ``None`` for all defaults) for ``device``."""
    table = {name: p.default for name, p in SPEED_SETTINGS.items()} | dict(table or {})
    auto_on = AUTO_ON.get(device.type, frozenset())
    values: dict[str, Any] = {}
    explicit = set()
    for name, value in table.items():
        if name not in SPEED_SETTINGS:
            continue
        if value == "auto":
            values[name] = "off" if name == "amp" else name in auto_on
        else:
            values[name] = value == "on" if name == "tf32" else value
            if name != "threads" or value:
                explicit.add(name)
    return SpeedChoices(**values, explicit=frozenset(explicit))


def plain() -> SpeedChoices:
    """Everything off: the reference step (eager, fp32, default allocator)."""
    return SpeedChoices()
