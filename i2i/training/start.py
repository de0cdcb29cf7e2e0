"""Starting a run: its directory (new, or the one to resume), the recorded recipe and plugins, the
lock that keeps a second process out, and the :class:`~i2i.training.trainer.Trainer`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from rich.console import Console
from rich.markup import escape

from i2i.assembly.build import build_dataset, build_metrics, describe_evaluation, describe_split
from i2i.assembly.host import PluginHost
from i2i.assembly.recipe import Recipe, dumps
from i2i.data.scan import check_split
from i2i.errors import DataError
from i2i.parallel import distributed
from i2i.runs.rundir import RunLock, check_resume_dir, new_run_dir, plugins_used, remove_new_run_dir
from i2i.training.trainer import Trainer
from i2i.version import __version__


def check_eval_split(recipe: Recipe, host: PluginHost, console: Console) -> None:
    """Say how large the evaluation will be, and find bad files of its split now, not after hours
    of training. A missing split is not an error here: the run then ends with its report and a hint.
    """
    split = recipe["eval"]["split"]
    try:
        dataset = build_dataset(recipe, host, split)
    except DataError:
        console.print(escape(describe_evaluation(recipe, None)), soft_wrap=True, highlight=False)
        return
    console.print(escape(describe_evaluation(recipe, len(dataset))), soft_wrap=True, highlight=False)
    _, notes = check_split(dataset, describe_split(recipe, split), recipe["data"]["skip_bad"])
    for note in notes:
        console.print(f"[yellow]Note: {escape(note)}[/yellow]", soft_wrap=True)


def start_run(
    recipe: Recipe,
    host: PluginHost,
    *,
    resume_dir: Path | None = None,
    console: Console | None = None,
    show_progress: bool = True,
) -> Trainer:
    """Create (or reopen) the run directory, record the recipe and plugins, and make a Trainer.

    Evaluation metrics are built first, so that one that cannot work (FID without its weights file)
    stops the run before training rather than after it.
    """
    world = distributed.world()  # with several processes only rank 0 touches the run directory
    if recipe["train"]["evaluate"] and world.is_main:
        build_metrics(recipe["eval"]["metrics"], host)
        check_eval_split(recipe, host, console or Console(stderr=True))
    output_dir = Path(recipe["experiment"]["output_dir"])
    output_dir_existed = output_dir.is_dir()
    if resume_dir is not None:
        run_dir = check_resume_dir(Path(resume_dir)) if world.is_main else Path(resume_dir)
    else:
        run_dir = world.broadcast(new_run_dir(recipe) if world.is_main else None)
    lock = RunLock(run_dir)
    try:
        if world.is_main:
            lock.acquire()
        trainer = Trainer(
            recipe,
            host,
            run_dir,
            resume=resume_dir is not None,
            console=console,
            show_progress=show_progress,
        )
    except BaseException:
        lock.release()
        if resume_dir is None and world.is_main:  # nothing was trained: leave no empty run directory
            remove_new_run_dir(run_dir, output_dir, output_dir_existed)
        raise
    trainer.lock = lock
    if not world.is_main:
        return trainer
    if resume_dir is not None:
        trainer.forget_after_checkpoint()
    # Rewritten on resume too: [train] and [eval] may change then, and 'i2i run --resume RUN_DIR'
    # continues with this file, --set values included.
    (run_dir / "recipe.toml").write_text(dumps(recipe), encoding="utf-8")
    if resume_dir is None:
        environment = {
            "i2i": __version__,
            "torch": torch.__version__,
            "python": sys.version.split()[0],
            "device": str(trainer.device),
            "processes": world.size,
        }
        (run_dir / "plugins.json").write_text(
            json.dumps({"plugins": plugins_used(recipe, host), "environment": environment}, indent=2) + "\n",
            encoding="utf-8",
        )
    return trainer
