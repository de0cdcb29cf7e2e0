"""What a training run writes besides checkpoints: ``log.jsonl``, TensorBoard events, sample grids.

Only rank 0 writes (several processes train one run); the others get a log that goes nowhere.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from i2i.assembly.build import build_dataset
from i2i.assembly.host import PluginHost
from i2i.assembly.recipe import Recipe
from i2i.data.imaging import save_triplet_grid
from i2i.errors import I2IError
from i2i.sampling import generate


class RunLog:
    """One run's log lines and sample grids; :meth:`opened` holds the files while training."""

    def __init__(
        self,
        run_dir: Path,
        recipe: Recipe,
        host: PluginHost,
        train_set: Any,
        device: torch.device,
        latent_dim: int,
        *,
        is_main: bool,
    ) -> None:
        self.run_dir = run_dir
        self.recipe = recipe
        self.device = device
        self.is_main = is_main
        self._file: Any = None
        self.writer: Any = None  # a TensorBoard SummaryWriter while opened, if asked for
        #: Fixed inputs and targets for the sample grids: held-out ones when there is an eval split.
        self.sample_inputs = self._sample_batch(recipe, host, train_set)
        self.sample_z = None
        if latent_dim > 0:
            gen = torch.Generator().manual_seed(recipe["experiment"]["seed"] + 1)
            count = len(self.sample_inputs[0])
            self.sample_z = torch.randn(count, latent_dim, generator=gen).to(device)

    @staticmethod
    def _sample_batch(recipe: Recipe, host: PluginHost, train_set: Any) -> tuple[torch.Tensor, torch.Tensor]:
        n = max(1, recipe["train"]["num_samples"])
        try:
            source = build_dataset(recipe, host, recipe["eval"]["split"])
        except I2IError:
            source = train_set
        if len(source) == 0:
            source = train_set
        with torch.random.fork_rng(devices=[]):  # jitter here must not shift the training RNG
            torch.manual_seed(recipe["experiment"]["seed"])
            items = [source[i] for i in range(min(n, len(source)))]
        return (torch.stack([it["A"] for it in items]), torch.stack([it["B"] for it in items]))

    @contextmanager
    def opened(self) -> Iterator[RunLog]:
        """``log.jsonl`` open for appending (and TensorBoard's writer) while training runs."""
        self.writer = self._tensorboard()
        path = self.run_dir / "log.jsonl" if self.is_main else Path(os.devnull)
        try:
            with path.open("a", encoding="utf-8") as self._file:
                yield self
        finally:
            self._file = None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def record(
        self, step: int, epoch: int, lrs: dict[str, float], values: dict[str, float], elapsed: float
    ) -> None:
        """One line of ``log.jsonl`` (and the same scalars to TensorBoard)."""
        entry: dict[str, Any] = {"step": step, "epoch": epoch, "lr_G": lrs["lr_G"], "time": round(elapsed, 3)}
        if "lr_D" in lrs:
            entry["lr_D"] = lrs["lr_D"]
        entry.update(values)
        self._file.write(json.dumps(entry) + "\n")
        self._file.flush()
        if self.writer is not None:
            for k, v in entry.items():
                if k not in ("step", "epoch", "time"):
                    self.writer.add_scalar(k, v, step)

    @torch.no_grad()
    def write_samples(self, generator: torch.nn.Module, step: int) -> Path:
        """G's outputs for the fixed inputs, beside inputs and targets, as ``samples/step_N.png``."""
        path = self.run_dir / "samples" / f"step_{step:07d}.png"
        if not self.is_main:
            return path
        was_training = generator.training
        generator.eval()
        A, B = self.sample_inputs
        fake = generate(generator, A.to(self.device), self.sample_z)
        generator.train(was_training)
        save_triplet_grid(list(zip(A, fake.cpu(), B, strict=True)), path)
        if self.writer is not None:
            from torchvision.io import decode_image

            self.writer.add_image("samples", decode_image(str(path)), step)
        return path

    def _tensorboard(self) -> Any:
        if not self.recipe["train"]["tensorboard"] or not self.is_main:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # the optional 'tensorboard' extra is not installed
            return None
        return SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))
