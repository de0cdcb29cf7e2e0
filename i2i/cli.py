"""The ``i2i`` command line."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from i2i.errors import DataError, I2IError

DEBUG_ENV = "I2I_DEBUG"

app = typer.Typer(
    name="i2i",
    help="Plugin-based paired image-to-image translation (pix2pix and friends).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: typer's rich help labels every flag <bool>
)
data_app = typer.Typer(help="Get and check datasets.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(data_app, name="data")

out = Console()
err = Console(stderr=True)

SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        metavar="SECTION.KEY=VALUE",
        help="Override a recipe value (repeatable), e.g. train.epochs=5.",
    ),
]


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    if debug:
        os.environ[DEBUG_ENV] = "1"


def _host():
    from i2i.assembly.host import get_host

    return get_host()


def _resolve(recipe_path: Path, overrides: list[str] | None):
    from i2i.assembly.recipe import load_recipe, resolve

    host = _host()
    recipe = resolve(load_recipe(recipe_path, overrides), host, source=str(recipe_path))
    return recipe, host


@app.command("list-plugins")
def list_plugins(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List installed components, the package providing each, and plugins that failed to load."""
    host = _host()
    components = host.components()
    if as_json:
        payload = {
            "components": [
                {
                    "kind": c.kind,
                    "name": c.name,
                    "plugin": c.provider.plugin,
                    "package": c.provider.distribution,
                    "version": c.provider.version,
                    "description": c.description,
                }
                for c in components
            ],
            "failed": [
                {
                    "plugin": f.plugin,
                    "package": f.provider.distribution,
                    "version": f.provider.version,
                    "stage": f.stage,
                    "reason": f.reason,
                }
                for f in host.failures
            ],
        }
        out.print_json(json.dumps(payload))
        return
    table = Table(title="i2i components")
    for col in ("kind", "name", "provided by", "description"):
        table.add_column(col)
    for c in components:
        table.add_row(c.kind, c.name, escape(f"{c.provider} ({c.provider.plugin})"), escape(c.description))
    out.print(table)
    if host.failures:
        failed = Table(title="Plugins that failed to load", title_style="bold red")
        for col in ("plugin", "package", "while", "reason"):
            failed.add_column(col)
        for f in host.failures:
            failed.add_row(f.plugin, escape(str(f.provider)), escape(f.stage), escape(f.reason))
        out.print(failed)
        out.print(
            "Set I2I_STRICT_PLUGINS=1 to make these failures stop i2i with an error "
            "(add --debug for the traceback); I2I_DISABLE_PLUGINS=name skips a plugin."
        )


@app.command()
def validate(
    recipe: Annotated[Path, typer.Argument(help="Recipe TOML file.")],
    set_: SetOption = None,
    show: Annotated[bool, typer.Option("--show", help="Print the resolved recipe.")] = False,
) -> None:
    """Check a recipe without running it; every problem is reported at once."""
    from i2i.assembly.recipe import dumps, load_recipe
    from i2i.diversity.config import is_experiment, load_experiment

    if is_experiment(load_recipe(recipe, set_)):
        experiment = load_experiment(recipe, _host(), set_)
        for variant in experiment.variants:
            if show:
                out.print(f"# variant {variant.name}")
                out.print(escape(dumps(variant.recipe)))
        names = ", ".join(v.name for v in experiment.variants)
        out.print(
            f"[green]{escape(str(recipe))} is a valid diversity experiment ({escape(names)}).[/green]",
            soft_wrap=True,
        )
        return
    resolved, host = _resolve(recipe, set_)
    if show:
        out.print(escape(dumps(resolved)))
    out.print(f"[green]{escape(str(recipe))} is valid.[/green]")
    root = resolved["data"].get("root")
    if not (isinstance(root, str) and not Path(root).exists()):
        from i2i.assembly.build import describe_plan

        for line in describe_plan(resolved, host):
            out.print(escape(line), soft_wrap=True)
    if isinstance(root, str) and not Path(root).exists():
        out.print(
            f"[yellow]Note: data.root {escape(root)!r} does not exist "
            f"(relative to {escape(str(Path.cwd()))}); "
            "get the data with 'i2i data fetch NAME' or point at it with --set data.root=PATH.[/yellow]"
        )


