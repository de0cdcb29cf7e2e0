"""The pix2pix training loop, generic over registered networks and losses.

Each step: G(A) once; update D on what the losses ask of it; then, with D frozen, update G on the
weighted sum of the losses' generator terms. Losses decide how D is fed (see :mod:`i2i.losses`).
"""

from __future__ import annotations

import contextlib
import functools
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape

from i2i.assembly.build import (
    build_training,
)
from i2i.assembly.host import PluginHost
from i2i.assembly.recipe import Recipe
from i2i.assembly.schedules import step_scheduler
from i2i.errors import CheckpointError, I2IError
from i2i.models import TrainingModel
from i2i.parallel import distributed
from i2i.reports.progress import TrainingProgress
from i2i.runs.checkpoint import (
    SNAPSHOT_NAME,
    STEP_SNAPSHOT_NAME,
    CheckpointWriter,
    copy_off_device,
    prune_snapshots,
    snapshot_name,
    snapshot_of,
    step_snapshot_name,
)
from i2i.runs.rundir import (
    RunLock,
    forget_after,
    plugins_used,
)
from i2i.training.divergence import DivergenceGuard
from i2i.training.resume import load_resume_state
from i2i.training.runlog import RunLog
from i2i.training.state import capture_state, restore_rng, restore_state
from i2i.version import __version__

#: Logged values shown next to the progress bar (all of them go to the log).
SHOWN = ("D_real", "D_fake", "G_cgan", "G_gan", "G_l1", "G_l2")


@dataclass
class RunResult:
    run_dir: Path
    step: int
    epoch: int
    interrupted: bool = False

    @property
    def finished(self) -> bool:
        return not self.interrupted


