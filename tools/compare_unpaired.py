"""Paired against unpaired on facades: pix2pix, CycleGAN, CUT and FastCUT side by side.

Each method trains from its quick recipe (label map -> photo, 128x128 crops, networks 32 filters
wide) for the same number of steps with the same seed; the unpaired ones see the training pairs
shuffled apart. Each is then scored on the same test pairs with the FCN-score (the shipped facades
segmenter), SSIM and L1, and its training step is timed by ``i2i bench`` (the plain step, no
speed options). The page holds the table and one grid of samples: input, each method, target.

    python tools/compare_unpaired.py                                   # ~30 min on 2 CPU cores
    python tools/compare_unpaired.py --eval-root ../shared/datasets/facades   # 106 test pairs

Writes OUT/index.html, OUT/comparison.csv, OUT/comparison.json and OUT/samples.png (OUT:
runs/unpaired_comparison). Rerunning reuses finished runs (delete OUT/runs/NAME to retrain one).
"""

from __future__ import annotations

import argparse
import csv
import html
import json
import sys
from pathlib import Path

import torch
from rich.console import Console

import i2i

REPO = Path(__file__).resolve().parents[1]
METHODS = {  # label -> (recipe, paired?)
    "pix2pix": ("facades_quick", True),
    "CycleGAN": ("facades_cyclegan_quick", False),
    "CUT": ("facades_cut_quick", False),
    "FastCUT": ("facades_fastcut_quick", False),
}
METRICS = ["fcn_pixel_acc", "fcn_class_acc", "fcn_iou", "ssim", "l1"]
COLUMNS = {
    "fcn_pixel_acc": "FCN pixel acc. ↑",
    "fcn_class_acc": "FCN class acc. ↑",
    "fcn_iou": "FCN IoU ↑",
    "ssim": "SSIM ↑",
    "l1": "L1 ↓",
    "step_s": "s / step",
    "peak_mib": "peak memory (MiB)",
}