@app.command()
def run(
    recipe: Annotated[
        Path | None,
        typer.Argument(help="Recipe TOML file; with --resume it defaults to the run's own recipe.toml."),
    ] = None,
    set_: SetOption = None,
    resume: Annotated[Path | None, typer.Option(help="Continue this run directory.")] = None,
    no_progress: Annotated[
        bool, typer.Option("--no-progress", help="No progress bar; a plain line every train.log_every steps.")
    ] = False,
    nproc: Annotated[
        int,
        typer.Option(
            "--nproc",
            min=1,
            help="Train on N processes of this machine (one per GPU, or gloo on the CPU) via torchrun; "
            "data.batch_size is per process.",
        ),
    ] = 1,
) -> None:
    """Train a recipe, then evaluate it and write the run's HTML report."""
    import shlex

    from i2i.inference.evaluate import evaluate_checkpoint, summary_table
    from i2i.parallel import distributed
    from i2i.parallel.launch import launch, launched, write_status
    from i2i.reports.run_report import write_index
    from i2i.training.trainer import start_run

    if resume is not None:
        from i2i.runs.rundir import check_resume_dir

        check_resume_dir(resume)  # before its recipe.toml is looked for
    if recipe is None:
        if resume is None:
            raise I2IError("i2i run needs a RECIPE file, or --resume RUN_DIR to continue a run.")
        recipe = resume / "recipe.toml"  # the resolved recipe the run recorded, --set values included
        if not recipe.is_file():
            raise I2IError(
                f"--resume {resume}: {recipe} does not exist, so the run's recipe is unknown (is "
                f"{resume} a run directory made by 'i2i run'?). Name the recipe too: "
                f"i2i run RECIPE --resume {resume}"
            )
    resolved, host = _resolve(recipe, set_)  # a bad recipe stops here, before any process starts
    if nproc > 1 and not launched():  # start torchrun, which runs this command in each process
        args = ["run", str(recipe), *(f"--set={s}" for s in set_ or [])]
        args += (["--resume", str(resume)] if resume else []) + (["--no-progress"] if no_progress else [])
        code = launch(nproc, args)
        if code:
            raise typer.Exit(code=code)
        return
    world = distributed.init(resolved["experiment"]["device"])  # rank 0 of 1 unless torchrun started us
    trainer = start_run(resolved, host, resume_dir=resume, console=err, show_progress=not no_progress)
    if world.is_main:
        processes = f", {world.size} processes" if world.distributed else ""
        err.print(
            f"Run directory: [bold]{escape(str(trainer.run_dir))}[/bold] "
            f"(device {trainer.device}{processes}, {trainer.total_steps():,} steps)"
        )
        if resume is not None and trainer.step >= trainer.total_steps():
            err.print(
                f"[yellow]This run is already complete (step {trainer.step:,} of {trainer.total_steps():,}): "
                "nothing is trained; it is evaluated again and its report rewritten. To train longer, "
                "raise train.epochs or train.max_steps with --set.[/yellow]",
                soft_wrap=True,
            )
    result = trainer.run()
    distributed.shutdown()  # the last collective is behind us; rank 0 evaluates alone (docs/training.md)
    if not world.is_main:
        raise typer.Exit(code=130 if result.interrupted else 0)
    write_status({"run_dir": result.run_dir, "step": result.step, "interrupted": result.interrupted})
    if result.interrupted:
        write_index(result.run_dir)
        again = ["i2i", "run", "--resume", str(result.run_dir)]  # its recipe.toml has --set
        again = shlex.join(again + (["--nproc", str(world.size)] if world.distributed else []))
        err.print(
            f"[yellow]Stopped at step {result.step}; checkpoint saved. Continue with:[/]\n  {escape(again)}",
            soft_wrap=True,
        )
        raise typer.Exit(code=130)
    if resolved["train"]["evaluate"]:
        try:
            summaries = evaluate_checkpoint(result.run_dir, host, show_progress=not no_progress, console=err)
            out.print(summary_table(summaries))
        except DataError as exc:  # the model is trained and saved; only its evaluation is missing
            err.print(
                f"[yellow]Evaluation skipped: {escape(str(exc))} Evaluate later with "
                f"'i2i eval {escape(str(result.run_dir))} --data-root PATH --split NAME'.[/yellow]",
                soft_wrap=True,
            )
    page = write_index(result.run_dir)
    out.print(f"Report: {escape(str(page))}")


