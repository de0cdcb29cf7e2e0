"""Train a recipe, evaluate the trained generator, write its report: ``i2i run``, :func:`i2i.train`."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from i2i.assembly.host import PluginHost, get_host
from i2i.assembly.sources import Overrides, RecipeSource, override_strings, resolved
from i2i.errors import DataError, I2IError
from i2i.parallel import distributed
from i2i.parallel.launch import launch, launched, write_status
from i2i.reports.run_report import write_index
from i2i.runs.rundir import check_resume_dir
from i2i.workflows.evaluate import EvalResult, evaluate


@dataclass
class TrainResult:
    """How a training run ended: where it is, how far it got, and its evaluation."""

    run_dir: Path | None  # None only in a launcher whose workers never reported one
    step: int
    interrupted: bool
    evaluation: EvalResult | None = None  # None when interrupted, not asked for, or the data is missing
    report: Path | None = None
    notes: list[str] = field(default_factory=list)
    resume_command: str | None = None  # how to continue an interrupted run, as a shell command
    exit_code: int = 0  # what ``i2i run`` exits with: 0 done, 130 interrupted (checkpoint kept)
    #: True in a process that does not report: the launcher of ``--nproc`` and ranks other than 0.
    reported_elsewhere: bool = False

    @property
    def metrics(self) -> dict[str, dict[str, float]]:
        """``{mode: {metric: mean}}`` of the evaluation (empty without one)."""
        return self.evaluation.metrics if self.evaluation else {}


def recipe_of_resume(resume: Path) -> Path:
    """The recipe a resumed run continues with: the resolved one the run recorded, --set values included."""
    check_resume_dir(resume)  # before its recipe.toml is looked for
    recipe = resume / "recipe.toml"
    if not recipe.is_file():
        raise I2IError(
            f"--resume {resume}: {recipe} does not exist, so the run's recipe is unknown (is "
            f"{resume} a run directory made by 'i2i run'?). Name the recipe too: "
            f"i2i run RECIPE --resume {resume}"
        )
    return recipe


def train(
    recipe: RecipeSource | None = None,
    overrides: Overrides = None,
    *,
    resume: str | Path | None = None,
    nproc: int = 1,
    evaluate_after: bool | None = None,
    progress: bool = True,
    console: Console | None = None,
    host: PluginHost | None = None,
) -> TrainResult:
    """Train ``recipe`` (a TOML path or a dict), then evaluate and report, as ``i2i run`` does.

    ``resume`` continues a run directory (with its own recipe.toml when ``recipe`` is None).
    ``nproc > 1`` starts that many processes through torchrun (the recipe must be a file).
    ``evaluate_after`` overrides the recipe's ``train.evaluate``. Problems raise :class:`i2i.I2IError`.
    """
    console = console or Console(stderr=True)
    host = host or get_host()
    resume = Path(resume) if resume is not None else None
    if recipe is None:
        if resume is None:
            raise I2IError("i2i run needs a RECIPE file, or --resume RUN_DIR to continue a run.")
        recipe = recipe_of_resume(resume)
    elif resume is not None:
        check_resume_dir(resume)
    sets = override_strings(overrides)
    plan = resolved(recipe, host, sets)  # a bad recipe stops here, before any process starts
    if nproc > 1 and not launched():
        return _launch(recipe, sets, resume, nproc, progress)
    world = distributed.init(plan["experiment"]["device"])  # rank 0 of 1 unless torchrun started us
    from i2i.training.start import start_run

    trainer = start_run(plan, host, resume_dir=resume, console=console, show_progress=progress)
    notes: list[str] = []
    if world.is_main:
        processes = f", {world.size} processes" if world.distributed else ""
        console.print(
            f"Run directory: [bold]{escape(str(trainer.run_dir))}[/bold] "
            f"(device {trainer.device}{processes}, {trainer.total_steps():,} steps)"
        )
        if resume is not None and trainer.step >= trainer.total_steps():
            console.print(
                f"[yellow]This run is already complete (step {trainer.step:,} of {trainer.total_steps():,}): "
                "nothing is trained; it is evaluated again and its report rewritten. To train longer, "
                "raise train.epochs or train.max_steps with --set.[/yellow]",
                soft_wrap=True,
            )
    run = trainer.run()
    distributed.shutdown()  # the last collective is behind us; rank 0 evaluates alone (docs/training.md)
    result = TrainResult(run.run_dir, run.step, run.interrupted, exit_code=130 if run.interrupted else 0)
    if not world.is_main:
        result.reported_elsewhere = True
        return result
    write_status({"run_dir": run.run_dir, "step": run.step, "interrupted": run.interrupted})
    if run.interrupted:
        result.report = write_index(run.run_dir)
        again = ["i2i", "run", "--resume", str(run.run_dir)]  # its recipe.toml has the --set values
        again += ["--nproc", str(world.size)] if world.distributed else []
        result.resume_command = shlex.join(again)
        return result
    wanted = plan["train"]["evaluate"] if evaluate_after is None else evaluate_after
    if wanted:
        try:
            result.evaluation = evaluate(
                run.run_dir, progress=progress, console=console, host=host, write_report=False
            )
        except DataError as exc:  # the model is trained and saved; only its evaluation is missing
            notes.append(
                f"Evaluation skipped: {exc} Evaluate later with "
                f"'i2i eval {run.run_dir} --data-root PATH --split NAME'."
            )
    result.notes = notes
    result.report = write_index(run.run_dir)
    return result


def _launch(
    recipe: RecipeSource, sets: list[str], resume: Path | None, nproc: int, progress: bool
) -> TrainResult:
    """Start torchrun, which runs ``i2i run`` in each process; rank 0 reports back how it ended."""
    if isinstance(recipe, Mapping):
        raise I2IError(
            "Training on several processes (nproc > 1) needs the recipe as a TOML file: torchrun "
            "starts 'i2i run RECIPE' in each process. Save it as a .toml file first."
        )
    args = ["run", str(recipe), *(f"--set={s}" for s in sets)]
    args += (["--resume", str(resume)] if resume else []) + ([] if progress else ["--no-progress"])
    code = launch(nproc, args)  # rank 0 inside torchrun evaluated, reported and printed
    return TrainResult(None, 0, code == 130, exit_code=code, reported_elsewhere=True)