class Trainer:
    """Trains one recipe into one run directory; ``resume=True`` continues from its latest.pt."""

    def __init__(
        self,
        recipe: Recipe,
        host: PluginHost,
        run_dir: Path,
        *,
        resume: bool = False,
        console: Console | None = None,
        show_progress: bool = True,
    ) -> None:
        self.recipe = recipe
        self.host = host
        self.run_dir = Path(run_dir)
        self.console = console or Console(stderr=True)
        self.world = distributed.world()
        self.show_progress = show_progress and self.world.is_main
        self.train_cfg = recipe["train"]
        state = None
        if resume:  # rank 0 reads the checkpoint; the others need not see the run directory
            on_main = self.world.is_main
            state = self.world.broadcast(load_resume_state(self.run_dir, recipe, host) if on_main else None)
        parts = build_training(recipe, host)
        for note in parts.notes:
            self.console.print(f"[yellow]Note: {escape(note)}[/yellow]", soft_wrap=True)
        self.device = parts.device
        self.items, self.sampler, self.loader = parts.items, parts.sampler, parts.loader
        self.steps_per_epoch = parts.steps_per_epoch
        self.model: TrainingModel = parts.model
        self.speed = parts.speed
        self.optimised = parts.optimised
        dataset = parts.dataset
        seed = recipe["experiment"]["seed"]
        self.total_epochs = self.train_cfg["epochs"] + self.train_cfg["epochs_decay"]
        self.epoch = 0
        self.batch_in_epoch = 0
        self.step = 0
        self._elapsed_before = 0.0
        self._pending_log: dict[str, Any] = {}
        self._saved: tuple[int, float] = (-1, time.perf_counter())  # step and time of latest.pt
        self.writer = CheckpointWriter()  # rank 0's checkpoints, written in the background
        self._epoch_loss: list[Any] = [0.0, 0]  # sum and count of G's loss this epoch (plateau policy)
        self._session_start = time.perf_counter()
        self.guard = DivergenceGuard(
            self.run_dir, skip=bool(self.train_cfg.get("skip_nonfinite", False)), agree_all=self.world.all
        )
        main, latent = self.world.is_main, self.model.latent_dim
        self.runlog = RunLog(self.run_dir, recipe, host, dataset, self.device, latent, is_main=main)
        if state is not None:
            self._restore(state)
        #: The networks as the step calls them (DDP-wrapped when several processes train).
        replicated = self.model.replicated()
        wrapped = {id(p) for net in replicated for p in net.parameters()}
        others = [p for p in self.model.parameters() if p.requires_grad and id(p) not in wrapped]
        self.replicas = distributed.replicate(replicated, others, self.device, seed, self.step)
        #: Set by the signal handler, never reset: this process was asked to stop.
        self._signal_seen = False
        #: What all processes agreed on (the same on every rank): stop after this step.
        self._stop_requested = False
        self.lock: RunLock | None = None  # set by start_run, released when run() ends

    # -- state -----------------------------------------------------------------------------------
    def forget_after_checkpoint(self) -> None:
        """On resume: drop what a hard kill left after the checkpoint being resumed from (log
        lines of steps that are trained again, temporary checkpoint files). Call it under the lock."""
        forget_after(self.run_dir, self.step)

    def release(self) -> None:
        """Let another process train this run directory."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def state_dict(self) -> dict[str, Any]:
        m = self.model
        state = {
            "i2i_version": __version__,
            "recipe": self.recipe,
            "plugins": plugins_used(self.recipe, self.host),
            "io": m.io("AtoB"),
            **({"io_BtoA": m.io("BtoA")} if "BtoA" in m.translators else {}),
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "step": self.step,
            "elapsed": self.elapsed(),
            "pending_log": {k: float(v) for k, v in self._pending_log.items()},
            "epoch_loss": [float(self._epoch_loss[0]), self._epoch_loss[1]],
            "skipped_nonfinite": self.guard.skipped,
            "world_size": self.world.size,  # batch_in_epoch counts batches of this many processes
            **capture_state(m, self.optimised),
        }
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        m = self.model
        try:
            snapshot_note = restore_state(m, self.optimised, state)
            if snapshot_note and self.world.is_main:
                self.console.print(f"[yellow]Note: {escape(snapshot_note)}[/yellow]", soft_wrap=True)
            self.epoch, self.step = int(state["epoch"]), int(state["step"])
            self.batch_in_epoch, note = distributed.resume_position(state, self.recipe["data"]["batch_size"])
            if note and self.world.is_main:
                self.console.print(f"[yellow]Note: {escape(note)}[/yellow]", soft_wrap=True)
            self._elapsed_before = float(state.get("elapsed", 0.0))
            self._pending_log = dict(state.get("pending_log", {}))
            self._epoch_loss = list(state.get("epoch_loss", [0.0, 0]))
            self.guard.skipped = int(state.get("skipped_nonfinite", 0))
            rng_note = restore_rng(state["rng"])
            if rng_note and self.world.is_main:
                self.console.print(f"[yellow]Note: {escape(rng_note)}[/yellow]", soft_wrap=True)
        except (KeyError, RuntimeError, ValueError, TypeError) as exc:
            raise CheckpointError(
                f"{state.get('path')} does not match this recipe's networks: {exc}"
            ) from None

    # The optimisers, by role; ``opt_G``/``opt_D`` stay attributes for plugins and tests.
    @property
    def opt_G(self) -> torch.optim.Optimizer:
        return self.optimised["G"].optimizer

    @property
    def opt_D(self) -> torch.optim.Optimizer | None:
        part = self.optimised.get("D")
        return part.optimizer if part is not None else None

    def save(self, name: str = "latest.pt", state: dict[str, Any] | None = None) -> Path:
        """Write a checkpoint in the background: ``latest.pt`` in full (exact resume), an epoch
        snapshot (``epoch_NNNN.pt``) or a step snapshot (``step_NNNNNNN.pt``) without the
        optimisers' and schedules' states, older epoch snapshots beyond ``train.keep_last`` removed
        once one is written. ``latest.pt`` is not rewritten for a
        step it already holds. The state is copied off the device now (``state``: such a copy made
        by :meth:`state_off_device`), so training goes on during the write; :meth:`wait_for_saves`
        waits for the files."""
        path = self.run_dir / "checkpoints" / name
        held = path.is_file() or self.writer.pending(path)
        if name == "latest.pt" and self._saved[0] == self.step and held:
            return path
        self.guard.check_savable(self._pending_log, self.model.named_children(), self.step)
        if self.world.is_main:  # every rank checks (equal weights), rank 0 writes
            state = state if state is not None else self.state_off_device()
            then = None
            if SNAPSHOT_NAME.fullmatch(name) or STEP_SNAPSHOT_NAME.fullmatch(name):
                state = snapshot_of(state)
            keep = int(self.train_cfg.get("keep_last", 0))
            if keep > 0 and SNAPSHOT_NAME.fullmatch(name):  # step snapshots are kept for good
                then = functools.partial(prune_snapshots, path.parent, keep)
            self.writer.save(state, path, then)
        if name == "latest.pt":
            self._saved = (self.step, time.perf_counter())
        return path

    def state_off_device(self) -> dict[str, Any]:
        """:meth:`state_dict` as CPU tensors of its own (the step may change the originals)."""
        return copy_off_device(self.state_dict())

    def wait_for_saves(self) -> None:
        """Wait until every checkpoint asked for is on disk; raises a failed write's CheckpointError."""
        self.writer.wait()

    # -- one step --------------------------------------------------------------------------------
    def _draw_z(self, batch: int) -> torch.Tensor | None:
        if self.model.latent_dim <= 0:
            return None
        return torch.randn(batch, self.model.latent_dim, device=self.device)

    def train_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The model's step on ``batch`` (pix2pix: one D update, one G update); returns the logged
        scalars (0-d tensors)."""
        with self.speed.autocast():  # speed.amp; backward passes leave it (speed.backward)
            logs = self._step(batch)
        for note in self.speed.confirm_compiled():  # after the first step: did compilation happen?
            if self.world.is_main:
                self.console.print(f"[yellow]Note: {escape(note)}[/yellow]", soft_wrap=True)
        return logs

    def _step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        self.guard.start_step()
        return self.model.train_step(batch, _Tools(self))

    # -- the loop --------------------------------------------------------------------------------
    @contextmanager
    def _graceful_stop(self) -> Iterator[None]:
        """First Ctrl-C (or SIGTERM) finishes the current step and saves; a second one aborts."""

        def handler(signum, frame):
            if self._signal_seen:
                raise KeyboardInterrupt
            self._signal_seen = True
            self.console.print(
                "[yellow]Stopping after this step and saving a checkpoint "
                "(press Ctrl-C again to abort without saving)...[/yellow]"
            )

        previous = {}
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread: no handlers, plain behaviour
            pass
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    def total_steps(self) -> int:
        steps = self.total_epochs * self.steps_per_epoch
        cap = self.train_cfg["max_steps"]
        return min(steps, cap) if cap > 0 else steps

    def run(self) -> RunResult:
        """Train to the end (or to a Ctrl-C), wait for the checkpoints being written, then release
        the run directory's lock."""
        try:
            result = self._run()
            self.wait_for_saves()  # before anyone (evaluation, a resume) reads them
            return result
        except BaseException:
            with contextlib.suppress(Exception):  # the error that stopped the run is the one to show
                self.wait_for_saves()
            raise
        finally:
            self.release()

    def _run(self) -> RunResult:
        total_steps = self.total_steps()
        cfg = self.train_cfg
        sums = self._pending_log  # losses since the last log line (kept across a resume)
        start = self._session_start = time.perf_counter()
        save_every_s = 60 * cfg["checkpoint_minutes"]
        snapshot_steps = set(cfg.get("snapshot_steps", []))
        self._saved = (self._saved[0], start)
        last: dict[str, float] = {}
        shown = ""
        progress = TrainingProgress(
            self.console,
            total_steps=total_steps,
            steps_per_epoch=self.steps_per_epoch,
            every=cfg["log_every"],
            show=self.show_progress,
        )
        if not self.world.is_main:
            progress = contextlib.nullcontext(progress)  # one report, from rank 0
        for net in self.model.networks().values():
            net.train()
        agreement = distributed.Agreement(self.world)
        with self._graceful_stop(), progress, self.runlog.opened():
            if self.world.is_main:
                progress.start(self.step, self.epoch)
            while self.epoch < self.total_epochs and self.step < total_steps and not self._stop_requested:
                self.sampler.set_epoch(self.epoch, self.batch_in_epoch * self.loader.batch_size)
                for batch in self._batches():
                    logs = self.train_step(batch)
                    self.step += 1
                    self.batch_in_epoch += 1
                    if not self.guard.end_step():  # skipped steps are counted, kept out of the averages
                        for k, v in logs.items():
                            sums[k] = sums.get(k, 0.0) + v
                        sums["_steps"] = sums.get("_steps", 0) + 1
                        self._epoch_loss[0] = self._epoch_loss[0] + logs["G_total"]
                        self._epoch_loss[1] += 1
                    now = time.perf_counter()
                    if self.step % cfg["log_every"] == 0 or self.step == total_steps:
                        n = sums.pop("_steps", 0)
                        last = {k: float(v) / n for k, v in sums.items()} if n else {}
                        last = self.world.mean(last)  # the mean over all processes' items
                        self.guard.check_losses(last, self.step)  # before anything NaN is logged or saved
                        if self.guard.skip:
                            last["skipped_nonfinite"] = self.guard.skipped
                        self._log(last)
                        sums.clear()
                        shown = " ".join(f"{k}={v:.3f}" for k, v in last.items() if k in SHOWN)
                    save_due = save_every_s > 0 and now - self._saved[1] > save_every_s
                    # A stop (a signal to any rank) and the timer's save must happen on all ranks at once.
                    # The handler only sets _signal_seen: had it set _stop_requested, a signal landing
                    # while the agreement runs would be overwritten by the (older) agreed value and lost.
                    # With several processes the answer comes one step later (without blocking).
                    self._stop_requested, save_due = agreement.exchange(self._signal_seen, save_due)
                    if save_due:
                        self.save()  # mid-epoch too: a hard kill loses at most these minutes
                    if self.step in snapshot_steps:
                        self.save(step_snapshot_name(self.step))
                    self.writer.check()  # a background write that failed (a full disk) stops the run
                    if cfg["sample_every"] > 0 and self.step % cfg["sample_every"] == 0:
                        self.write_samples()
                    if self.world.is_main:
                        progress.update(self.step, self.epoch, shown)
                    if self.step >= total_steps or self._stop_requested:
                        break
                if self.batch_in_epoch >= self.steps_per_epoch:
                    self._end_epoch(float(self._epoch_loss[0]) / max(self._epoch_loss[1], 1))
            self.write_samples()
        agreement.finish(2)  # the last step's agreement: nothing may be left pending in the group
        self.runlog.close()
        self.save()
        return RunResult(self.run_dir, self.step, self.epoch, interrupted=self._stop_requested)

    def _batches(self) -> Iterator[dict[str, Any]]:
        """The epoch's batches; a data error saves the progress so far before it stops the run."""
        # Starting a DataLoader iterator draws its base seed from the global RNG. Jitter is seeded
        # per (seed, epoch, index) anyway, so keep that draw off the training stream: otherwise a
        # resumed run (a new iterator mid-epoch) would give dropout and z other random numbers.
        with torch.random.fork_rng(devices=[]):
            batches = iter(self.loader)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except I2IError as exc:  # between two steps, so the state is consistent
                self.save()
                message = str(exc)
                if "Original Traceback" in message:  # raised in a DataLoader worker
                    message = message.rsplit(f"{type(exc).__name__}: ", 1)[-1].strip()
                raise type(exc)(
                    f"{message} Training stopped at step {self.step} and its progress is saved: "
                    f"fix the data, then continue with 'i2i run --resume {self.run_dir}'."
                ) from None
            yield batch

    def elapsed(self) -> float:
        """Training seconds so far, across resumed sessions."""
        return self._elapsed_before + time.perf_counter() - self._session_start

    def _log(self, values: dict[str, float]) -> None:
        lrs = {f"lr_{n}": p.optimizer.param_groups[0]["lr"] for n, p in self.optimised.items() if p.logged}
        self.runlog.record(self.step, self.epoch + 1, lrs, values, self.elapsed())

    def _end_epoch(self, epoch_metric: float) -> None:
        self._epoch_loss = [0.0, 0]
        for part in self.optimised.values():
            step_scheduler(part.scheduler, epoch_metric)
        self.epoch += 1
        self.batch_in_epoch = 0
        every = self.train_cfg["checkpoint_every"]
        snapshot = every > 0 and self.epoch % every == 0
        # One copy off the device for both files: the snapshot is latest.pt less the optimisers.
        state = self.state_off_device() if snapshot and self.world.is_main else None
        self.save(state=state)
        if snapshot:
            self.save(snapshot_name(self.epoch), state=state)

    # -- outputs ---------------------------------------------------------------------------------
    def write_samples(self) -> Path:
        """The sample grid of this step (rank 0 writes it)."""
        return self.runlog.write_samples(self.model.translator("AtoB"), self.step)


class _Tools:
    """:class:`i2i.StepTools` for one step of a :class:`Trainer`."""

    def __init__(self, trainer: Trainer) -> None:
        self._trainer = trainer
        self.step = trainer.step + 1
        self.device = trainer.device
        self.optimisers = {name: part.optimizer for name, part in trainer.optimised.items()}
        self.inputs = trainer.speed.inputs
        self.backward = trainer.speed.backward
        self.replica = trainer.replicas.replica
        self.sync_gradients = trainer.replicas.sync_loss_gradients
        self.sample_z = trainer._draw_z

    def accept(self, loss: torch.Tensor) -> bool:
        return self._trainer.guard.accept(loss, self.step)