@app.command()
def diversity(
    recipe: Annotated[Path, typer.Argument(help="Recipe TOML file with a [diversity] section.")],
    set_: SetOption = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bars.")] = False,
) -> None:
    """Train or reuse each variant, sample K outputs per input, and report diversity vs quality.

    Rerun the same command to continue an interrupted experiment: finished variants and
    measurements are reused.
    """
    import shlex

    from i2i.diversity.config import load_experiment
    from i2i.diversity.experiment import DiversityExperiment, ExperimentStopped

    host = _host()
    experiment = load_experiment(recipe, host, set_)
    again = shlex.join(["i2i", "diversity", str(recipe), *(f"--set={s}" for s in set_ or [])])
    err.print(
        f"Diversity experiment [bold]{escape(experiment.name)}[/bold]: "
        f"{len(experiment.variants)} variants, folder {escape(str(experiment.root))}"
    )
    try:
        runner = DiversityExperiment(experiment, host, console=err, show_progress=not no_progress)
        page = runner.run()
    except (ExperimentStopped, KeyboardInterrupt) as exc:
        where = f" ({exc})" if isinstance(exc, ExperimentStopped) else ""
        err.print(
            f"[yellow]Stopped{escape(where)}; finished work is kept. Continue with:[/]\n  {escape(again)}"
        )
        raise typer.Exit(code=130) from None
    from i2i.diversity.report import CSV_NAME

    out.print(f"Report: {escape(str(page))} (table: {escape(str(page.parent / CSV_NAME))})")


@app.command("eval")
def eval_(
    target: Annotated[Path, typer.Argument(help="Run directory or checkpoint file.")],
    mode: Annotated[str, typer.Option(help="eval, train or both.")] = "",
    data_root: Annotated[str | None, typer.Option(help="Evaluate on data in this folder.")] = None,
    split: Annotated[str | None, typer.Option(help="Split to evaluate (default: recipe's).")] = None,
    max_items: Annotated[int | None, typer.Option(help="Evaluate at most N images.")] = None,
    out_dir: Annotated[Path | None, typer.Option(help="Where to write reports.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda...")] = None,
    metrics: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated metric names instead of the recipe's eval.metrics "
            "(default parameters), e.g. l1,psnr,ssim,fcn_pixel_acc,fcn_class_acc,fcn_iou."
        ),
    ] = None,
) -> None:
    """Translate a split with a trained generator and report L1, PSNR, SSIM (and more)."""
    from i2i.inference.evaluate import evaluate_checkpoint, summary_table
    from i2i.reports.run_report import write_index

    modes = {"": None, "both": ["eval", "train"], "eval": ["eval"], "train": ["train"]}
    if mode not in modes:
        raise I2IError(f"--mode {mode!r}: use eval, train or both.")
    changes: dict = {"data": {}, "eval": {}}
    if data_root:
        changes["data"]["root"] = data_root
    if split:
        changes["eval"]["split"] = split
    if max_items is not None:
        changes["eval"]["max_items"] = max_items
    if metrics:
        names = [m.strip() for m in metrics.split(",") if m.strip()]
        known = _host().registry("metric")
        for name in names:
            known.get(name)  # an unknown name stops here, with suggestions
        changes["eval"]["metrics"] = names
    summaries = evaluate_checkpoint(
        target,
        _host(),
        modes=modes[mode],
        recipe_changes=changes,
        out_dir=out_dir,
        device=device,
        console=err,
    )
    out.print(summary_table(summaries))
    if target.is_dir() and out_dir is None:
        out.print(f"Report: {escape(str(write_index(target)))}")


