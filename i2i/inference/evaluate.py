"""Evaluation: translate a whole split, score every image, write a table and a gallery.

Two inference modes exist in the literature: ``eval`` (dropout off, BatchNorm running statistics)
and ``train``, which the pix2pix paper used at test time (dropout on, statistics of the test batch).
Train mode runs on a copy of the generator so that evaluating never changes the model.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table
from torch.utils.data import DataLoader

from i2i.assembly.build import build_dataset, build_metrics, describe_split, pick_device
from i2i.assembly.host import PluginHost
from i2i.assembly.recipe import Recipe
from i2i.data.imaging import save_triplet_grid, to_pixels, to_unit
from i2i.data.scan import check_split
from i2i.errors import I2IError
from i2i.inference.loading import generator_from_checkpoint
from i2i.metrics import Metric, tell_device
from i2i.reports.run_report import write_gallery
from i2i.runs.checkpoint import load_checkpoint
from i2i.runs.outputs import output_folder, unique_name
from i2i.sampling import generate, latent_dim

MODES = ("eval", "train")


def _fmt(value: float) -> str:
    if math.isinf(value):
        return "inf"
    return f"{value:.4f}"


#: Images per forward pass in eval mode when the generator treats each image alone: batching there
#: changes results only by float rounding. Train mode keeps ``eval.batch_size``, since batch
#: normalisation with test-batch statistics makes its outputs depend on the batch.
EVAL_MODE_BATCH = 8


def batch_independent(generator: torch.nn.Module) -> bool:
    """Whether ``generator`` in eval mode computes each image alone (no batch statistics in eval mode)."""
    return not any(
        isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and not m.track_running_stats
        for m in generator.modules()
    )


class _RngStream:
    """One mode's own copy of torch's RNG (CPU and the device's), resumed batch after batch.

    Both modes are run on each batch in turn, yet each draws (dropout masks, latent codes) exactly
    what it drew when the modes ran one after the other, each after ``torch.manual_seed(seed)``.
    """

    def __init__(self, seed: int, device: torch.device) -> None:
        self.accelerator = getattr(torch, device.type) if device.type in ("cuda", "mps") else None
        self.device = device
        outer = self._get()
        torch.manual_seed(seed)
        # The draw a DataLoader iterator makes when it starts, which earlier versions made after
        # seeding: without it, train mode's dropout would differ from theirs for the same seed.
        torch.empty((), dtype=torch.int64).random_()
        self.state = self._get()
        self._set(outer)

    def _get(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        cpu = torch.get_rng_state()
        return cpu, self.accelerator.get_rng_state(self.device) if self.accelerator else None

    def _set(self, state: tuple[torch.Tensor, torch.Tensor | None]) -> None:
        torch.set_rng_state(state[0])
        if self.accelerator:
            self.accelerator.set_rng_state(state[1], self.device)

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        outer = self._get()
        self._set(self.state)
        try:
            yield
        finally:
            self.state = self._get()
            self._set(outer)


class _ModeRun:
    """One inference mode's generator, metrics, RNG, rows and folder during an evaluation."""

    def __init__(
        self,
        mode: str,
        G: torch.nn.Module,
        metrics: dict[str, Metric],
        out_dir: Path,
        batch_size: int,
        rng: _RngStream,
    ) -> None:
        self.mode, self.G, self.metrics, self.out_dir = mode, G, metrics, Path(out_dir)
        self.batch_size, self.rng = batch_size, rng
        self.rows: list[dict[str, Any]] = []
        images = output_folder(self.out_dir / "images", "The evaluation folder")
        for old in images.glob("*.png"):  # a previous evaluation's images would linger in the folder
            old.unlink()
        for metric in metrics.values():
            metric.reset()

    def translate(self, A: torch.Tensor, group: int) -> torch.Tensor:
        """Outputs for ``A`` in batches of ``self.batch_size``; latent codes drawn ``group`` rows at a time.

        Each forward batch draws its codes (``eval.batch_size`` rows at a time) just before it runs,
        so the draws come in the order of a batch-by-batch run, dropout masks included.
        """
        size = latent_dim(self.G)
        outputs = []
        with self.rng.active():
            for start in range(0, len(A), self.batch_size):
                inputs = A[start : start + self.batch_size]
                z = None
                if size > 0:
                    parts = [inputs[i : i + group] for i in range(0, len(inputs), group)]
                    z = torch.cat([torch.randn(len(p), size, device=A.device) for p in parts])
                outputs.append(generate(self.G, inputs, z))
        return torch.cat(outputs).float().cpu()

    def score(self, names: list[str], fake: torch.Tensor, batch: dict[str, torch.Tensor]) -> None:
        """Update the metrics with one batch of outputs and write its strips.

        ``batch`` holds what both modes share, computed once: inputs and targets in [0, 1] (``A``,
        ``B``) and as 8-bit pixels (``A_px``, ``B_px``).
        """
        out_u = to_unit(fake)
        per_image: dict[str, list[float]] = {}
        for name, metric in self.metrics.items():
            if metric.needs_input:
                values = metric.update(out_u, batch["B"], inputs=batch["A"])
            else:
                values = metric.update(out_u, batch["B"])
            if metric.per_image:
                per_image[name] = values
        fake_px = to_pixels(fake)
        for i, item_name in enumerate(names):
            image = f"images/{item_name}.png"
            strip = [(batch["A_px"][i], fake_px[i], batch["B_px"][i])]
            save_triplet_grid(strip, self.out_dir / image, compress_level=1)
            self.rows.append({"name": item_name, "image": image, **{k: v[i] for k, v in per_image.items()}})

    def report(self, count: int, extra: dict[str, Any] | None) -> dict[str, Any]:
        """Write metrics.json, per_image.csv and the gallery; return the summary."""
        metrics, out_dir = self.metrics, self.out_dir
        summary_metrics = {
            name: {"mean": m.compute(), "higher_is_better": m.higher_is_better} for name, m in metrics.items()
        }
        per_image_names = [n for n, m in metrics.items() if m.per_image]
        with (out_dir / "per_image.csv").open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["name", *per_image_names])
            for row in self.rows:
                writer.writerow([row["name"], *(_fmt(row[k]) for k in per_image_names)])
        summary = {"mode": self.mode, "count": count, "metrics": summary_metrics, **(extra or {})}
        (out_dir / "metrics.json").write_text(
            json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8"
        )
        if per_image_names:
            sort_by = per_image_names[0] if "psnr" not in per_image_names else "psnr"
            write_gallery(
                out_dir,
                self.rows,
                per_image_names,
                sort_by=sort_by,
                higher_is_better=metrics[sort_by].higher_is_better,
                title=f"{extra.get('experiment', '') if extra else ''} — {self.mode} mode, {count} images",
            )
        return summary


