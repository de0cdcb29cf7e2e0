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

from i2i.errors import I2IError

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


DirectionOption = Annotated[
    str,
    typer.Option(help="AtoB, or BtoA for the reverse generator of a model that has one (cyclegan)."),
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


def show_table(table: Table) -> None:
    """A table on stdout; without a terminal (a pipe, a file) as wide as its content, so that no
    name or value is ever cut to fit 80 columns."""
    if out.is_terminal:
        out.print(table)
        return
    from rich.measure import Measurement

    width = Measurement.get(out, out.options.update(width=100_000), table).maximum
    before = out.width
    out.width = max(width, before)
    try:
        out.print(table)
    finally:
        out.width = before


def _provided_by(entry: dict) -> str:
    """The distribution and version that installed a plugin, or the plugin's name without one."""
    if entry["package"]:
        return f"{entry['package']} {entry['version'] or ''}".strip()
    return entry["plugin"]


@app.command("list-plugins")
def list_plugins(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List installed components, the package providing each, and plugins that failed to load."""
    from i2i.workflows.preflight import plugin_listing

    listing = plugin_listing(_host())
    if as_json:
        out.print_json(json.dumps(listing))
        return
    table = Table(title="i2i components")
    for col in ("kind", "name", "provided by", "description"):
        table.add_column(col)
    for c in listing["components"]:
        provider = f"{_provided_by(c)} ({c['plugin']})"
        table.add_row(c["kind"], c["name"], escape(provider), escape(c["description"]))
    show_table(table)
    if listing["failed"]:
        failed = Table(title="Plugins that failed to load", title_style="bold red")
        for col in ("plugin", "package", "while", "reason"):
            failed.add_column(col)
        for f in listing["failed"]:
            failed.add_row(f["plugin"], escape(_provided_by(f)), escape(f["stage"]), escape(f["reason"]))
        show_table(failed)
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
    from i2i.workflows.preflight import validate as check

    result = check(recipe, _host(), set_)
    if show:
        out.print(escape(result.dumps()))
    if result.experiment:
        names = result.variants
        out.print(
            f"[green]{escape(str(recipe))} is a valid diversity experiment ({escape(names)}).[/green]",
            soft_wrap=True,
        )
        return
    out.print(f"[green]{escape(str(recipe))} is valid.[/green]")
    for line in result.plan:
        out.print(escape(line), soft_wrap=True)
    if result.missing_root is not None:
        out.print(
            f"[yellow]Note: data.root {escape(result.missing_root)!r} does not exist "
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
    from i2i.inference.evaluate import summary_table
    from i2i.workflows.train import train

    result = train(recipe, set_, resume=resume, nproc=nproc, progress=not no_progress, console=err)
    if result.reported_elsewhere:  # a launcher, or a worker other than rank 0: rank 0 said it all
        raise typer.Exit(code=result.exit_code)
    if result.interrupted:
        err.print(
            f"[yellow]Stopped at step {result.step}; checkpoint saved. Continue with:[/]\n"
            f"  {escape(result.resume_command or '')}",
            soft_wrap=True,
        )
        raise typer.Exit(code=130)
    if result.evaluation is not None:
        show_table(summary_table(result.evaluation.summaries))
    for note in result.notes:
        err.print(f"[yellow]{escape(note)}[/yellow]", soft_wrap=True)
    if result.report is not None:
        out.print(f"Report: {escape(str(result.report))}")


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

    from i2i.diversity.api import run_diversity

    try:
        result = run_diversity(recipe, set_, progress=not no_progress, console=err)
    except KeyboardInterrupt:
        again = shlex.join(["i2i", "diversity", str(recipe), *(f"--set={s}" for s in set_ or [])])
        err.print(f"[yellow]Stopped; finished work is kept. Continue with:[/]\n  {escape(again)}")
        raise typer.Exit(code=130) from None
    if result.interrupted:
        err.print(f"[yellow]Continue with:[/]\n  {escape(result.resume_command)}")
        raise typer.Exit(code=130)
    out.print(f"Report: {escape(str(result.report))} (table: {escape(str(result.table))})")


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
    from i2i.inference.evaluate import summary_table
    from i2i.workflows.evaluate import evaluate

    result = evaluate(
        target,
        mode=mode or None,
        data_root=data_root,
        split=split,
        max_items=max_items,
        metrics=metrics,
        out_dir=out_dir,
        device=device,
        console=err,
    )
    show_table(summary_table(result.summaries))
    if result.report is not None:
        out.print(f"Report: {escape(str(result.report))}")


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
    direction: DirectionOption = "AtoB",
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
        direction=direction,
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
    direction: DirectionOption = "AtoB",
) -> None:
    """Write the generator as TorchScript, ONNX and/or safetensors, checked against the original.

    "both" means TorchScript and ONNX; safetensors (weights plus the recipe, loadable by
    metrics such as the FCN-score) is written when asked for.
    """
    from i2i.inference.export import export_generator

    wanted = ["torchscript", "onnx"] if formats == "both" else [f.strip() for f in formats.split(",")]
    missing: list[str] | None = [] if formats == "both" else None  # "both": what is installed
    exported = export_generator(
        checkpoint,
        _host(),
        wanted,
        out_dir=out_dir,
        size=size,
        half=half,
        missing=missing,
        direction=direction,
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
    from i2i.assembly.sources import resolved as resolve
    from i2i.training.bench import bench as run_bench
    from i2i.training.bench import describe_extras, table

    resolved = resolve(recipe, _host(), set_)
    summary = run_bench(
        resolved, steps=steps, repeats=repeats, warmup=warmup, console=err, show_progress=not no_progress
    )
    show_table(table(summary))
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
    direction: DirectionOption = "AtoB",
) -> None:
    """Open a local web page: draw a label map or upload an input and see the generator's answer.

    Needs the serve extra (pip install 'i2i[serve]'). Outputs are what 'i2i translate --size SIZE'
    writes for the same input; samplers add test-time dropout or latent codes.
    """
    from i2i.serve.app import serve as serve_page

    serve_page(
        checkpoint,
        _host(),
        address=host,
        port=port,
        palette=palette,
        size=size,
        canvas=canvas,
        device=device,
        threads=threads,
        direction=direction,
        console=err,
    )


@data_app.command("fetch")
def data_fetch(
    name: Annotated[
        str,
        typer.Argument(
            help="A dataset the pix2pix or CycleGAN authors published: facades, maps, edges2shoes, "
            "edges2handbags, night2day (pix2pix, aligned pairs), horse2zebra, monet2photo, ... "
            "(CycleGAN, unaligned folders; cyclegan/maps and cyclegan/facades for the two names both "
            "use). An unknown name lists them all."
        ),
    ],
    dest: Annotated[Path | None, typer.Option(help="Default: datasets/NAME")] = None,
    url: Annotated[str | None, typer.Option(help="Download from this address instead.")] = None,
) -> None:
    """Download a dataset archive of the pix2pix or CycleGAN authors and verify what arrived."""
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
    from i2i.workflows.preflight import verify_data

    result = verify_data(target, _host(), set_)
    if as_json:
        out.print_json(json.dumps(result.as_dict()))
    else:
        table = Table(title=f"{result.name} data of {target}")
        for col in ("split", "items", "image sizes (WxH: files)", "bad files", "status"):
            table.add_column(col)
        for r in result.reports:
            sizes = ", ".join(f"{w}x{h}: {n}" for (w, h), n in r.sizes.most_common(3))
            if len(r.sizes) > 3:
                sizes += f", ... ({len(r.sizes)} sizes)"
            status = (
                "[red]unusable[/red]"
                if r.error
                else ("[red]bad files[/red]" if r.bad else "[green]ok[/green]")
            )
            table.add_row(r.split, str(r.items), sizes, str(len(r.bad)), status)
        show_table(table)
        for r in result.reports:
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
    problem = result.problem()
    if problem is not None:
        raise problem


#: Exit codes (docs/reliability.md): 2 is the command-line parser's own, for a usage error.
EXIT_USER_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130


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
        from i2i.parallel.launch import lost_peer_message

        lost = lost_peer_message(exc)  # a worker of a distributed run whose peer died: not a bug
        if lost is not None:
            if lost:  # "" when the 'i2i run --nproc' launcher explains what happened
                err.print(f"[bold red]Error:[/bold red] {escape(lost)}", highlight=False, soft_wrap=True)
            sys.exit(EXIT_USER_ERROR)
        err.print(
            f"[bold red]Internal error:[/bold red] {type(exc).__name__}: "
            f"{escape(str(exc))}\nRun again with --debug (or {DEBUG_ENV}=1) for the "
            "traceback, and please report it.",
            highlight=False,
        )
        sys.exit(EXIT_INTERNAL)