def train_all(out: Path, steps: int, seed: int, console: Console) -> dict[str, Path]:
    runs = {}
    for label, (name, _) in METHODS.items():
        run_dir = out / "runs" / name
        latest = run_dir / "checkpoints" / "latest.pt"
        if latest.is_file() and _step(latest) >= steps:
            console.print(f"{label}: reusing {run_dir}")
            runs[label] = run_dir
            continue
        console.print(f"[bold]{label}[/bold]: training {steps} steps ({name})")
        overrides = {
            "experiment.output_dir": str(out / "runs"),
            "experiment.seed": seed,
            "train.max_steps": steps,
            # one schedule for all: constant, then linear decay to 0 over the same steps
            "train.epochs": max(1, steps // 80),
            "train.epochs_decay": max(1, steps // 80),
        }
        resume = run_dir if latest.is_file() else None
        result = i2i.train(
            REPO / "recipes" / f"{name}.toml" if resume is None else None,
            overrides,
            resume=resume,
            evaluate_after=False,
            console=console,
        )
        if result.interrupted:
            sys.exit(f"Stopped; rerun the same command to continue ({result.resume_command}).")
        runs[label] = result.run_dir
    return runs


def _step(checkpoint: Path) -> int:
    from i2i.runs.checkpoint import load_checkpoint

    return int(load_checkpoint(checkpoint, mmap=True).get("step", 0))


def score(runs: dict[str, Path], out: Path, eval_root: str | None, items: int, console: Console) -> dict:
    scores = {}
    for label, run_dir in runs.items():
        console.print(f"[bold]{label}[/bold]: evaluating")
        result = i2i.evaluate(
            run_dir,
            mode="eval",
            data_root=eval_root,
            metrics=METRICS,
            max_items=items,
            out_dir=out / "eval" / run_dir.name,
            console=console,
        )
        scores[label] = result.metrics["eval"] | {"images": result.summaries[0]["count"]}
    return scores


def time_steps(steps: int, repeats: int, console: Console) -> dict[str, dict[str, float]]:
    from i2i.training.bench import bench

    timing = {}
    for label, (name, _) in METHODS.items():
        console.print(f"[bold]{label}[/bold]: timing the step (i2i bench, plain)")
        recipe = i2i.resolve_recipe(
            REPO / "recipes" / f"{name}.toml", {"data.root": str(REPO / "samples" / "facades_mini")}
        )
        summary = bench(
            recipe,
            steps=steps,
            repeats=repeats,
            warmup=2,
            only=["plain"],
            console=console,
            show_progress=False,
        )
        plain = summary["variants"]["plain"]
        timing[label] = {
            "step_s": plain["step_s"]["median"],
            "peak_mib": plain.get("peak_memory_bytes", 0) / 2**20,
        }
    return timing


@torch.no_grad()
def sample_grid(runs: dict[str, Path], out: Path, eval_root: str | None, count: int) -> Path:
    """Rows: test pairs; columns: the label map, each method's photo, the real photo."""
    import numpy as np

    from i2i.data.imaging import save_triplet_grid
    from i2i.inference.translate import input_half, read_input

    root = Path(eval_root) if eval_root else REPO / "samples" / "facades_mini"
    files = sorted((root / "test").iterdir())[:count]
    translators = {label: i2i.load(run_dir, device="cpu", size=128) for label, run_dir in runs.items()}
    rows = []
    direction = next(iter(translators.values())).recipe["data"]["direction"]
    for path in files:
        pair = read_input(path, 3)
        outputs = [
            torch.from_numpy(np.asarray(t(path, aligned=True))).permute(2, 0, 1) for t in translators.values()
        ]
        rows.append([input_half(pair, direction), *outputs, input_half(pair, direction, "BtoA")])
    return save_triplet_grid(rows, out / "samples.png", labels=["label map", *translators, "real photo"])


def write_page(out: Path, rows: list[dict], steps: int, eval_root: str | None) -> Path:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["method", "data", *COLUMNS.values()])
    body = ""
    for row in rows:
        cells = [row["method"], "paired" if row["paired"] else "unpaired"]
        cells += [f"{row[k]:.3f}" if k != "peak_mib" else f"{row[k]:.0f}" for k in COLUMNS]
        body += "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>"
    where = html.escape(eval_root or "samples/facades_mini")
    page = (
        "<!doctype html><meta charset='utf-8'><title>Paired vs unpaired on facades</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}td,th{padding:4px 10px;"
        "text-align:right;border-bottom:1px solid #ddd}td:first-child{text-align:left}</style>"
        f"<h1>Paired vs unpaired on facades</h1><p>{steps} training steps each (same seed, 128x128, "
        f"32 filters); test pairs of {where}. FCN-score: the shipped facades segmenter on the "
        "outputs against the input label map. s/step and memory: i2i bench, the plain step.</p>"
        f"<table><tr>{head}</tr>{body}</table>"
        "<h2>Samples</h2><img src='samples.png' style='max-width:100%'>"
        "<p>Also as <a href='comparison.csv'>CSV</a> and <a href='comparison.json'>JSON</a>.</p>"
    )
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/unpaired_comparison"))
    parser.add_argument("--steps", type=int, default=1200, help="training steps of every method")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-root", default=None, help="facades folder with test/ (default: the sample)")
    parser.add_argument("--eval-items", type=int, default=0, help="test pairs to score (0: all)")
    parser.add_argument("--bench-steps", type=int, default=10)
    parser.add_argument("--bench-repeats", type=int, default=2)
    parser.add_argument("--samples", type=int, default=4, help="rows of the sample grid")
    args = parser.parse_args(argv)
    console = Console(stderr=True)
    args.out.mkdir(parents=True, exist_ok=True)
    runs = train_all(args.out, args.steps, args.seed, console)
    scores = score(runs, args.out, args.eval_root, args.eval_items, console)
    timing = time_steps(args.bench_steps, args.bench_repeats, console)
    sample_grid(runs, args.out, args.eval_root, args.samples)
    rows = [
        {"method": label, "paired": METHODS[label][1], **scores[label], **timing[label]} for label in runs
    ]
    with (args.out / "comparison.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (args.out / "comparison.json").write_text(
        json.dumps(
            {"steps": args.steps, "seed": args.seed, "eval_root": args.eval_root, "rows": rows}, indent=2
        )
    )
    page = write_page(args.out, rows, args.steps, args.eval_root)
    for row in rows:
        console.print(
            " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
        )
    print(f"Report: {page}")


if __name__ == "__main__":
    main()
