"""Non-finite losses and weights: stop a diverging run without saving it, or skip its bad steps.

By default every optimiser step is applied and a device-side flag records the first step whose
loss was NaN or infinite; it is read (one sync) only when a log line or a checkpoint is written, so
steps need no synchronisation. The run then stops naming that step and the terms, and nothing
trained after it is ever saved. With ``train.skip_nonfinite`` each loss is checked before its
optimiser step (one sync per update) and a bad step is skipped and counted instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch import nn

from i2i.errors import TrainingDiverged


class DivergenceGuard:
    """Watches the losses of one run; ``agree_all(flag)`` makes all processes skip together."""

    def __init__(self, run_dir: Path, *, skip: bool, agree_all: Callable[[bool], bool]) -> None:
        self.run_dir = Path(run_dir)
        self.skip = skip
        self.agree_all = agree_all
        self.skipped = 0  # steps skipped for non-finite losses, across resumes (checkpointed)
        self.step_skipped = False  # the current step was skipped
        self._first_bad: torch.Tensor | None = None  # on the device; -1 while all steps were finite

    def start_step(self) -> None:
        self.step_skipped = False

    def end_step(self) -> bool:
        """Count the step if it was skipped; returns whether it was."""
        self.skipped += self.step_skipped
        return self.step_skipped

    def accept(self, loss: torch.Tensor, step: int) -> bool:
        """Whether to apply the optimiser step for ``loss`` (``step`` counted from 1)."""
        finite = torch.isfinite(loss.detach())
        if self.skip:
            if self.agree_all(bool(finite)):  # all ranks skip together: their gradients are shared
                return True
            self.step_skipped = True
            return False
        if self._first_bad is None:
            self._first_bad = torch.full((), -1, dtype=torch.long, device=finite.device)
        self._first_bad = torch.where(~finite & (self._first_bad < 0), step, self._first_bad)
        return True

    def _bad_step(self) -> int | None:
        if self._first_bad is None:
            return None
        step = int(self._first_bad)  # the one sync, at log or save time
        return step if step >= 0 else None

    def diverged(self, what: str, step: int) -> TrainingDiverged:
        latest = self.run_dir / "checkpoints" / "latest.pt"
        kept = (
            f"The last checkpoint, {latest}, holds finite weights and is kept."
            if latest.is_file()
            else "No checkpoint was written."
        )
        return TrainingDiverged(
            f"Training in {self.run_dir} diverged: {what} Training stopped at step {step}. {kept} "
            "Lower optim.lr or train.init_gain, check the data, or set train.skip_nonfinite = true "
            "to skip such steps."
        )

    def check_losses(self, values: dict[str, float], step: int) -> None:
        """Raise :class:`TrainingDiverged` if a step up to ``step`` had non-finite losses."""
        bad = self._bad_step()
        terms = [k for k, v in values.items() if k != "_steps" and not math.isfinite(float(v))]
        if bad is None and not any(k in ("G_total", "D_total") for k in terms):
            return
        at = f"step {bad}" if bad is not None else f"a step up to {step}"
        raise self.diverged(f"{at} gave non-finite losses ({', '.join(terms) or 'G_total'}).", step)

    def check_savable(
        self, pending: dict[str, float], parts: Iterable[tuple[str, nn.Module | None]], step: int
    ) -> None:
        """Never let a checkpoint hold a model trained on a non-finite step, or non-finite weights."""
        self.check_losses(pending, step)
        tensors = {
            name: [t for t in (*net.parameters(), *net.buffers()) if t.is_floating_point()]
            for name, net in parts
            if net is not None
        }
        # One sum per tensor screens them all: NaN and infinity survive a sum, and a sum of finite
        # weights is finite unless it overflows, which the exact check below then clears. On the CPU
        # this costs a fifth of an isfinite() per tensor, and every save pays it.
        sums = [t.sum().double() for ts in tensors.values() for t in ts]
        if not sums or bool(torch.isfinite(torch.stack(sums)).all()):
            return
        bad = [name for name, ts in tensors.items() if not all(bool(torch.isfinite(t).all()) for t in ts)]
        if not bad:
            return  # a sum overflowed; every weight is finite
        raise self.diverged(
            f"the weights of the {', '.join(bad)} became non-finite by step {step} although the "
            "losses were finite (an infinite learning rate or initial gain?).",
            step,
        )
