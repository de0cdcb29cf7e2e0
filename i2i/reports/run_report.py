"""Human-readable outputs of a run directory: loss curves, evaluation galleries and ``index.html``.

Every page opens straight from disk: relative links only, inline CSS, no scripts, no external
assets, and every piece of text escaped.
"""

from __future__ import annotations

import html
import json
import math
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

LOSS_CURVES = "loss_curves.png"
INDEX = "index.html"
GALLERY = "gallery.html"
_STEP_RE = re.compile(r"step_?(\d+)")
_NOT_PLOTTED = {"step", "epoch", "time"}

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em auto;
       max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f7f7f7; border: 1px solid #ddd; padding: 0.8em; overflow-x: auto; }
img { max-width: 100%; }
.samples img, .gallery img { image-rendering: pixelated; }
.samples figure { display: inline-block; margin: 0.4em; vertical-align: top; }
.muted { color: #777; }
.warning { background: #fff4d6; border-left: 4px solid #e0a100; padding: .4em .8em; }
"""


# -- small helpers ---------------------------------------------------------------------------------


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _href(relative: str | Path) -> str:
    """A relative link, URL-quoted (spaces, '#', '?', '%') and HTML-escaped."""
    return _e(quote(Path(relative).as_posix()))


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}\n"
        "</body>\n</html>\n"
    )


def _format(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.4g}"
    return str(value)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m {secs:02d}s" if hours else f"{minutes}m {secs:02d}s"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


#: Public names of the page helpers, for the other report writers (the diversity experiment's).
escape_html = _e
relative_href = _href
html_page = _page
format_value = _format


# -- the training log ------------------------------------------------------------------------------


def read_log(path: str | Path) -> list[dict]:
    """The entries of a ``log.jsonl``; skips unreadable lines (e.g. a truncated last one)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    entries = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict):
            entries.append(entry)
    return entries


def _smooth(values: Sequence[float], window: int) -> list[float]:
    """Trailing moving average that ignores NaNs."""
    out, acc = [], []
    for v in values:
        acc.append(v)
        if len(acc) > window:
            acc.pop(0)
        finite = [a for a in acc if math.isfinite(a)]
        out.append(sum(finite) / len(finite) if finite else float("nan"))
    return out


def _series(entries: list[dict], keys: Iterable[str]) -> dict[str, tuple[list[float], list[float]]]:
    series: dict[str, tuple[list[float], list[float]]] = {}
    for i, entry in enumerate(entries):
        x = _number(entry.get("step"))
        x = float(i) if x is None else x
        for key in keys:
            y = _number(entry.get(key))
            if y is not None:
                xs, ys = series.setdefault(key, ([], []))
                xs.append(x)
                ys.append(y)
    return series


def plot_loss_curves(log_path: str | Path, out_png: str | Path) -> Path | None:
    """Plot D terms, G terms and learning rates of a ``log.jsonl``; None if there is nothing to plot.

    Raw values are drawn faintly, a moving average over them in full colour.
    """
    entries = read_log(log_path)
    keys: list[str] = []
    for entry in entries:
        for k, v in entry.items():
            if k not in keys and k not in _NOT_PLOTTED and _number(v) is not None:
                keys.append(k)
    if not entries or not keys:
        return None

    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    panels = [
        # Totals are left out: they are weighted sums of the terms and would dwarf them (100·L1).
        ("Discriminator", [k for k in keys if k.startswith("D_") and k != "D_total"], False),
        ("Generator", [k for k in keys if k.startswith("G_") and k != "G_total"], False),
        ("Learning rate", [k for k in keys if k.startswith("lr")], True),
    ]
    series = _series(entries, keys)
    window = max(1, min(25, len(entries) // 20))
    fig = Figure(figsize=(13, 3.6), layout="constrained")
    axes = fig.subplots(1, len(panels))
    for ax, (title, names, is_lr) in zip(axes, panels, strict=True):
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
        if not names:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="#888")
            continue
        for i, name in enumerate(names):
            xs, ys = series.get(name, ([], []))
            color = f"C{i % 10}"
            if is_lr or window == 1:
                ax.plot(xs, ys, color=color, label=name, linewidth=1.2)
            else:
                ax.plot(xs, ys, color=color, alpha=0.25, linewidth=0.8)
                ax.plot(xs, _smooth(ys, window), color=color, label=name, linewidth=1.4)
        if is_lr:
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        else:
            values = [y for name in names for y in series.get(name, ([], []))[1]]
            if values and min(values) > 0 and max(values) / min(values) > 30:
                ax.set_yscale("log")  # terms of very different sizes (e.g. GAN vs L1)
        ax.legend(fontsize="small")
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=90)
    return out_png


# -- evaluation galleries --------------------------------------------------------------------------


def _sort_key(value: Any, higher_is_better: bool) -> tuple[int, float]:
    """Worst first; missing and NaN values last."""
    v = _number(value)
    if v is None or math.isnan(v):
        return (1, 0.0)
    return (0, v if higher_is_better else -v)


def write_gallery(
    eval_dir: str | Path,
    rows: list[dict],
    metric_names: Sequence[str],
    sort_by: str | None = None,
    higher_is_better: bool = True,
    title: str = "Evaluation gallery",
) -> Path:
    """Write ``eval_dir/gallery.html``: one row per image, worst ``sort_by`` value first.

    ``rows`` are ``{"name": ..., "image": "images/x.png", <metric>: value, ...}`` with ``image``
    relative to ``eval_dir`` (an input|output|target strip).
    """
    eval_dir = Path(eval_dir)
    eval_dir.mkdir(parents=True, exist_ok=True)
    ordered = list(rows)
    if sort_by:
        ordered.sort(key=lambda r: _sort_key(r.get(sort_by), higher_is_better))
    head = "".join(f"<th>{_e(m)}</th>" for m in metric_names)
    lines = []
    for i, row in enumerate(ordered, 1):
        cells = "".join(f'<td class="num">{_e(_format(row.get(m)))}</td>' for m in metric_names)
        image = row.get("image")
        picture = (
            f'<a href="{_href(image)}"><img src="{_href(image)}" alt="{_e(row.get("name", ""))}"'
            ' loading="lazy"></a>'
            if image
            else '<span class="muted">no image</span>'
        )
        lines.append(
            f'<tr><td class="num">{i}</td><td>{_e(row.get("name", ""))}</td>{cells}<td>{picture}</td></tr>'
        )
    if sort_by:
        better = "higher" if higher_is_better else "lower"
        order = f"Sorted by {_e(sort_by)}, worst first ({better} is better)."
    else:
        order = "In evaluation order."
    back = ""
    if eval_dir.parent.name == "eval":  # RUN/eval/<mode>/: link the run overview
        back = '<p><a href="../../index.html">&larr; run overview</a></p>\n'
    body = (
        f"{back}<h1>{_e(title)}</h1>\n<p>{len(ordered)} images. {order} "
        f"Columns of each picture: input | output | target.</p>\n"
        f'<table class="gallery">\n<tr><th>#</th><th>name</th>{head}<th>input | output | target</th></tr>\n'
        + "\n".join(lines)
        + "\n</table>"
    )
    out = eval_dir / GALLERY
    out.write_text(_page(title, body), encoding="utf-8")
    return out


# -- the run index ---------------------------------------------------------------------------------


def _experiment_name(run_dir: Path, recipe_text: str) -> str:
    try:
        recipe = tomllib.loads(recipe_text)
    except tomllib.TOMLDecodeError:
        return run_dir.name
    name = recipe.get("experiment", {}).get("name") if isinstance(recipe, dict) else None
    return name if isinstance(name, str) and name else run_dir.name


def _step_of(path: Path) -> int | None:
    match = _STEP_RE.search(path.stem)
    return int(match.group(1)) if match else None


def _samples_section(run_dir: Path) -> str:
    samples = sorted((run_dir / "samples").glob("*.png")) if (run_dir / "samples").is_dir() else []
    if not samples:
        return '<p class="muted">No sample grids yet.</p>'
    samples.sort(key=lambda p: (_step_of(p) is not None, _step_of(p) or 0, p.name), reverse=True)
    figures = []
    for path in samples:
        step = _step_of(path)
        caption = f"step {step}" if step is not None else path.name
        rel = path.relative_to(run_dir)
        figures.append(
            f'<figure><a href="{_href(rel)}"><img src="{_href(rel)}" alt="{_e(caption)}" '
            f'loading="lazy"></a><figcaption>{_e(caption)}</figcaption></figure>'
        )
    return f'<p>{len(samples)} grids, newest first.</p>\n<div class="samples">' + "".join(figures) + "</div>"


def _eval_section(run_dir: Path) -> str:
    eval_root = run_dir / "eval"
    found = sorted(eval_root.glob("*/metrics.json")) if eval_root.is_dir() else []
    parts = []
    for path in found:
        data = _read_json(path)
        if not isinstance(data, dict):
            parts.append(f'<p class="muted">{_e(path.relative_to(run_dir))} is unreadable.</p>')
            continue
        mode_dir = path.parent
        label = data.get("mode", mode_dir.name)
        facts = [
            f"{key}: {_e(_format(data[key]))}"
            for key in ("split", "count", "step", "checkpoint")
            if data.get(key) is not None
        ]
        links = []
        for name, text in (
            (GALLERY, "gallery"),
            ("per_image.csv", "per-image CSV"),
            ("metrics.json", "metrics.json"),
        ):
            if (mode_dir / name).is_file():
                links.append(f'<a href="{_href((mode_dir / name).relative_to(run_dir))}">{_e(text)}</a>')
        rows = []
        metrics = data.get("metrics") if isinstance(data.get("metrics"), dict) else {}
        for name, info in metrics.items():
            if isinstance(info, dict):
                mean, hib = info.get("mean"), info.get("higher_is_better")
            else:
                mean, hib = info, None
            better = "" if hib is None else ("higher" if hib else "lower")
            rows.append(
                f'<tr><td>{_e(name)}</td><td class="num">{_e(_format(mean))}</td><td>{_e(better)}</td></tr>'
            )
        table = (
            "<table><tr><th>metric</th><th>mean</th><th>better</th></tr>" + "".join(rows) + "</table>"
            if rows
            else '<p class="muted">No metrics recorded.</p>'
        )
        parts.append(
            f"<h3>mode: {_e(label)}</h3>\n<p>{' · '.join(facts)}</p>\n{table}\n<p>{' · '.join(links)}</p>"
        )
    return "\n".join(parts) if parts else '<p class="muted">Not evaluated yet.</p>'


def _plugins_section(run_dir: Path) -> str:
    data = _read_json(run_dir / "plugins.json")
    if not isinstance(data, dict) or not data:
        return '<p class="muted">No plugin versions recorded.</p>'
    plugins = data.get("plugins", data) if isinstance(data.get("plugins"), dict) else data
    rows = "".join(
        f"<tr><td>{_e(name)}</td><td>{_e(version)}</td></tr>"
        for name, version in plugins.items()
        if not isinstance(version, dict)
    )
    html_out = f"<table><tr><th>plugin</th><th>provided by</th></tr>{rows}</table>"
    environment = data.get("environment")
    if isinstance(environment, dict):
        env = " · ".join(f"{_e(k)} {_e(v)}" for k, v in environment.items())
        html_out += f'<p class="muted">Environment: {env}</p>'
    return html_out


def _progress_section(entries: list[dict]) -> str:
    if not entries:
        return ""
    last = entries[-1]
    facts = [f"{k}: {_e(_format(last[k]))}" for k in ("step", "epoch") if k in last]
    times = [t for t in (_number(e.get("time")) for e in entries) if t is not None]
    if times:
        # Seconds since the start, or wall-clock timestamps: either way, report the span.
        elapsed = max(times) - min(times) if min(times) > 1e8 else max(times)
        facts.append(f"elapsed: {_duration(elapsed)}")
    losses = [
        f"{_e(k)} = {_e(_format(v))}"
        for k, v in last.items()
        if k[:2] in ("D_", "G_") and _number(v) is not None
    ]
    text = " · ".join(facts)
    if losses:
        text += "<br>last logged: " + ", ".join(losses)
    return f"<p>{text}</p>"


def _stored_recipe(run_dir: Path) -> dict[str, Any] | None:
    """The recipe inside ``checkpoints/latest.pt``: what actually ran (None when unreadable)."""
    from i2i.errors import CheckpointError
    from i2i.runs.checkpoint import load_checkpoint

    path = run_dir / "checkpoints" / "latest.pt"
    if not path.is_file():
        return None
    try:
        return load_checkpoint(path, mmap=True)["recipe"]
    except (CheckpointError, KeyError):
        return None


def _recipe_section(run_dir: Path, recipe_text: str) -> str:
    """The run's recipe, taken from its checkpoint when ``recipe.toml`` was edited after the run."""
    from i2i.assembly.recipe import dumps

    stored = _stored_recipe(run_dir)
    try:
        on_disk = tomllib.loads(recipe_text) if recipe_text else None
    except tomllib.TOMLDecodeError:
        on_disk = None
    if stored is not None:
        stored = tomllib.loads(dumps(stored))  # as TOML holds it (no None values, lists not tuples)
    if stored is None or on_disk == stored:
        if not recipe_text:
            return '<p class="muted">No recipe.toml.</p>'
        return f"<pre>{_e(recipe_text)}</pre>"
    sections = sorted(set(stored) | set(on_disk or {}))
    changed = [s for s in sections if (on_disk or {}).get(s) != stored.get(s)]
    note = (
        f"recipe.toml in the run directory differs from the recipe stored in the checkpoint "
        f"(section(s) {', '.join(changed)}): it was edited after the run. Shown: the stored recipe, "
        "which is what was trained."
    )
    return f'<p class="warning">{_e(note)}</p><pre>{_e(dumps(stored))}</pre>'


def write_index(run_dir: str | Path) -> Path:
    """Write ``run_dir/index.html`` (regenerating ``loss_curves.png`` from ``log.jsonl``)."""
    run_dir = Path(run_dir)
    try:
        recipe_text = (run_dir / "recipe.toml").read_text(encoding="utf-8")
    except OSError:
        recipe_text = ""
    name = _experiment_name(run_dir, recipe_text)
    entries = read_log(run_dir / "log.jsonl")
    curves = plot_loss_curves(run_dir / "log.jsonl", run_dir / LOSS_CURVES) if entries else None
    if curves is not None:
        curves_html = f'<img src="{_href(LOSS_CURVES)}" alt="loss curves">'
    else:
        curves_html = '<p class="muted">No losses logged yet.</p>'
    recipe_html = _recipe_section(run_dir, recipe_text)
    body = "\n".join(
        [
            f"<h1>{_e(name)}</h1>",
            f'<p class="muted">Run directory: {_e(run_dir.resolve().name)}</p>',
            _progress_section(entries),
            "<h2>Loss curves</h2>",
            curves_html,
            "<h2>Evaluation</h2>",
            _eval_section(run_dir),
            "<h2>Samples over time</h2>",
            _samples_section(run_dir),
            "<h2>Plugins</h2>",
            _plugins_section(run_dir),
            "<h2>Resolved recipe</h2>",
            recipe_html,
        ]
    )
    out = run_dir / INDEX
    out.write_text(_page(f"i2i run: {name}", body), encoding="utf-8")
    return out
