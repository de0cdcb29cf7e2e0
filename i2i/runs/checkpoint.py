"""Checkpoints: atomic saving (in the background during training) and safe loading.

A checkpoint is a plain dict of tensors, numbers, strings and containers written with
``torch.save``. It is loaded with ``weights_only=True``, so a hostile file cannot run code: only
tensors and primitive containers are unpickled.

Two kinds exist. A full checkpoint (``latest.pt``, and the saves on a stop and at the end) holds
everything an exact resume needs, the optimisers' and schedules' states included. An epoch
snapshot (``epoch_NNNN.pt``) holds what inference and fine-tuning need: every network, the losses'
and the model's own state, the counters, random streams and recipe, but no optimiser or schedule
state (for Adam, two more copies of every weight); ``"snapshot": True`` marks it. Step snapshots
(``step_NNNNNNN.pt``, at the steps of ``train.snapshot_steps``) hold the same and are never pruned.
"""

from __future__ import annotations

import errno
import os
import pickle
import re
import tempfile
import threading
import zipfile
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from i2i.errors import CheckpointError

FORMAT = "i2i-checkpoint"
FORMAT_VERSION = 1

#: The names i2i gives epoch snapshots in ``RUN_DIR/checkpoints`` (``epoch_0005.pt``).
SNAPSHOT_NAME = re.compile(r"epoch_(\d{4,})\.pt")
#: The names of the snapshots kept at the steps listed in ``train.snapshot_steps`` (``step_0004000.pt``).
STEP_SNAPSHOT_NAME = re.compile(r"step_(\d{7,})\.pt")
#: Keys of a full checkpoint that an epoch snapshot leaves out: optimiser and schedule states.
RESUME_ONLY = ("opt_", "sched_")


def snapshot_name(epoch: int) -> str:
    return f"epoch_{epoch:04d}.pt"


def step_snapshot_name(step: int) -> str:
    return f"step_{step:07d}.pt"


