"""Evaluate a trained run or checkpoint on a split: ``i2i eval`` and :func:`i2i.evaluate`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from i2i.assembly.host import PluginHost, get_host
from i2i.errors import I2IError
from i2i.inference.evaluate import evaluate_checkpoint
from i2i.reports.run_report import write_index

#: ``mode`` choices: one inference mode, or both (eval-mode and the paper's train-mode inference).
MODES = {"both": ["eval", "train"], "eval": ["eval"], "train": ["train"]}


@dataclass
class EvalResult:
    """One summary per inference mode, with the mean of every metric."""

    summaries: list[dict[str, Any]]  # as written to each mode's summary.json
    report: Path | None  # the run's refreshed index.html (a run directory evaluated in place)

    @property
    def metrics(self) -> dict[str, dict[str, float]]:
        """``{mode: {metric: mean}}``, e.g. ``result.metrics["eval"]["ssim"]``."""
        return {s["mode"]: {n: m["mean"] for n, m in s["metrics"].items()} for s in self.summaries}


def evaluate(
    target: str | Path,
    *,
    mode: str | None = None,
    data_root: str | Path | None = None,
    split: str | None = None,
    max_items: int | None = None,
    metrics: list[str] | str | None = None,
    out_dir: str | Path | None = None,
    device: str | None = None,
    progress: bool = True,
    console: Console | None = None,
    host: PluginHost | None = None,
    write_report: bool = True,
) -> EvalResult:
    """Translate a split with a run's (or checkpoint's) generator and score it.

    ``mode``: "eval", "train" or "both" (default: the recipe's ``eval.modes``); ``metrics``: names
    instead of the recipe's ``eval.metrics`` (a list or a comma-separated string). Reports go to
    ``RUN/eval/<mode>/`` or ``out_dir/<mode>/``; a run directory's index.html is rewritten, unless
    ``write_report`` is False (the caller writes it, as ``i2i run`` does once after evaluating).
    """
    host = host or get_host()
    if mode is not None and mode not in MODES:
        raise I2IError(f"--mode {mode!r}: use eval, train or both.")
    changes: dict[str, dict[str, Any]] = {"data": {}, "eval": {}}
    if data_root:
        changes["data"]["root"] = str(data_root)
    if split:
        changes["eval"]["split"] = split
    if max_items is not None:
        if max_items < 0:
            raise I2IError(f"--max-items {max_items}: give 0 (all) or a positive number of images.")
        changes["eval"]["max_items"] = max_items
    if metrics:
        names = [m.strip() for m in metrics.split(",")] if isinstance(metrics, str) else list(metrics)
        names = [n for n in names if n]
        known = host.registry("metric")
        for name in names:
            known.get(name)  # an unknown name stops here, with suggestions
        changes["eval"]["metrics"] = names
    target = Path(target)
    summaries = evaluate_checkpoint(
        target,
        host,
        modes=MODES[mode] if mode else None,
        recipe_changes=changes,
        out_dir=Path(out_dir) if out_dir is not None else None,
        device=device,
        show_progress=progress,
        console=console,
    )
    in_place = write_report and target.is_dir() and out_dir is None
    report = write_index(target) if in_place else None
    return EvalResult(summaries, report)
