"""Evaluation: translate a whole split, score every image, write a table and a gallery.

Two inference modes exist in the literature: ``eval`` (dropout off, BatchNorm running statistics)
and ``train``, which the pix2pix paper used at test time (dropout on, statistics of the test batch).
Train mode runs on a copy of the generator so that evaluating never changes the model.
"""

from __future__ import annotations

import copy
import csv
import json
import math
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from torch.utils.data import DataLoader

from i2i.build import build_dataset, build_generator, build_metrics, pick_device
from i2i.checkpoint import load_checkpoint
from i2i.errors import CheckpointError, I2IError
from i2i.imaging import save_triplet_grid, to_unit
from i2i.metrics import Metric
from i2i.outputs import output_folder
from i2i.plugins import PluginHost
from i2i.recipe import Recipe
from i2i.report import write_gallery
from i2i.sampling import generate

MODES = ("eval", "train")


def generator_from_checkpoint(
    state: dict[str, Any], host: PluginHost, device: torch.device
) -> torch.nn.Module:
    """Rebuild the checkpoint's generator from its recipe through the registry, with its weights."""
    try:
        recipe, io = state["recipe"], state["io"]
        G = build_generator(recipe, host, io["input_nc"], io["output_nc"])
        G.load_state_dict(state["generator"])
    except KeyError as exc:
        raise CheckpointError(f"{state.get('path')} lacks {exc}: not a complete i2i checkpoint.") from None
    except RuntimeError as exc:
        raise CheckpointError(
            f"{state.get('path')}: the weights do not fit the generator its "
            f"recipe describes: {str(exc).splitlines()[0]}"
        ) from None
    return G.to(device).eval()


def _fmt(value: float) -> str:
    if math.isinf(value):
        return "inf"
    return f"{value:.4f}"


def unique_name(name: str, taken: set[str]) -> str:
    """``name``, or ``name-2``, ``name-3``... if an earlier item had it, and mark it taken.

    Datasets name items by file stem, so ``1.jpg`` and ``1.png`` would otherwise share one row
    name and one gallery image. Compared case-insensitively, as macOS and Windows file names are.
    """
    unique, n = name, 1
    while unique.casefold() in taken:
        n += 1
        unique = f"{name}-{n}"
    taken.add(unique.casefold())
    return unique


@torch.no_grad()
def evaluate(
    generator: torch.nn.Module,
    dataset,
    metrics: dict[str, Metric],
    mode: str,
    out_dir: Path,
    device: torch.device,
    *,
    batch_size: int = 1,
    max_items: int = 0,
    seed: int = 0,
    show_progress: bool = True,
    console: Console | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Translate ``dataset`` (items with A and B), score it, and write the report into ``out_dir``.

    Items whose names repeat (files ``1.jpg`` and ``1.png`` are both named ``1``) are reported as
    ``1``, ``1-2``, ... in ``per_image.csv`` and the gallery.
    """
    if mode not in MODES:
        raise I2IError(f"Unknown inference mode {mode!r}: use one of {', '.join(MODES)}.")
    G = copy.deepcopy(generator).train() if mode == "train" else generator.eval()
    n = len(dataset) if max_items <= 0 else min(max_items, len(dataset))
    subset = torch.utils.data.Subset(dataset, range(n))
    loader = DataLoader(subset, batch_size=batch_size, shuffle=False)
    out_dir = Path(out_dir)
    images = output_folder(out_dir / "images", "The evaluation folder")
    for old in images.glob("*.png"):  # a previous evaluation's images would linger in the folder
        old.unlink()
    for metric in metrics.values():
        metric.reset()
    rows: list[dict[str, Any]] = []
    taken: set[str] = set()
    torch.manual_seed(seed)  # dropout (train mode) and latent codes
    with Progress(console=console or Console(stderr=True), disable=not show_progress) as bar:
        task = bar.add_task(f"evaluating ({mode} mode)", total=n)
        for batch in loader:
            if "B" not in batch:
                raise I2IError(
                    "Evaluation needs targets, but this dataset has inputs only; use "
                    "'i2i translate' for inference without targets."
                )
            A = batch["A"].to(device)
            fake = generate(G, A).float().cpu()
            out_u, tgt_u = to_unit(fake), to_unit(batch["B"])
            per_image: dict[str, list[float]] = {}
            in_u = to_unit(batch["A"])
            for name, metric in metrics.items():
                if metric.needs_input:
                    values = metric.update(out_u, tgt_u, inputs=in_u)
                else:
                    values = metric.update(out_u, tgt_u)
                if metric.per_image:
                    per_image[name] = values
            for i, item_name in enumerate(batch["name"]):
                item_name = unique_name(str(item_name), taken)
                image = f"images/{item_name}.png"
                save_triplet_grid([(batch["A"][i], fake[i], batch["B"][i])], out_dir / image)
                rows.append({"name": item_name, "image": image, **{k: v[i] for k, v in per_image.items()}})
            bar.advance(task, len(batch["name"]))
    summary_metrics = {
        name: {"mean": m.compute(), "higher_is_better": m.higher_is_better} for name, m in metrics.items()
    }
    per_image_names = [n for n, m in metrics.items() if m.per_image]
    with (out_dir / "per_image.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["name", *per_image_names])
        for row in rows:
            writer.writerow([row["name"], *(_fmt(row[k]) for k in per_image_names)])
    summary = {"mode": mode, "count": n, "metrics": summary_metrics, **(extra or {})}
    (out_dir / "metrics.json").write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    if per_image_names:
        sort_by = per_image_names[0] if "psnr" not in per_image_names else "psnr"
        write_gallery(
            out_dir,
            rows,
            per_image_names,
            sort_by=sort_by,
            higher_is_better=metrics[sort_by].higher_is_better,
            title=f"{extra.get('experiment', '') if extra else ''} — {mode} mode, {n} images",
        )
    return summary


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
    ckpt_path = Path(state["path"])
    base = Path(out_dir) if out_dir else ckpt_path.parent.parent / "eval"
    summaries = []
    for mode in modes or recipe["eval"]["modes"]:
        summaries.append(
            evaluate(
                G,
                dataset,
                build_metrics(recipe["eval"]["metrics"], host),
                mode,
                base / mode,
                dev,
                batch_size=recipe["eval"]["batch_size"],
                max_items=recipe["eval"]["max_items"],
                seed=recipe["experiment"]["seed"],
                show_progress=show_progress,
                console=console,
                extra={
                    "split": recipe["eval"]["split"],
                    "checkpoint": str(ckpt_path),
                    "step": state.get("step"),
                    "experiment": recipe["experiment"]["name"],
                },
            )
        )
    return summaries


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