def snapshot_of(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` (a full checkpoint's dict) without what only an exact resume needs."""
    kept = {k: v for k, v in state.items() if not k.startswith(RESUME_ONLY)}
    kept["snapshot"] = True
    return kept


def is_snapshot(state: dict[str, Any]) -> bool:
    """Whether a loaded checkpoint is a snapshot, epoch or step (networks only, no optimiser state)."""
    return bool(state.get("snapshot", False))


def snapshots(folder: Path) -> list[tuple[int, Path]]:
    """The epoch snapshots i2i wrote in a run's ``checkpoints`` folder, oldest first: regular files
    named as :func:`snapshot_name` names them, nothing else (no link, no folder, no other name)."""
    found = []
    for path in Path(folder).iterdir() if Path(folder).is_dir() else []:
        match = SNAPSHOT_NAME.fullmatch(path.name)
        if match and path.is_file() and not path.is_symlink():
            found.append((int(match.group(1)), path))
    return sorted(found)


def prune_snapshots(folder: Path, keep_last: int) -> list[Path]:
    """Remove all but the newest ``keep_last`` epoch snapshots of :func:`snapshots` (0: keep all);
    returns what was removed."""
    if keep_last <= 0:
        return []
    removed = []
    for _, path in snapshots(folder)[:-keep_last]:
        try:
            path.unlink()
            removed.append(path)
        except FileNotFoundError:
            pass
    return removed


def copy_off_device(obj: Any) -> Any:
    """A copy of ``obj`` (a checkpoint's dict) whose tensors are CPU tensors of their own, and whose
    containers are new: training may go on changing the originals while the copy is written."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        return t.to("cpu") if t.device.type != "cpu" else t.clone()
    if isinstance(obj, dict):
        return {k: copy_off_device(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [copy_off_device(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(copy_off_device(v) for v in obj)
    return obj


class CheckpointWriter:
    """Writes checkpoints with :func:`save_checkpoint` in a background thread, in the order asked.

    :meth:`save` takes a state already copied off the device (:func:`copy_off_device`), so training
    goes on while the file is written, fsync'd and renamed into place: the guarantees of
    :func:`save_checkpoint` hold (a kill mid-write leaves the previous file intact). A second save
    of a file waits for the first; :meth:`wait` waits for all (before reading a checkpoint back, and
    before the process ends). A failed write (a full disk) is raised, as the same one-paragraph
    :class:`CheckpointError`, by the next :meth:`check`, :meth:`save` or :meth:`wait`. The thread
    exists only while there is something to write.
    """

    def __init__(self) -> None:
        self._jobs: deque[tuple[dict[str, Any], Path, Callable[[], Any] | None]] = deque()
        self._pending: list[Path] = []  # queued or being written
        self._changed = threading.Condition()
        self._worker: threading.Thread | None = None
        self._error: BaseException | None = None

    def save(self, state: dict[str, Any], path: Path, then: Callable[[], Any] | None = None) -> None:
        """Write ``state`` to ``path`` in the background, then call ``then`` (if the write succeeded)."""
        path = Path(path)
        self.wait(path)
        with self._changed:
            self._jobs.append((state, path, then))
            self._pending.append(path)
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="i2i-checkpoint-writer")
                self._worker.start()

    def pending(self, path: Path) -> bool:
        """Whether a write of ``path`` is queued or under way."""
        with self._changed:
            return Path(path) in self._pending

    def wait(self, path: Path | None = None) -> None:
        """Wait until ``path`` (or every checkpoint) is written; raise a failed write's error."""
        with self._changed:
            self._changed.wait_for(lambda: not self._pending if path is None else path not in self._pending)
        self.check()

    def check(self) -> None:
        """Raise the error of a background write that failed since the last call (cheap)."""
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _work(self) -> None:
        while True:
            with self._changed:
                if not self._jobs:
                    self._worker = None
                    self._changed.notify_all()
                    return
                state, path, then = self._jobs.popleft()
            try:
                save_checkpoint(state, path)
                if then is not None:
                    then()
            except BaseException as exc:  # kept for the training thread, which raises it
                if self._error is None:
                    self._error = exc
            finally:
                del state
                with self._changed:
                    self._pending.remove(path)
                    self._changed.notify_all()


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, then rename.

    A crash mid-write leaves the previous file intact; readers never see a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, **state}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, (OSError, RuntimeError)):  # torch reports a full disk as a RuntimeError
            kept = (
                f"the previous {path.name} is unchanged" if path.exists() else f"no {path.name} was written"
            )
            full = isinstance(exc, OSError) and exc.errno == errno.ENOSPC or "write" in str(exc).lower()
            why = "the disk is probably full" if full else str(exc).splitlines()[0]
            raise CheckpointError(
                f"Could not write the checkpoint {path} ({why}); {kept}. Free some space (or fix "
                "the folder), then resume the run."
            ) from None
        raise
    return path


def load_checkpoint(path: str | Path, *, mmap: bool = False) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`, refusing anything that is not one.

    ``mmap=True`` maps the tensors instead of reading them: cheap when only the recipe or the
    counters are wanted.
    """
    path = Path(path)
    if path.is_dir():
        for candidate in (path / "checkpoints" / "latest.pt", path / "latest.pt"):
            if candidate.is_file():
                path = candidate
                break
        else:
            raise CheckpointError(
                f"{path} is a folder without checkpoints/latest.pt: is it an i2i run directory?"
            )
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} does not exist.")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; anything else is not one
        raise CheckpointError(
            f"{path} is not a readable checkpoint: {_what_it_is(path)}. i2i checkpoints are the .pt "
            "files 'i2i run' writes (RUN_DIR/checkpoints/latest.pt or epoch_N.pt); give one of those "
            "or the run directory."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if "GLOBAL" in ln]
        if not lines:  # no forbidden object named: a damaged file
            raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupt?).") from None
        raise CheckpointError(
            f"{path} contains objects other than tensors and plain values, so it was not loaded "
            f"(loading it could run arbitrary code). Only checkpoints written by i2i are accepted. "
            f"Detail: {lines[0]}"
        ) from None
    except Exception as exc:  # a damaged archive makes the unpickler fail in many ways (KeyError, ...)
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated or corrupt?): {detail}"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a PyTorch file but not an i2i checkpoint.")
    if state.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} was written by a newer i2i (format {state['format_version']}); upgrade i2i."
        )
    recipe = state.get("recipe")
    required = ("experiment", "data", "generator")
    has_model = "recipe" in state or "generator" in state
    if has_model and (
        not isinstance(recipe, dict) or not all(isinstance(recipe.get(s), dict) for s in required)
    ):
        raise CheckpointError(
            f"{path} is damaged: its stored recipe is not a table with [experiment], [data] and "
            "[generator] sections, so the model it holds cannot be rebuilt."
        )
    state["path"] = str(path)
    return state


def _what_it_is(path: Path) -> str:
    """A few words on a file that is not a zip archive, for the error that refuses it."""
    try:
        with path.open("rb") as fh:
            head = fh.read(4096)
    except OSError as exc:
        return f"it cannot be read ({exc.strerror or exc})"
    if not head:
        return "the file is empty (a write that never finished?)"
    if head.startswith(b"PK"):
        return "a zip archive that is truncated or corrupt"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        cut = len(head) == 4096 and exc.start >= len(head) - 3  # a character split by the read
        text = head[: exc.start].decode("utf-8") if cut else None
    if text is not None and "\x00" not in text and all(c.isprintable() or c in "\t\r\n" for c in text):
        return "it is a text file, not a PyTorch checkpoint"
    return "it is not a PyTorch checkpoint archive (truncated, corrupt or another kind of file)"
