"""The diversity experiment's outputs: figures, a scatter plot, CSV/JSON and ``index.html``."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from torch import Tensor

from i2i.data.imaging import save_triplet_grid
from i2i.diversity.config import Experiment
from i2i.diversity.measures import STD, PairwiseMeasure
from i2i.diversity.summary import curves, final_rows, over_time_figure, pooled, scatter_with_spread
from i2i.reports.run_report import INDEX, escape_html, format_value, html_page, relative_href

CSV_NAME = "diversity.csv"
SUMMARY_CSV = "diversity_summary.csv"
JSON_NAME = "diversity.json"
SCATTER = "quality_vs_diversity.png"
OVER_TIME = "diversity_over_time.png"


def write_figure(rows: list[tuple[Tensor, list[Tensor], Tensor]], path: Path) -> Path | None:
    """Rows = inputs; columns = the input, its samples, the target."""
    if not rows:
        return None
    count = max(len(samples) for _, samples, _ in rows)
    labels = ["input", *(f"sample {k + 1}" for k in range(count)), "target"]
    grid = [[a, *samples, b] for a, samples, b in rows]
    return save_triplet_grid(grid, path, labels=labels)


def diversity_columns(measures: list[PairwiseMeasure]) -> list[str]:
    return [m.label for m in measures] + [STD]


def table_rows(results: list[dict[str, Any]], reference: dict[str, Any], measures) -> list[dict[str, Any]]:
    """One flat row per (variant, sampler): absolute diversity, its ratio to real pairs, quality."""
    real = reference["values"]
    rows = []
    for r in results:
        s = r["summary"]
        row: dict[str, Any] = {
            "variant": r["variant"],
            "group": r.get("group", r["variant"]),
            "seed": r.get("seed"),
            "final": bool(r.get("final", True)),
            "label": r["label"],
            "sampler": r["sampler"],
            "mode": r["mode"],
            "step": r["step"],
        }
        for col in diversity_columns(measures):
            value = s.get(f"div_{col}", float("nan"))
            row[f"div_{col}"] = value
            base = real.get(col, float("nan"))
            row[f"ratio_{col}"] = value / base if base and not math.isnan(base) else float("nan")
        for key, value in s.items():
            if key.startswith("q_"):
                row[key] = value
        rows.append(row)
    return rows


def _protocol_html(protocol: dict[str, Any], reference: dict[str, Any], exp: Experiment) -> str:
    metrics = ", ".join(protocol["metrics"])
    return (
        "<p>"
        f"N = {protocol['inputs']} inputs of the <code>{escape_html(protocol['split'])}</code> split "
        f"(the first N in file order), K = {protocol['samples']} samples each. Diversity of an input is "
        f"the mean over its K-1 consecutive sample pairs (k, k+1) of each pairwise measure ({metrics}; "
        "a similarity s counts as 1 - s), plus the per-pixel standard deviation over the K samples "
        "(std, population, images in [0, 1]); the table averages over inputs. Quality compares every "
        "sample with the target and averages over samples and inputs. "
        f"Seeds: torch.manual_seed({protocol['seed']} + i) before the samples of input i. "
        f"Ratios divide by the same measure on {reference['pairs']} random pairs of distinct real "
        f"targets of the split ({reference['images']} images; std over {reference['groups']} random "
        f"groups of {reference['group_size']} distinct targets), drawn with seed {protocol['seed']}."
        "</p>"
    )


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: format_value(v) for k, v in row.items()})


def _cell(row: dict[str, Any], key: str) -> str:
    """A table cell: the mean, with ``± std`` when several seeds were pooled."""
    value = format_value(row.get(key))
    if int(row.get("seeds", 1)) > 1 and row.get(f"{key}_std") is not None:
        value += f" ± {format_value(row[f'{key}_std'])}"
    return f'<td class="num">{value}</td>'


def _table(
    rows: list[dict[str, Any]], div_cols: list[str], quality_keys: list[str], reference: dict[str, Any]
) -> str:
    seeded = any(int(r.get("seeds", 1)) > 1 for r in rows)
    names = ["variant", "sampler", "steps", *(["seeds"] if seeded else [])]
    names += [*div_cols, *(f"{c} / real" for c in div_cols)]
    head = "".join(f"<th>{escape_html(c)}</th>" for c in names)
    head += "".join(f"<th>{escape_html(k[2:])}</th>" for k in quality_keys)
    body = []
    for row in rows:
        cells = [
            f"<td>{escape_html(row['label'])}</td>",
            f"<td>{escape_html(row['sampler'])}</td>",
            f'<td class="num">{row["step"]}</td>',
        ]
        cells += [f'<td class="num">{row.get("seeds", 1)}</td>'] if seeded else []
        cells += [_cell(row, f"div_{c}") for c in div_cols]
        cells += [_cell(row, f"ratio_{c}") for c in div_cols]
        cells += [_cell(row, k) for k in quality_keys]
        body.append("<tr>" + "".join(cells) + "</tr>")
    real_cells = "".join(f'<td class="num">{format_value(reference["values"].get(c))}</td>' for c in div_cols)
    body.append(
        f'<tr class="muted"><td>real pairs (reference)</td><td></td><td></td>{"<td></td>" if seeded else ""}'
        f"{real_cells}" + '<td class="num">1</td>' * len(div_cols) + "<td></td>" * len(quality_keys) + "</tr>"
    )
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def write_report(
    root: Path,
    exp: Experiment,
    protocol: dict[str, Any],
    reference: dict[str, Any],
    results: list[dict[str, Any]],
    measures: list[PairwiseMeasure],
) -> Path:
    """Write ``diversity.csv`` (every measurement), ``diversity_summary.csv`` (final models, mean
    and std over training seeds), ``diversity.json``, the plots and ``index.html`` in ``root``."""
    rows = table_rows(results, reference, measures)
    summary = pooled(final_rows(rows))
    _write_csv(root / CSV_NAME, rows)
    _write_csv(root / SUMMARY_CSV, summary)
    labels = {m.label: getattr(m.metric, "label", m.name) for m in measures}
    payload = {
        "experiment": exp.name,
        "protocol": protocol,
        "reference": reference,
        "measure_labels": labels,
        "rows": rows,
        "summary": summary,
    }
    (root / JSON_NAME).write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")

    div_cols = diversity_columns(measures)
    first = div_cols[0]
    quality_keys = list(dict.fromkeys(k for row in rows for k in row if k.startswith("q_")))
    # SSIM against the target, and (when measured) the FCN-score against the input label map,
    # which does not punish a plausible output for having other colours than the target.
    y_keys = [k for k in ("q_fcn_pixel_acc", "q_ssim") if k in quality_keys] or quality_keys[:1]
    scatter_html = ""
    for y_key in y_keys:
        name = SCATTER if y_key == y_keys[0] else f"quality_vs_diversity_{y_key[2:]}.png"
        against = "the input label map" if y_key.startswith("q_fcn") else "the target"
        scatter_with_spread(
            summary,
            f"ratio_{first}",
            y_key,
            f"diversity: pairwise {first} as a fraction of real pairs",
            f"quality: {y_key[2:]} against {against}",
            root / name,
        )
        scatter_html += f'<img src="{relative_href(name)}" alt="quality against diversity">'
    if scatter_html:
        scatter_html = (
            "<h2>Quality vs diversity</h2><p>Circled points, joined by the dotted line, form the "
            "Pareto front: no other method has both more diversity and more quality.</p>" + scatter_html
        )
    seeds = max((int(r["seeds"]) for r in summary), default=1)
    spread_note = (
        f"<p>Each figure is the mean over {seeds} training seeds ± the sample standard deviation; "
        "call two rows different only when they differ by more than that spread.</p>"
        if seeds > 1
        else ""
    )
    table = _table(summary, div_cols, quality_keys, reference) + spread_note
    if seeds > 1:
        per_seed = _table(final_rows(rows), div_cols, quality_keys, reference)
        table += f"<details><summary>Every seed</summary>{per_seed}</details>"

    over_time_html = ""
    panels = [(f"ratio_{first}", f"diversity: {first} / real pairs")]
    panels += [(k, f"quality: {k[2:]}") for k in y_keys]
    lines = curves(rows)
    if lines:
        over_time_figure(lines, panels, root / OVER_TIME)
        steps_table = _table(
            [r for points in lines.values() for r in points], div_cols, quality_keys, reference
        )
        over_time_html = (
            "<h2>Over training</h2><p>The same measures on snapshots kept during training, "
            "without retraining.</p>"
            f'<img src="{relative_href(OVER_TIME)}" alt="diversity over training">{steps_table}'
        )
    lpips = [f"{k}: {v}" for k, v in labels.items() if v != k]
    version_note = f"<p>Measures: {escape_html('; '.join(lpips))}.</p>" if lpips else ""

    figures = []
    shown: set[str] = set()
    for r in results:
        group = r.get("group", r["variant"])
        if not r.get("final", True) or (group, r["sampler"]) in shown:
            continue  # one figure per method: the final model of its first seed
        shown.add((group, r["sampler"]))
        fig = Path("figures") / f"{r['variant']}__{r['sampler']}.png"
        run_link = Path("variants") / r["variant"] / INDEX
        link = (
            f' — <a href="{relative_href(run_link)}">training report</a>'
            if (root / run_link).is_file()
            else ""
        )
        note = f"{r['sampler_description']}, step {r['step']}"
        if r.get("seed") is not None:
            note += f", seed {r['seed']}"
        figures.append(
            f"<h3>{escape_html(r['label'])} — {escape_html(r['sampler'])} "
            f"<span class='muted'>({escape_html(note)})</span>{link}</h3>"
            f'<img src="{relative_href(fig)}" alt="samples of {escape_html(r["variant"])}">'
        )
    page = html_page(
        f"{exp.name} — diversity",
        f"<h1>{escape_html(exp.name)} — diversity experiment</h1>"
        f"<h2>Protocol</h2>{_protocol_html(protocol, reference, exp)}{version_note}"
        f"<h2>Results</h2>{table}"
        f'<p>Also as <a href="{SUMMARY_CSV}">CSV</a> (every measurement: <a href="{CSV_NAME}">CSV</a>, '
        f'<a href="{JSON_NAME}">JSON</a>); per-input values in <code>results/</code>.</p>'
        f"{scatter_html}{over_time_html}"
        "<h2>Samples</h2><p>Rows: inputs; columns: the input, samples, the target.</p>" + "".join(figures),
    )
    path = root / INDEX
    path.write_text(page, encoding="utf-8")
    return path
