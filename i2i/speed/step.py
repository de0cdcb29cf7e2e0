"""Applying the ``[speed]`` choices to a built model: memory format, compilation, autocast.

Each path checks whether this device and these networks allow it and otherwise falls back to the
plain path with a one-line note, so a recipe that asks for more than the machine offers still runs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from i2i.speed.allocator import tune_allocator
from i2i.speed.options import SpeedChoices


@dataclass
class StepSpeed:
    """The speed settings in force for one training run, and why any asked-for one is not."""

    choices: SpeedChoices
    device: torch.device
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False
    #: Whether the networks run compiled: set when they are compiled, taken back after the first step
    #: if no compiled graph came of it (dynamo's suppressed errors leave them running eagerly).
    compiled: bool = False
    notes: list[str] = field(default_factory=list)
    #: Compiled frames counted before the networks' first call (``None``: nothing to confirm).
    _frames_before: int | None = None

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast for the forward passes (a no-op context when ``amp`` is off)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def confirm_compiled(self) -> list[str]:
        """After the first step: whether torch.compile really compiled the networks. Returns the
        new notes (none when it did, or when nothing was compiled); later calls return ``[]``."""
        if self._frames_before is None:
            return []
        compiled = _compiled_graphs() - self._frames_before
        self._frames_before = None
        if compiled > 0:
            return []
        self.compiled = False
        self._note(
            "compile",
            "torch.compile failed on the networks (dynamo suppressed the error so that the run "
            "goes on); they run eagerly",
        )
        return self.notes[-1:]

    def backward(self, loss: torch.Tensor) -> None:
        """``loss.backward()`` outside autocast: backward ops run in their forward's dtypes."""
        if self.amp_dtype is None:
            loss.backward()
            return
        with torch.autocast(self.device.type, enabled=False):
            loss.backward()

    def inputs(self, t: torch.Tensor) -> torch.Tensor:
        """A batch tensor on the training device, in the networks' memory format."""
        t = t.to(self.device, non_blocking=True)
        if self.channels_last and t.dim() == 4:
            t = t.contiguous(memory_format=torch.channels_last)
        return t

    def process_settings(self) -> None:
        """Settings that hold for the whole process: threads, the allocator, cuDNN autotuning."""
        c = self.choices
        if c.threads > 0:
            torch.set_num_threads(c.threads)
        if c.allocator and self.device.type == "cpu" and not tune_allocator():
            self._note("allocator", "the allocator tuning needs glibc (Linux); using the default allocator")
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = c.cudnn_benchmark
            # Always set, never left to torch's defaults (TF32 convolutions on, TF32 matmuls off):
            # the plain step is full fp32 unless speed.tf32 says otherwise.
            torch.backends.cuda.matmul.allow_tf32 = c.tf32
            torch.backends.cudnn.allow_tf32 = c.tf32
        elif c.tf32 and "tf32" in c.explicit:
            self._note(
                "tf32", f"TF32 is a CUDA (Ampere and newer) format; {self.device.type} computes in fp32"
            )

    def _note(self, key: str, text: str) -> None:
        self.notes.append(f"speed.{key}: {text}.")


def _can_compile(device: torch.device) -> str | None:
    """Why torch.compile cannot work on ``device`` (``None`` if a trivial function compiles and
    runs there: on a GPU that tests the GPU code generator, Triton, not the host's C++ compiler).

    Errors are not suppressed during the probe, even when an earlier compilation in this process
    suppressed them: a probe that silently ran eagerly would prove nothing.
    """
    if not hasattr(torch, "compile"):
        return "this torch has no torch.compile"
    try:
        from torch import _dynamo

        with _dynamo.config.patch(suppress_errors=False):
            fn = torch.compile(lambda x: x * 2 + 1, dynamic=False)
            got = fn(torch.ones(2, device=device))
        if not torch.equal(got.cpu(), torch.full((2,), 3.0)):
            return "a compiled test function gave a wrong result"
    except Exception as exc:  # missing C++ compiler or Triton, unsupported Python, ...
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'failed'}"
    return None


def _compiled_graphs() -> int:
    """How many graphs torch.compile has compiled in this process so far (a frame whose backend
    failed, with the error suppressed, counts as a frame but produces no graph)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def prepare_step(
    choices: SpeedChoices,
    device: torch.device,
    networks: list[nn.Module],
    can_compile: Callable[[torch.device], str | None] | None = None,
) -> StepSpeed:
    """Apply the process settings and put ``networks`` (G, D) into the chosen form.

    Returns what is in force, with a note for each setting that had to fall back. Whether the
    networks really compiled is known only after their first call: see
    :meth:`StepSpeed.confirm_compiled`.
    """
    speed = StepSpeed(choices, device)
    speed.process_settings()
    if choices.amp == "bf16":
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            speed._note("amp", "this GPU has no bf16 support; training in fp32")
        elif device.type not in ("cuda", "cpu"):
            speed._note("amp", f"bf16 autocast is not supported on {device.type}; training in fp32")
        else:
            speed.amp_dtype = torch.bfloat16
    if choices.channels_last:
        for net in networks:
            net.to(memory_format=torch.channels_last)  # 4-d weights only; others are unchanged
        speed.channels_last = True
    if choices.compile:
        why = (can_compile or _can_compile)(device)
        if why is not None:
            speed._note("compile", f"torch.compile is unavailable ({why}); running eagerly")
        else:
            # A network that dynamo cannot trace runs eagerly instead of stopping the run.
            from torch import _dynamo, _inductor

            _dynamo.config.suppress_errors = True
            _inductor.config.fallback_random = True  # eager's dropout masks: same step, same numbers
            for net in networks:
                net.compile()  # in place: parameter names (and so checkpoints) stay the same
            speed.compiled = True
            speed._frames_before = _compiled_graphs()
    if choices.cuda_graphs:
        why = (
            f"CUDA graphs need a CUDA device, not {device.type}"
            if device.type != "cuda"
            else "capturing the step is not implemented yet (it was never run on a GPU)"
        )
        speed._note("cuda_graphs", f"{why}; the step runs eagerly")
    return speed
