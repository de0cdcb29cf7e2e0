"""The pix2pix training loop, generic over registered networks and losses.

Each step: G(A) once; update D on what the losses ask of it; then, with D frozen, update G on the
weighted sum of the losses' generator terms. Losses decide how D is fed (see :mod:`i2i.losses`).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import random
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape

from i2i import __version__
from i2i.assembly.build import (
    Model,
    build_dataset,
    build_metrics,
    build_training,
    describe_evaluation,
    describe_split,
    loss_parameters,
)
from i2i.assembly.host import PluginHost
from i2i.assembly.recipe import Recipe, dumps, resolve
from i2i.assembly.schedules import step_scheduler
from i2i.data.imaging import save_triplet_grid
from i2i.data.scan import check_split
from i2i.errors import CheckpointError, DataError, I2IError
from i2i.losses import StepContext
from i2i.parallel import distributed
from i2i.reports.progress import TrainingProgress
from i2i.runs.checkpoint import load_checkpoint, save_checkpoint
from i2i.runs.rundir import (
    RunLock,
    check_resume_dir,
    forget_after,
    new_run_dir,
    plugins_used,
    remove_new_run_dir,
)
from i2i.sampling import generate
from i2i.training.divergence import DivergenceGuard

#: Logged values shown next to the progress bar (all of them go to the log).
SHOWN = ("D_real", "D_fake", "G_cgan", "G_gan", "G_l1", "G_l2")

#: Checkpoint key suffix of each optimised part (opt_G, sched_G, opt_D, ..., opt_L for the losses').
OPTIMISED_KEYS = {"G": "G", "D": "D", "losses": "L"}

#: Recipe sections that must not change when a run is resumed. ``optim`` too: the optimisers and
#: schedules are restored from the checkpoint, so a new learning rate would be recorded but not used.
FROZEN_ON_RESUME = ("data", "generator", "discriminator", "losses", "optim")


def changed_on_resume(saved: Recipe, recipe: Recipe, host: PluginHost) -> list[str]:
    """The frozen sections in which ``recipe`` differs from a checkpoint's ``saved`` recipe.

    The saved recipe is resolved again first, so a setting added to a component since the run
    started (with a default that keeps the old behaviour) does not count as a change.
    """
    try:
        saved = resolve(copy.deepcopy(saved), host, source="the checkpoint's recipe")
    except I2IError:
        pass  # compare as stored: whatever no longer resolves differs anyway
    return [s for s in FROZEN_ON_RESUME if saved.get(s) != recipe.get(s)]


def set_requires_grad(net: torch.nn.Module | None, flag: bool) -> None:
    if net is not None:
        for p in net.parameters():
            p.requires_grad_(flag)


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
            state = self.world.broadcast(self._load_resume_state() if self.world.is_main else None)
        parts = build_training(recipe, host)
        for note in parts.notes:
            self.console.print(f"[yellow]Note: {escape(note)}[/yellow]", soft_wrap=True)
        self.device = parts.device
        self.items, self.sampler, self.loader = parts.items, parts.sampler, parts.loader
        self.steps_per_epoch = parts.steps_per_epoch
        self.model: Model = parts.model
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
        self._epoch_loss: list[Any] = [0.0, 0]  # sum and count of G's loss this epoch (plateau policy)
        self._session_start = time.perf_counter()
        self.guard = DivergenceGuard(
            self.run_dir, skip=bool(self.train_cfg.get("skip_nonfinite", False)), agree_all=self.world.all
        )
        self.sample_inputs = self._sample_batch(dataset)
        self.sample_z = None
        if self.model.latent_dim > 0:
            gen = torch.Generator().manual_seed(seed + 1)
            self.sample_z = torch.randn(len(self.sample_inputs[0]), self.model.latent_dim, generator=gen).to(
                self.device
            )
        if state is not None:
            self._restore(state)
        #: G and D as the step calls them (DDP-wrapped when several processes train).
        self.replicas = distributed.replicate(
            self.model.generator,
            self.model.discriminator,
            loss_parameters(self.model),
            self.device,
            seed,
            self.step,
        )
        #: Set by the signal handler, never reset: this process was asked to stop.
        self._signal_seen = False
        #: What all processes agreed on (the same on every rank): stop after this step.
        self._stop_requested = False
        self.lock: RunLock | None = None  # set by start_run, released when run() ends

    # -- state -----------------------------------------------------------------------------------
    def _load_resume_state(self) -> dict[str, Any]:
        path = self.run_dir / "checkpoints" / "latest.pt"
        if not path.is_file():
            raise CheckpointError(
                f"Cannot resume: {path} does not exist (was {self.run_dir} created by 'i2i run'?)."
            )
        state = load_checkpoint(path)
        changed = changed_on_resume(state["recipe"], self.recipe, self.host)
        if changed:
            raise I2IError(
                f"Cannot resume {self.run_dir}: the recipe's [{'], ['.join(changed)}] differ from "
                f"the run's (saved in {self.run_dir / 'recipe.toml'}). Resume with that recipe, "
                "or start a new run."
            )
        return state

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
            "io": {"input_nc": m.input_nc, "output_nc": m.output_nc},
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "step": self.step,
            "elapsed": self.elapsed(),
            "pending_log": {k: float(v) for k, v in self._pending_log.items()},
            "epoch_loss": [float(self._epoch_loss[0]), self._epoch_loss[1]],
            "skipped_nonfinite": self.guard.skipped,
            "world_size": self.world.size,  # batch_in_epoch counts batches of this many processes
            "generator": m.generator.state_dict(),
            "losses": [loss.state_dict() for _, loss in m.losses],
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "python": random.getstate(),
            },
        }
        if m.discriminator is not None:
            state["discriminator"] = m.discriminator.state_dict()
        for key, part in self.optimised.items():
            state[f"opt_{OPTIMISED_KEYS[key]}"] = part.optimizer.state_dict()
            state[f"sched_{OPTIMISED_KEYS[key]}"] = part.scheduler.state_dict()
        return state

    def _restore(self, state: dict[str, Any]) -> None:
        m = self.model
        try:
            m.generator.load_state_dict(state["generator"])
            if m.discriminator is not None:
                m.discriminator.load_state_dict(state["discriminator"])
            loss_states = state.get("losses", [{} for _ in m.losses])
            for (_, loss), loss_state in zip(m.losses, loss_states, strict=True):
                loss.load_state_dict(loss_state)
            for key, part in self.optimised.items():
                part.optimizer.load_state_dict(state[f"opt_{OPTIMISED_KEYS[key]}"])
                part.scheduler.load_state_dict(state[f"sched_{OPTIMISED_KEYS[key]}"])
            self.epoch, self.step = int(state["epoch"]), int(state["step"])
            self.batch_in_epoch, note = distributed.resume_position(state, self.recipe["data"]["batch_size"])
            if note and self.world.is_main:
                self.console.print(f"[yellow]Note: {escape(note)}[/yellow]", soft_wrap=True)
            self._elapsed_before = float(state.get("elapsed", 0.0))
            self._pending_log = dict(state.get("pending_log", {}))
            self._epoch_loss = list(state.get("epoch_loss", [0.0, 0]))
            self.guard.skipped = int(state.get("skipped_nonfinite", 0))
            torch.set_rng_state(state["rng"]["torch"])
            if state["rng"]["cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state["rng"]["cuda"])
            py = state["rng"]["python"]
            random.setstate((py[0], tuple(py[1]), py[2]))
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

    def save(self, name: str = "latest.pt") -> Path:
        """Write a checkpoint; ``latest.pt`` is not rewritten for a step it already holds."""
        path = self.run_dir / "checkpoints" / name
        if name == "latest.pt" and self._saved[0] == self.step and path.is_file():
            return path
        m = self.model
        parts = [("generator", m.generator), ("discriminator", m.discriminator)]
        self.guard.check_savable(
            self._pending_log, parts + [(f"loss {n}", loss) for n, loss in m.losses], self.step
        )
        if self.world.is_main:  # every rank checks (equal weights), rank 0 writes
            save_checkpoint(self.state_dict(), path)
        if name == "latest.pt":
            self._saved = (self.step, time.perf_counter())
        return path

    # -- one step --------------------------------------------------------------------------------
    def _draw_z(self, batch: int) -> torch.Tensor | None:
        if self.model.latent_dim <= 0:
            return None
        return torch.randn(batch, self.model.latent_dim, device=self.device)

    def train_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """One D update and one G update on ``batch``; returns the logged scalars (0-d tensors)."""
        with self.speed.autocast():  # speed.amp; backward passes leave it (speed.backward)
            return self._step(batch)

    def _step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        G, D = self.replicas.generator, self.replicas.discriminator
        self.guard.start_step()
        real_A = self.speed.inputs(batch["A"])
        real_B = self.speed.inputs(batch["B"])
        z = self._draw_z(real_A.shape[0])
        fake_B = generate(G, real_A, z)
        ctx = StepContext(real_A, real_B, G, D, fake_B, z, self._draw_z)

        if D is not None:
            set_requires_grad(D, True)
            self.opt_D.zero_grad(set_to_none=True)
            terms = [t for _, loss in self.model.losses if (t := loss.discriminator_loss(ctx)) is not None]
            if terms:
                loss_D = torch.stack(terms).sum()
                self.speed.backward(loss_D)
                if self.guard.accept(loss_D, self.step + 1):
                    self.opt_D.step()
                ctx.log("D_total", loss_D)
            set_requires_grad(D, False)

        ctx.discriminator = self.model.discriminator  # frozen: called without DDP (distributed.Replicas)
        generator_side = [p for k, p in self.optimised.items() if k != "D"]  # G and losses' own nets
        for part in generator_side:
            part.optimizer.zero_grad(set_to_none=True)
        total = None
        for name, loss in self.model.losses:
            term = loss.generator_loss(ctx)
            if term is None:
                continue
            ctx.log(f"G_{name}", term)
            weighted = loss.weight * term
            total = weighted if total is None else total + weighted
        if total is None:
            raise I2IError("None of the recipe's losses gives the generator anything to learn.")
        self.speed.backward(total)
        self.replicas.sync_loss_gradients()
        if self.guard.accept(total, self.step + 1):
            for part in generator_side:
                part.optimizer.step()
        ctx.log("G_total", total)
        return ctx.logs

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
        """Train to the end (or to a Ctrl-C), then release the run directory's lock."""
        try:
            return self._run()
        finally:
            self.release()

    def _run(self) -> RunResult:
        writer = self._tensorboard()
        log_path = self.run_dir / "log.jsonl"
        total_steps = self.total_steps()
        cfg = self.train_cfg
        sums = self._pending_log  # losses since the last log line (kept across a resume)
        start = self._session_start = time.perf_counter()
        save_every_s = 60 * cfg["checkpoint_minutes"]
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
        for net in (self.model.generator, self.model.discriminator):
            if net is not None:
                net.train()
        log_file = log_path if self.world.is_main else Path(os.devnull)  # rank 0 writes the log
        with self._graceful_stop(), progress, log_file.open("a", encoding="utf-8") as log:
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
                        self._log(log, writer, last, self.elapsed())
                        sums.clear()
                        shown = " ".join(f"{k}={v:.3f}" for k, v in last.items() if k in SHOWN)
                    save_due = save_every_s > 0 and now - self._saved[1] > save_every_s
                    # A stop (a signal to any rank) and the timer's save must happen on all ranks at once.
                    # The handler only sets _signal_seen: had it set _stop_requested, a signal landing
                    # while agree() runs would be overwritten by the (older) agreed value and lost.
                    self._stop_requested, save_due = self.world.agree(self._signal_seen, save_due)
                    if save_due:
                        self.save()  # mid-epoch too: a hard kill loses at most these minutes
                    if cfg["sample_every"] > 0 and self.step % cfg["sample_every"] == 0:
                        self.write_samples(writer)
                    if self.world.is_main:
                        progress.update(self.step, self.epoch, shown)
                    if self.step >= total_steps or self._stop_requested:
                        break
                if self.batch_in_epoch >= self.steps_per_epoch:
                    self._end_epoch(float(self._epoch_loss[0]) / max(self._epoch_loss[1], 1))
        self.write_samples(writer)
        self.save()
        if writer is not None:
            writer.close()
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

    def _log(self, log, writer, values: dict[str, float], elapsed: float) -> None:
        record = {
            "step": self.step,
            "epoch": self.epoch + 1,
            "lr_G": self.opt_G.param_groups[0]["lr"],
            "time": round(elapsed, 3),
        }
        if self.opt_D is not None:
            record["lr_D"] = self.opt_D.param_groups[0]["lr"]
        record.update(values)
        log.write(json.dumps(record) + "\n")
        log.flush()
        if writer is not None:
            for k, v in record.items():
                if k not in ("step", "epoch", "time"):
                    writer.add_scalar(k, v, self.step)

    def _end_epoch(self, epoch_metric: float) -> None:
        self._epoch_loss = [0.0, 0]
        for part in self.optimised.values():
            step_scheduler(part.scheduler, epoch_metric)
        self.epoch += 1
        self.batch_in_epoch = 0
        self.save()
        every = self.train_cfg["checkpoint_every"]
        if every > 0 and self.epoch % every == 0:
            self.save(f"epoch_{self.epoch:04d}.pt")

    # -- outputs ---------------------------------------------------------------------------------
    def _sample_batch(self, train_set) -> tuple[torch.Tensor, torch.Tensor]:
        """A fixed set of held-out inputs (training ones if there is no eval split) for grids."""
        n = max(1, self.train_cfg["num_samples"])
        try:
            source = build_dataset(self.recipe, self.host, self.recipe["eval"]["split"])
        except I2IError:
            source = train_set
        if len(source) == 0:
            source = train_set
        with torch.random.fork_rng(devices=[]):  # jitter here must not shift the training RNG
            torch.manual_seed(self.recipe["experiment"]["seed"])
            items = [source[i] for i in range(min(n, len(source)))]
        return (torch.stack([it["A"] for it in items]), torch.stack([it["B"] for it in items]))

    @torch.no_grad()
    def write_samples(self, writer=None) -> Path:
        path = self.run_dir / "samples" / f"step_{self.step:07d}.png"
        if not self.world.is_main:
            return path
        G = self.model.generator
        was_training = G.training
        G.eval()
        A, B = self.sample_inputs
        A_dev = A.to(self.device)
        fake = generate(G, A_dev, self.sample_z)
        G.train(was_training)
        save_triplet_grid(list(zip(A, fake.cpu(), B, strict=True)), path)
        if writer is not None:
            from torchvision.io import decode_image

            writer.add_image("samples", decode_image(str(path)), self.step)
        return path

    def _tensorboard(self):
        if not self.train_cfg["tensorboard"] or not self.world.is_main:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # the optional 'tensorboard' extra is not installed
            return None
        return SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))