@app.command()
def translate(
    checkpoint: Annotated[Path, typer.Argument(help="Run directory or checkpoint file.")],
    input_dir: Annotated[Path, typer.Argument(help="Folder of input images.")],
    output_dir: Annotated[Path, typer.Argument(help="Where translated images go.")],
    aligned: Annotated[
        bool,
        typer.Option(help="Inputs are A|B pairs: take the input half by the recipe's direction."),
    ] = False,
    size: Annotated[
        int | None,
        typer.Option(help="Resize inputs to SIZE x SIZE first (e.g. the training crop size)."),
    ] = None,
    mode: Annotated[str, typer.Option(help="Inference mode: eval or train.")] = "eval",
    device: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Apply a trained generator to a folder of images; outputs keep the inputs' sizes."""
    from i2i.inference.translate import translate_folder

    report = translate_folder(
        checkpoint,
        input_dir,
        output_dir,
        _host(),
        aligned=aligned,
        size=size,
        mode=mode,
        device=device,
        console=err,
    )
    out.print(f"Translated {report.count} images into {escape(str(output_dir))}.")
    for note in report.notes:
        out.print(f"[yellow]{escape(note)}[/yellow]")


@app.command()
def export(
    checkpoint: Annotated[Path, typer.Argument(help="Run directory or checkpoint file.")],
    out_dir: Annotated[Path | None, typer.Option(help="Default: next to the checkpoint.")] = None,
    formats: Annotated[
        str, typer.Option("--format", help="torchscript, onnx, safetensors, a comma list, or both")
    ] = "both",
    size: Annotated[int, typer.Option(help="Example input side length in pixels.")] = 256,
    half: Annotated[bool, typer.Option("--half", help="safetensors: store fp16 weights.")] = False,
) -> None:
    """Write the generator as TorchScript, ONNX and/or safetensors, checked against the original.

    "both" means TorchScript and ONNX; safetensors (weights plus the recipe, loadable by
    metrics such as the FCN-score) is written when asked for.
    """
    from i2i.inference.export import export_generator

    wanted = ["torchscript", "onnx"] if formats == "both" else [f.strip() for f in formats.split(",")]
    missing: list[str] | None = [] if formats == "both" else None  # "both": what is installed
    exported = export_generator(
        checkpoint, _host(), wanted, out_dir=out_dir, size=size, half=half, missing=missing
    )
    for path, diff in exported:
        out.print(f"Wrote {escape(str(path))} (max difference to PyTorch: {diff:.2e})", soft_wrap=True)
    for note in missing or []:
        out.print(f"[yellow]{escape(note)}[/yellow]")


@app.command()
def bench(
    recipe: Annotated[Path, typer.Argument(help="Recipe TOML file.")],
    steps: Annotated[int, typer.Option("--steps", min=1, help="Timed training steps per run.")] = 10,
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="Runs of each variant.")] = 3,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Untimed steps first.")] = 3,
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the results here.")] = None,
    set_: SetOption = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="No progress bar.")] = False,
) -> None:
    """Time training and inference of RECIPE here, each speed-up against the plain path."""
    from i2i.training.bench import bench as run_bench
    from i2i.training.bench import describe_extras, table

    resolved, _ = _resolve(recipe, set_)
    summary = run_bench(
        resolved, steps=steps, repeats=repeats, warmup=warmup, console=err, show_progress=not no_progress
    )
    # Wide enough for every column even in a log file (without a terminal rich assumes 80).
    out.print(table(summary), width=None if out.is_terminal else 180)
    for line in describe_extras(summary):
        out.print(escape(line), highlight=False)
    if json_path is not None:
        from i2i.runs.outputs import output_folder

        output_folder(json_path.parent, "The folder of --json")
        json_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        out.print(f"Results: {escape(str(json_path))}")


