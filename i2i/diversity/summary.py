"""Summaries of a diversity experiment's rows: spread over training seeds, the Pareto front of
quality against diversity, and each method's figures over training steps.

A row is one measurement (variant instance, sampler, step), as :func:`i2i.diversity.report.table_rows`
builds it; here rows of the same recipe variant (``group``) and sampler are pooled over seeds.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

#: Columns that name a row rather than measure it.
IDENTITY = ("variant", "label", "sampler", "mode", "step", "group", "seed", "final")


def _numeric(rows: list[dict[str, Any]]) -> list[str]:
    keys = dict.fromkeys(k for row in rows for k in row if k not in IDENTITY)
    return [k for k in keys if all(isinstance(row.get(k), int | float) for row in rows)]


def spread(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value) of the finite values."""
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return float("nan"), float("nan")
    return statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else 0.0


def pooled(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (group, sampler, step): every measure as ``KEY`` (mean over seeds) and
    ``KEY_std``, with ``seeds`` the number pooled. Order: as the groups first appear."""
    buckets: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for row in rows:
        buckets.setdefault((row.get("group", row["variant"]), row["sampler"], row["step"]), []).append(row)
    out = []
    for (group, sampler, step), members in buckets.items():
        first = members[0]
        summary: dict[str, Any] = {
            "group": group,
            "label": first["label"],
            "sampler": sampler,
            "mode": first["mode"],
            "step": step,
            "final": bool(first.get("final", True)),
            "seeds": len(members),
        }
        for key in _numeric(members):
            summary[key], summary[f"{key}_std"] = spread([float(m[key]) for m in members])
        out.append(summary)
    return out


def final_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [row for row in rows if row.get("final", True)]


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (higher is better on both),
    ordered by the first axis."""
    front = []
    for i, (x, y) in enumerate(points):
        if math.isnan(x) or math.isnan(y):
            continue
        dominated = any(
            (ox >= x and oy >= y) and (ox > x or oy > y)
            for j, (ox, oy) in enumerate(points)
            if j != i and not (math.isnan(ox) or math.isnan(oy))
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def curves(rows: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """The pooled rows of each (group, sampler) measured at more than one step, by step."""
    by_method: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in pooled(rows):
        by_method.setdefault((row["group"], row["sampler"]), []).append(row)
    return {k: sorted(v, key=lambda r: r["step"]) for k, v in by_method.items() if len(v) > 1}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def scatter_with_spread(
    rows: list[dict[str, Any]], x_key: str, y_key: str, x_label: str, y_label: str, path: Path
) -> Path:
    """Quality against diversity, one point per (group, sampler) with its spread over seeds as
    error bars, and the Pareto front drawn through the points nothing beats on both axes."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.5, 5.0), dpi=110)
    colours = plt.get_cmap("tab10")
    groups = list(dict.fromkeys(r["group"] for r in rows))
    markers = {"eval": "o", "train": "s"}
    points = [(float(r.get(x_key, math.nan)), float(r.get(y_key, math.nan))) for r in rows]
    for r, (x, y) in zip(rows, points, strict=True):
        if math.isnan(x) or math.isnan(y):
            continue
        ax.errorbar(
            x,
            y,
            xerr=r.get(f"{x_key}_std") or None,
            yerr=r.get(f"{y_key}_std") or None,
            color=colours(groups.index(r["group"]) % 10),
            marker=markers.get(r["mode"], "^"),
            markersize=7,
            capsize=3,
            linestyle="none",
            label=f"{r['group']} / {r['sampler']}",
        )
    front = pareto_front(points)
    if len(front) > 1:
        ax.plot(
            [points[i][0] for i in front],
            [points[i][1] for i in front],
            color="#444",
            linestyle=":",
            linewidth=1.2,
            label="Pareto front",
        )
    for i in front:
        ax.scatter(*points[i], s=190, facecolors="none", edgecolors="#444", linewidths=1.0)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.axvline(1.0, color="#999", linestyle="--", linewidth=1)
    ax.text(1.0, ax.get_ylim()[0], " real pairs", color="#777", fontsize=8, va="bottom")
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    seeds = {int(r.get("seeds", 1)) for r in rows}
    bars = ""
    if max(seeds, default=1) > 1:
        bars = f"; bars: ±1 std over {max(seeds)} training seeds"
        bars += ", none: one seed" if 1 in seeds else ""
    ax.set_title(f"Quality vs diversity\n(circles: eval mode, squares: train mode{bars})", fontsize=9)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def over_time_figure(
    lines: dict[tuple[str, str], list[dict[str, Any]]], panels: list[tuple[str, str]], path: Path
) -> Path:
    """One panel per ``(key, label)``: that measure against the training step for every method of
    :func:`curves`, mean over seeds with a ±1 std band."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), dpi=110, squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax, (key, label) in zip(axes[0], panels, strict=True):
        for i, ((group, sampler), points) in enumerate(lines.items()):
            steps = [p["step"] for p in points]
            mean = [float(p.get(key, math.nan)) for p in points]
            std = [float(p.get(f"{key}_std", 0.0) or 0.0) for p in points]
            colour = colours(i % 10)  # past ten lines, the colours repeat with other dashes and marks
            style = {"linestyle": ("-", "--", ":")[i // 10 % 3], "marker": ("o", "s", "^")[i // 10 % 3]}
            ax.plot(steps, mean, color=colour, label=f"{group} / {sampler}", **style)
            low = [m - s for m, s in zip(mean, std, strict=True)]
            high = [m + s for m, s in zip(mean, std, strict=True)]
            ax.fill_between(steps, low, high, color=colour, alpha=0.15, linewidth=0)
        ax.set_xlabel("training step")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.suptitle("Diversity and quality over training", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
