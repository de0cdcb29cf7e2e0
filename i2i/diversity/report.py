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
from i2i.reports.run_report import INDEX, escape_html, format_value, html_page, relative_href

CSV_NAME = "diversity.csv"
JSON_NAME = "diversity.json"
SCATTER = "quality_vs_diversity.png"


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


def _scatter(rows: list[dict[str, Any]], x_key: str, y_key: str, x_label: str, y_label: str, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 5.0), dpi=110)
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    markers = {"eval": "o", "train": "s"}
    colours = plt.get_cmap("tab10")
    for i, variant in enumerate(variants):
        for r in (r for r in rows if r["variant"] == variant):
            x, y = r.get(x_key), r.get(y_key)
            if x is None or y is None or math.isnan(x) or math.isnan(y):
                continue
            ax.scatter(
                x,
                y,
                color=colours(i % 10),
                marker=markers.get(r["mode"], "^"),
                s=60,
                label=f"{variant} / {r['sampler']}",
            )
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.axvline(1.0, color="#999", linestyle="--", linewidth=1)
    ax.text(1.0, ax.get_ylim()[0], " real pairs", color="#777", fontsize=8, va="bottom")
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title("Quality vs diversity (circles: eval-mode network, squares: train mode)", fontsize=10)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


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


def write_report(
    root: Path,
    exp: Experiment,
    protocol: dict[str, Any],
    reference: dict[str, Any],
    results: list[dict[str, Any]],
    measures: list[PairwiseMeasure],
) -> Path:
    """Write ``diversity.csv``, ``diversity.json``, the scatter plot and ``index.html`` in ``root``."""
    rows = table_rows(results, reference, measures)
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with (root / CSV_NAME).open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: format_value(v) for k, v in row.items()})
    labels = {m.label: getattr(m.metric, "label", m.name) for m in measures}
    payload = {
        "experiment": exp.name,
        "protocol": protocol,
        "reference": reference,
        "measure_labels": labels,
        "rows": rows,
    }
    (root / JSON_NAME).write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")

    first = diversity_columns(measures)[0]
    quality_keys = [k for k in columns if k.startswith("q_")]
    # SSIM against the target, and (when measured) the FCN-score against the input label map,
    # which does not punish a plausible output for having other colours than the target.
    y_keys = [k for k in ("q_ssim", "q_fcn_pixel_acc") if k in quality_keys] or quality_keys[:1]
    scatter_html = ""
    for y_key in y_keys:
        name = SCATTER if y_key == y_keys[0] else f"quality_vs_diversity_{y_key[2:]}.png"
        against = "the input label map" if y_key.startswith("q_fcn") else "the target"
        _scatter(
            rows,
            f"ratio_{first}",
            y_key,
            f"diversity: pairwise {first} as a fraction of real pairs",
            f"quality: {y_key[2:]} against {against}",
            root / name,
        )
        scatter_html += f'<img src="{relative_href(name)}" alt="quality against diversity">'
    if scatter_html:
        scatter_html = f"<h2>Quality vs diversity</h2>{scatter_html}"

    div_cols = diversity_columns(measures)
    head = "".join(
        f"<th>{escape_html(c)}</th>"
        for c in ["variant", "sampler", "steps", *div_cols, *(f"{c} / real" for c in div_cols)]
    )
    head += "".join(f"<th>{escape_html(k[2:])}</th>" for k in quality_keys)
    body = []
    for row in rows:
        cells = [
            f"<td>{escape_html(row['label'])}</td>",
            f"<td>{escape_html(row['sampler'])}</td>",
            f'<td class="num">{row["step"]}</td>',
        ]
        cells += [f'<td class="num">{format_value(row[f"div_{c}"])}</td>' for c in div_cols]
        cells += [f'<td class="num">{format_value(row[f"ratio_{c}"])}</td>' for c in div_cols]
        cells += [f'<td class="num">{format_value(row.get(k))}</td>' for k in quality_keys]
        body.append("<tr>" + "".join(cells) + "</tr>")
    real_cells = "".join(f'<td class="num">{format_value(reference["values"].get(c))}</td>' for c in div_cols)
    body.append(
        f'<tr class="muted"><td>real pairs (reference)</td><td></td><td></td>{real_cells}'
        + '<td class="num">1</td>' * len(div_cols)
        + "<td></td>" * len(quality_keys)
        + "</tr>"
    )
    table = f"<table><tr>{head}</tr>{''.join(body)}</table>"
    lpips = [f"{k}: {v}" for k, v in labels.items() if v != k]
    version_note = f"<p>Measures: {escape_html('; '.join(lpips))}.</p>" if lpips else ""

    figures = []
    for r in results:
        fig = Path("figures") / f"{r['variant']}__{r['sampler']}.png"
        run_link = Path("variants") / r["variant"] / INDEX
        link = (
            f' — <a href="{relative_href(run_link)}">training report</a>'
            if (root / run_link).is_file()
            else ""
        )
        note = f"{r['sampler_description']}, step {r['step']}"
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
        f'<p>Also as <a href="{CSV_NAME}">CSV</a> and <a href="{JSON_NAME}">JSON</a>; per-input values '
        "in <code>results/</code>.</p>"
        f"{scatter_html}<h2>Samples</h2><p>Rows: inputs; columns: the input, samples, the target.</p>"
        + "".join(figures),
    )
    path = root / INDEX
    path.write_text(page, encoding="utf-8")
    return path