def check_eval_split(recipe: Recipe, host: PluginHost, console: Console) -> None:
    """Say how large the evaluation will be, and find bad files of its split now, not after hours
    of training. A missing split is not an error here: the run then ends with its report and a hint.
    """
    split = recipe["eval"]["split"]
    try:
        dataset = build_dataset(recipe, host, split)
    except DataError:
        console.print(escape(describe_evaluation(recipe, None)), soft_wrap=True, highlight=False)
        return
    console.print(escape(describe_evaluation(recipe, len(dataset))), soft_wrap=True, highlight=False)
    _, notes = check_split(dataset, describe_split(recipe, split), recipe["data"]["skip_bad"])
    for note in notes:
        console.print(f"[yellow]Note: {escape(note)}[/yellow]", soft_wrap=True)


def start_run(
    recipe: Recipe,
    host: PluginHost,
    *,
    resume_dir: Path | None = None,
    console: Console | None = None,
    show_progress: bool = True,
) -> Trainer:
    """Create (or reopen) the run directory, record the recipe and plugins, and make a Trainer.

    Evaluation metrics are built first, so that one that cannot work (FID without its weights file)
    stops the run before training rather than after it.
    """
    world = distributed.world()  # with several processes only rank 0 touches the run directory
    if recipe["train"]["evaluate"] and world.is_main:
        build_metrics(recipe["eval"]["metrics"], host)
        check_eval_split(recipe, host, console or Console(stderr=True))
    output_dir = Path(recipe["experiment"]["output_dir"])
    output_dir_existed = output_dir.is_dir()
    if resume_dir is not None:
        run_dir = check_resume_dir(Path(resume_dir)) if world.is_main else Path(resume_dir)
    else:
        run_dir = world.broadcast(new_run_dir(recipe) if world.is_main else None)
    lock = RunLock(run_dir)
    try:
        if world.is_main:
            lock.acquire()
        trainer = Trainer(
            recipe,
            host,
            run_dir,
            resume=resume_dir is not None,
            console=console,
            show_progress=show_progress,
        )
    except BaseException:
        lock.release()
        if resume_dir is None and world.is_main:  # nothing was trained: leave no empty run directory
            remove_new_run_dir(run_dir, output_dir, output_dir_existed)
        raise
    trainer.lock = lock
    if not world.is_main:
        return trainer
    if resume_dir is not None:
        trainer.forget_after_checkpoint()
    # Rewritten on resume too: [train] and [eval] may change then, and 'i2i run --resume RUN_DIR'
    # continues with this file, --set values included.
    (run_dir / "recipe.toml").write_text(dumps(recipe), encoding="utf-8")
    if resume_dir is None:
        environment = {
            "i2i": __version__,
            "torch": torch.__version__,
            "python": sys.version.split()[0],
            "device": str(trainer.device),
            "processes": world.size,
        }
        (run_dir / "plugins.json").write_text(
            json.dumps({"plugins": plugins_used(recipe, host), "environment": environment}, indent=2) + "\n",
            encoding="utf-8",
        )
    return trainer