def evaluate_modes(
    generator: torch.nn.Module,
    dataset,
    runs: dict[str, tuple[dict[str, Metric], Path]],
    device: torch.device,
    *,
    batch_size: int = 1,
    max_items: int = 0,
    seed: int = 0,
    num_workers: int = 0,
    show_progress: bool = True,
    console: Console | None = None,
    extra: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Evaluate several inference modes in one pass over ``dataset``: each batch is loaded once.

    ``runs`` maps each mode to its metrics and report folder. Every mode's report equals the one a
    separate pass would write (train mode: exactly; eval mode, which runs up to
    :data:`EVAL_MODE_BATCH` images at once, up to float rounding). Items whose names repeat (files
    ``1.jpg`` and ``1.png`` are both named ``1``) are reported as ``1``, ``1-2``, ...
    """
    for mode in runs:
        if mode not in MODES:
            raise I2IError(f"Unknown inference mode {mode!r}: use one of {', '.join(MODES)}.")
    for metrics, _ in runs.values():  # networks inside metrics (FID, the FCN segmenter) run here too
        tell_device(metrics.values(), device)
    eval_batch = batch_size
    if "eval" in runs and batch_independent(generator):
        eval_batch = batch_size * max(1, math.ceil(EVAL_MODE_BATCH / batch_size))
    # Train mode runs on a copy, made outside inference mode so that its buffers stay ordinary tensors.
    modes = [
        _ModeRun(
            mode,
            copy.deepcopy(generator).train() if mode == "train" else generator.eval(),
            metrics,
            out_dir,
            batch_size if mode == "train" else eval_batch,
            _RngStream(seed, device),
        )
        for mode, (metrics, out_dir) in runs.items()
    ]
    n = len(dataset) if max_items <= 0 else min(max_items, len(dataset))
    loader = DataLoader(
        torch.utils.data.Subset(dataset, range(n)),
        batch_size=max(run.batch_size for run in modes),  # a multiple of every mode's batch
        shuffle=False,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )
    taken: set[str] = set()
    label = ", ".join(runs)
    with (
        torch.inference_mode(),
        torch.random.fork_rng(devices=[]),  # the loader's draws leave the caller's RNG alone
        Progress(console=console or Console(stderr=True), disable=not show_progress) as bar,
    ):
        torch.default_generator.manual_seed(seed)
        task = bar.add_task(f"evaluating ({label} mode{'s' if len(runs) > 1 else ''})", total=n)
        for batch in loader:
            if "B" not in batch:
                raise I2IError(
                    "Evaluation needs targets, but this dataset has inputs only; use "
                    "'i2i translate' for inference without targets."
                )
            names = [unique_name(str(name), taken) for name in batch["name"]]
            A = batch["A"].to(device, non_blocking=True)
            shared = {"A": to_unit(batch["A"]), "B": to_unit(batch["B"])}
            shared.update(A_px=to_pixels(batch["A"]), B_px=to_pixels(batch["B"]))
            for run in modes:
                run.score(names, run.translate(A, batch_size), shared)
            bar.advance(task, len(names))
    return [run.report(n, extra) for run in modes]


def evaluate(
    generator: torch.nn.Module,
    dataset,
    metrics: dict[str, Metric],
    mode: str,
    out_dir: Path,
    device: torch.device,
    **options: Any,
) -> dict[str, Any]:
    """Translate ``dataset`` (items with A and B) in one mode, score it, and write the report into
    ``out_dir``; ``options`` are those of :func:`evaluate_modes`."""
    return evaluate_modes(generator, dataset, {mode: (metrics, Path(out_dir))}, device, **options)[0]


def evaluate_checkpoint(
    target: str | Path,
    host: PluginHost,
    *,
    modes: list[str] | None = None,
    recipe_changes: dict[str, Any] | None = None,
    out_dir: Path | None = None,
    device: str | None = None,
    show_progress: bool = True,
    console: Console | None = None,
) -> list[dict[str, Any]]:
    """Evaluate a run directory (its latest checkpoint) or a checkpoint file.

    Reports go to ``RUN/eval/<mode>/`` (or ``out_dir/<mode>``); ``recipe_changes`` may change
    ``data`` and ``eval`` settings, e.g. ``{"data": {"root": ...}, "eval": {"max_items": 10}}``.
    """
    state = load_checkpoint(target)
    recipe: Recipe = copy.deepcopy(state["recipe"])
    for section, changes in (recipe_changes or {}).items():
        recipe.setdefault(section, {}).update(changes)
    dev = pick_device(device or recipe["experiment"]["device"])
    G = generator_from_checkpoint(state, host, dev)
    dataset = build_dataset(recipe, host, recipe["eval"]["split"])
    # Bad files are named all at once now, not one by one mid-evaluation; data.skip_bad leaves them out.
    dataset, notes = check_split(
        dataset, describe_split(recipe, recipe["eval"]["split"]), bool(recipe["data"].get("skip_bad", False))
    )
    for note in notes:
        (console or Console(stderr=True)).print(f"[yellow]Note: {escape(note)}[/yellow]", soft_wrap=True)
    ckpt_path = Path(state["path"])
    base = Path(out_dir) if out_dir else ckpt_path.parent.parent / "eval"
    chosen = list(dict.fromkeys(modes or recipe["eval"]["modes"]))
    max_items, split = recipe["eval"]["max_items"], recipe["eval"]["split"]
    if console is not None:  # the size first: evaluating a large split in both modes takes a while
        count = len(dataset) if max_items <= 0 else min(max_items, len(dataset))
        console.print(
            f"Evaluating {count:,} image{'s' if count != 1 else ''} of {escape(repr(split))} in "
            f"{len(chosen)} mode{'s' if len(chosen) != 1 else ''} ({escape(', '.join(chosen))})"
        )
    return evaluate_modes(
        G,
        dataset,
        {mode: (build_metrics(recipe["eval"]["metrics"], host), base / mode) for mode in chosen},
        dev,
        batch_size=recipe["eval"]["batch_size"],
        max_items=max_items,
        seed=recipe["experiment"]["seed"],
        num_workers=recipe["data"].get("num_workers", 0),
        show_progress=show_progress,
        console=console,
        extra={
            "split": split,
            "checkpoint": str(ckpt_path),
            "step": state.get("step"),
            "experiment": recipe["experiment"]["name"],
        },
    )


def summary_table(summaries: list[dict[str, Any]]) -> Table:
    """A rich table: one row per mode, one column per metric."""
    names = list(dict.fromkeys(n for s in summaries for n in s["metrics"]))
    table = Table(title="Evaluation")
    table.add_column("mode")
    table.add_column("images", justify="right")
    for name in names:
        arrow = "↑" if summaries[0]["metrics"].get(name, {}).get("higher_is_better", True) else "↓"
        table.add_column(f"{name} {arrow}", justify="right")
    for s in summaries:
        table.add_row(
            s["mode"],
            str(s["count"]),
            *(_fmt(s["metrics"][n]["mean"]) if n in s["metrics"] else "" for n in names),
        )
    return table