@app.command()
def serve(
    checkpoint: Annotated[Path, typer.Argument(help="Run directory or checkpoint file.")],
    host: Annotated[
        str, typer.Option(help="Address to listen on; the default keeps the page on this machine.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 7860,
    palette: Annotated[
        str | None,
        typer.Option(
            help="Canvas colours: a registered palette (see list-plugins) or a JSON file. "
            "Default: the registered one that matches the training inputs."
        ),
    ] = None,
    size: Annotated[
        int | None,
        typer.Option(help="Resize inputs to SIZE x SIZE for G (default: the training crop; 0: never)."),
    ] = None,
    canvas: Annotated[int, typer.Option(help="Side of the drawing canvas in pixels.")] = 256,
    device: Annotated[str | None, typer.Option()] = None,
    threads: Annotated[
        int | None, typer.Option(help="CPU threads for the generator (default: PyTorch's, one per core).")
    ] = None,
) -> None:
    """Open a local web page: draw a label map or upload an input and see the generator's answer.

    Needs the serve extra (pip install 'i2i[serve]'). Outputs are what 'i2i translate --size SIZE'
    writes for the same input; samplers add test-time dropout or latent codes.
    """
    from i2i.serve.app import require_gradio

    require_gradio()
    from i2i.serve.app import build_app, host_warning, launch
    from i2i.serve.labels import choose_palette
    from i2i.serve.model import ServedModel

    if not 1 <= port <= 65535:
        raise I2IError(f"--port {port}: choose a port from 1 to 65535 (e.g. 7860).")
    if not 32 <= canvas <= 2048:
        raise I2IError(f"--canvas {canvas}: choose a side from 32 to 2048 pixels.")
    if threads is not None:
        if threads < 1:
            raise I2IError(f"--threads {threads}: give at least 1.")
        import torch

        torch.set_num_threads(threads)  # on a busy CPU, fewer threads answer sooner
    plugins = _host()
    model = ServedModel(checkpoint, plugins, size=size, device=device)
    examples = model.examples()
    chosen, note = choose_palette(palette, plugins, examples)
    err.print(escape(note), soft_wrap=True)
    warning = host_warning(host, port)
    if warning:
        err.print(f"[bold yellow]Warning:[/bold yellow] {escape(warning)}", soft_wrap=True)
    demo = build_app(model, chosen, note, examples, canvas=canvas)
    err.print(f"Serving {escape(model.path)} on {model.device}; press Ctrl+C to stop.", soft_wrap=True)
    launch(demo, host, port)


@data_app.command("fetch")
def data_fetch(
    name: Annotated[str, typer.Argument(help="Dataset name, e.g. facades.")],
    dest: Annotated[Path | None, typer.Option(help="Default: datasets/NAME")] = None,
    url: Annotated[str | None, typer.Option(help="Download from this address instead.")] = None,
) -> None:
    """Download a pix2pix dataset archive and verify what arrived."""
    from i2i.data.fetch import fetch_dataset

    root = fetch_dataset(name, dest or Path("datasets") / name, url=url)
    out.print(f"[green]{escape(name)} is ready in {escape(str(root))}[/green]")


@data_app.command("verify")
def data_verify(
    target: Annotated[
        Path, typer.Argument(help="A recipe (.toml): check its data; or a facades folder (train/, test/).")
    ],
    set_: SetOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Check a dataset before training: items per split, image sizes, bad files and pairing.

    With a recipe, its dataset is built for the training and evaluation splits exactly as a run
    would build it, and every file's header is checked. Exit code 1 when a split cannot be used.
    """
    if target.suffix.lower() != ".toml":
        from i2i.data.fetch import verify_facades

        summary = verify_facades(target)
        out.print_json(json.dumps(summary, default=str))
        return
    from i2i.assembly.build import build_dataset
    from i2i.data.scan import verify_splits

    recipe, host = _resolve(target, set_)
    splits = list(dict.fromkeys(["train", recipe["eval"]["split"]]))
    reports = verify_splits(lambda split: build_dataset(recipe, host, split), splits)
    if as_json:
        payload = [
            {
                "split": r.split,
                "items": r.items,
                "sizes": {f"{w}x{h}": n for (w, h), n in r.sizes.most_common()},
                "bad": [{"path": str(p.path), "reason": p.reason} for p in r.bad],
                "warnings": r.warnings,
                "error": r.error,
            }
            for r in reports
        ]
        out.print_json(json.dumps({"recipe": str(target), "splits": payload}))
    else:
        table = Table(title=f"{recipe['data']['name']} data of {target}")
        for col in ("split", "items", "image sizes (WxH: files)", "bad files", "status"):
            table.add_column(col)
        for r in reports:
            sizes = ", ".join(f"{w}x{h}: {n}" for (w, h), n in r.sizes.most_common(3))
            if len(r.sizes) > 3:
                sizes += f", ... ({len(r.sizes)} sizes)"
            status = (
                "[red]unusable[/red]"
                if r.error
                else ("[red]bad files[/red]" if r.bad else "[green]ok[/green]")
            )
            table.add_row(r.split, str(r.items), sizes, str(len(r.bad)), status)
        out.print(table)
        for r in reports:
            if r.error:
                out.print(f"[red]{escape(r.split)}:[/red] {escape(r.error)}", soft_wrap=True)
            for p in r.bad[:20]:
                out.print(
                    f"[red]{escape(r.split)}:[/red] {escape(str(p.path))} {escape(p.reason)}", soft_wrap=True
                )
            if len(r.bad) > 20:
                out.print(f"[red]{escape(r.split)}:[/red] ... and {len(r.bad) - 20} more bad files")
            for w in r.warnings:
                out.print(f"[yellow]{escape(r.split)}: {escape(w)}[/yellow]", soft_wrap=True)
    unusable = [r.split for r in reports if r.error or r.bad]
    if unusable:
        train_bad = any(r.split == "train" and r.bad and not r.error for r in reports)
        hint = (
            " Fix or delete the bad files, or set data.skip_bad = true to leave them out."
            if train_bad
            else ""
        )
        raise I2IError(f"{target}: the data of split(s) {', '.join(unusable)} cannot be used as it is.{hint}")


#: Exit codes, one per class of outcome (docs/reliability.md#exit-codes). 0 is success.
EXIT_USER_ERROR = 1  # a problem with the user's input: one paragraph naming the file or key
EXIT_USAGE = 2  # the command line itself (unknown option or command, missing argument): click's code
EXIT_INTERNAL = 3  # a bug in i2i or a plugin
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM; what was finished is kept (a run prints how to resume)


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one paragraph on stderr and exit code 1 (codes above)."""
    debug = "--debug" in (argv if argv is not None else sys.argv) or os.environ.get(DEBUG_ENV, "") not in (
        "",
        "0",
    )
    try:
        app(args=argv, standalone_mode=True)
    except I2IError as exc:
        if debug:
            raise
        err.print(f"[bold red]Error:[/bold red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        err.print("Interrupted.")
        sys.exit(EXIT_INTERRUPTED)
    except OSError as exc:  # the file system refused: the user's files or disk, not a bug
        if debug:
            raise
        from i2i.runs.outputs import describe_os_error

        err.print(
            f"[bold red]Error:[/bold red] {escape(describe_os_error(exc))}", highlight=False, soft_wrap=True
        )
        sys.exit(EXIT_USER_ERROR)
    except Exception as exc:  # an internal error: keep it short unless asked
        if debug:
            raise
        err.print(
            f"[bold red]Internal error:[/bold red] {type(exc).__name__}: "
            f"{escape(str(exc))}\nRun again with --debug (or {DEBUG_ENV}=1) for the "
            "traceback, and please report it.",
            highlight=False,
        )
        sys.exit(EXIT_INTERNAL)
