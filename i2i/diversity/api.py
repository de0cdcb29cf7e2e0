"""The diversity experiment as one call: ``i2i diversity RECIPE`` and ``i2i.diversity(recipe)``."""

from __future__ import annotations

import csv
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from i2i.assembly.host import PluginHost, get_host
from i2i.assembly.sources import Overrides, override_strings
from i2i.diversity.config import Experiment, load_experiment
from i2i.diversity.experiment import DiversityExperiment, ExperimentStopped
from i2i.diversity.report import CSV_NAME


@dataclass
class DiversityResult:
    """The experiment's report page and table (one row per variant and sampler), or how to continue."""

    folder: Path
    report: Path | None
    table: Path | None
    rows: list[dict[str, str]] = field(default_factory=list)  # the CSV's rows, as written
    interrupted: bool = False
    resume_command: str = ""  # the same command again: finished work is reused


def _count(experiment: Experiment) -> str:
    groups = len({v.group for v in experiment.variants})
    models = len(experiment.variants)
    return f"{groups} variants" + (f" ({models} models over their seeds)" if models > groups else "")


def run_diversity(
    recipe: str | Path,
    overrides: Overrides = None,
    *,
    progress: bool = True,
    console: Console | None = None,
    host: PluginHost | None = None,
) -> DiversityResult:
    """Train or reuse each variant of a diversity recipe, sample and score, write the report.

    Running it again continues an interrupted experiment; finished variants and measurements are
    reused. Problems raise :class:`i2i.I2IError`.
    """
    console = console or Console(stderr=True)
    host = host or get_host()
    sets = override_strings(overrides)
    experiment = load_experiment(recipe, host, sets)
    again = shlex.join(["i2i", "diversity", str(recipe), *(f"--set={s}" for s in sets)])
    console.print(
        f"Diversity experiment [bold]{escape(experiment.name)}[/bold]: "
        f"{_count(experiment)}, folder {escape(str(experiment.root))}"
    )
    runner = DiversityExperiment(experiment, host, console=console, show_progress=progress)
    try:
        page = runner.run()
    except ExperimentStopped as exc:
        console.print(f"[yellow]Stopped ({escape(str(exc))}); finished work is kept.[/]")
        return DiversityResult(Path(experiment.root), None, None, interrupted=True, resume_command=again)
    table = page.parent / CSV_NAME
    with table.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return DiversityResult(Path(experiment.root), page, table, rows, resume_command=again)
