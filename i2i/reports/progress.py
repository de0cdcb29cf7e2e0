"""How a training run reports its progress: a rich bar on a terminal, plain lines elsewhere.

Without a terminal (a log file, CI, ``nohup``) a live bar is cut off or repeated, so the same
figures are printed as one line every ``every`` steps instead. Both print, once and early, how
long the whole run is expected to take, measured on its first steps.
"""

from __future__ import annotations

import math
import time

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

#: The estimate is printed after this many steps or seconds, whichever comes first (and at
#: least two steps, the first one being slower: allocation, cuDNN autotuning).
ESTIMATE_AFTER_STEPS = 20
ESTIMATE_AFTER_SECONDS = 30.0


def duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``3.4 h``, ``2.1 days``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


class TrainingProgress:
    """Shows steps, epoch, speed and losses; ``show=False`` means plain lines, never a bar.

    ``epochs`` is the number of epochs the run will actually reach (``train.max_steps`` may end
    it early), so a short run never claims to be in "epoch 1/200".
    """

    def __init__(
        self,
        console: Console,
        *,
        total_steps: int,
        steps_per_epoch: int,
        every: int,
        show: bool = True,
    ) -> None:
        self.console = console
        self.total = total_steps
        self.epochs = max(1, math.ceil(total_steps / max(steps_per_epoch, 1)))
        self.every = max(1, every)
        self.bar = show and console.is_terminal
        self._first_step: int | None = None
        self._first_time = 0.0
        self._estimated = False
        self._progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[losses]}"),
            console=console,
            disable=not self.bar,
        )
        self._task = None

    def __enter__(self) -> TrainingProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.__exit__(*exc)

    def start(self, step: int, epoch: int) -> None:
        self._first_step, self._first_time = step, time.perf_counter()
        self._task = self._progress.add_task(
            "train",
            total=self.total,
            completed=step,
            epoch=self._epoch(epoch),
            epochs=self.epochs,
            rate="",
            losses="",
        )

    def _epoch(self, epoch: int) -> int:
        return min(epoch + 1, self.epochs)

    def update(self, step: int, epoch: int, losses: str) -> None:
        """After each step (``epoch`` counted from 0)."""
        elapsed = time.perf_counter() - self._first_time
        done = step - (self._first_step or 0)
        rate = done / max(elapsed, 1e-9)
        self._progress.update(
            self._task, completed=step, epoch=self._epoch(epoch), rate=f"{rate:.2f} it/s", losses=losses
        )
        if (
            not self._estimated
            and done >= 2
            and (done >= ESTIMATE_AFTER_STEPS or elapsed >= ESTIMATE_AFTER_SECONDS)
        ):
            self._estimated = True
            left = (self.total - step) / max(rate, 1e-9)
            self.console.print(
                f"{1 / max(rate, 1e-9):.3g} s per step over the first {done} steps: the remaining "
                f"{self.total - step:,} steps take about {duration(left)} (evaluation not included).",
                highlight=False,
            )
        if not self.bar and (step % self.every == 0 or step == self.total):
            left = (self.total - step) / max(rate, 1e-9)
            self.console.print(
                f"step {step:,}/{self.total:,} ({100 * step / max(self.total, 1):.0f}%) "
                f"epoch {self._epoch(epoch)}/{self.epochs} {rate:.2f} it/s, about {duration(left)} left"
                + (f" {escape(losses)}" if losses else ""),
                highlight=False,
                soft_wrap=True,
            )
