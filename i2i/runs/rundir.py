"""The run directory: where it is created, who may train in it, and what a resume cleans up."""

from __future__ import annotations

import json
import os
from pathlib import Path

from i2i.assembly.host import PluginHost
from i2i.assembly.recipe import Recipe
from i2i.errors import I2IError, RunLocked
from i2i.runs.outputs import blocking_file

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: run directories are not locked
    fcntl = None


def plugins_used(recipe: Recipe, host: PluginHost) -> dict[str, str]:
    """Plugin name → "distribution version" for every component the recipe names."""
    used = {}
    pairs = [("model", recipe.get("model", {}).get("name", "pix2pix"))]
    pairs += [("dataset", recipe["data"]["name"]), ("generator", recipe["generator"]["name"])]
    if "discriminator" in recipe:
        pairs.append(("discriminator", recipe["discriminator"]["name"]))
    pairs += [("loss", t["name"]) for t in recipe.get("losses", [])]
    pairs += [("metric", m if isinstance(m, str) else m["name"]) for m in recipe["eval"]["metrics"]]
    for kind, name in pairs:
        provider = host.registry(kind).get(name).provider
        used[provider.plugin] = str(provider)
    return dict(sorted(used.items()))


def new_run_dir(recipe: Recipe) -> Path:
    """``output_dir/name``, or ``name-2``, ``name-3``... when that exists already."""
    output_dir = Path(recipe["experiment"]["output_dir"])
    base = output_dir / recipe["experiment"]["name"]
    run_dir, n = base, 1
    while run_dir.exists():
        n += 1
        run_dir = base.with_name(f"{base.name}-{n}")
    try:
        run_dir.mkdir(parents=True)
    except OSError as exc:
        blocker = blocking_file(output_dir)
        why = f"{blocker} is a file, not a folder" if blocker else exc.strerror
        raise I2IError(
            f"experiment.output_dir = {str(output_dir)!r}: cannot create the run directory {run_dir} "
            f"({why}). Point output_dir at a folder you can write to, e.g. --set experiment.output_dir=runs"
        ) from None
    return run_dir


def run_dir_of(checkpoint: Path) -> Path:
    """The run directory a checkpoint file belongs to (RUN/checkpoints/latest.pt -> RUN)."""
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent


def check_resume_dir(path: Path) -> Path:
    """``path`` if it is a run directory to resume; a checkpoint file or a missing folder is refused."""
    if path.is_file():
        raise I2IError(
            f"--resume {path}: that is a checkpoint file; --resume takes the run directory that "
            f"holds it: i2i run --resume {run_dir_of(path)}"
        )
    if not path.is_dir():
        raise I2IError(f"--resume {path}: no such run directory.")
    return path


def remove_new_run_dir(run_dir: Path, output_dir: Path, output_dir_existed: bool) -> None:
    """Undo :func:`new_run_dir` after a run that could not start: no empty folders are left."""
    import shutil

    shutil.rmtree(run_dir, ignore_errors=True)
    if not output_dir_existed:
        for folder in (output_dir, *output_dir.parents):
            try:
                folder.rmdir()  # only succeeds while empty
            except OSError:
                break


class RunLock:
    """An exclusive ``flock`` on ``RUN_DIR/.lock`` while a process trains there.

    Two processes training one run directory would interleave its log and overwrite each other's
    checkpoints. The operating system drops the lock when the process dies, so a hard kill leaves
    no stale lock behind; the file itself stays (removing it would race with a new holder).
    """

    NAME = ".lock"

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / self.NAME
        self._fh = None

    def acquire(self) -> RunLock:
        if fcntl is None:
            return self
        fh = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip()
            fh.close()
            by = f" (process {holder})" if holder.isdigit() else ""
            raise RunLocked(
                f"{self.path.parent} is being trained by another i2i process{by}, which holds the lock "
                f"{self.path}: two runs in one directory would interleave its log and checkpoints. "
                "Wait for that run to finish or stop it, then resume."
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._fh = fh
        from i2i.parallel.launch import announce_run_dir

        announce_run_dir(self.path.parent)  # an 'i2i run --nproc' launcher can then name the run
        return self

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()  # closing the file drops the lock
            self._fh = None


def forget_after(run_dir: Path, step: int) -> None:
    """Drop what a hard kill left after the checkpoint of ``step``.

    The log lines of later steps would appear twice once they are trained and logged again; a
    half-written last line is dropped too, and so are temporary checkpoint files of a killed save.
    """
    for tmp in (run_dir / "checkpoints").glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
    log = run_dir / "log.jsonl"
    if not log.is_file():
        return
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
    kept = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:  # a line cut short by the kill
            continue
        if isinstance(entry, dict) and isinstance(entry.get("step"), int) and entry["step"] <= step:
            kept.append(line if line.endswith("\n") else line + "\n")
    if kept != lines:
        tmp = log.with_name(f".{log.name}.tmp")
        tmp.write_text("".join(kept), encoding="utf-8")
        os.replace(tmp, log)
