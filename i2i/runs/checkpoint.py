"""Checkpoints: atomic saving and safe loading.

A checkpoint is a plain dict of tensors, numbers, strings and containers written with
``torch.save``. It is loaded with ``weights_only=True``, so a hostile file cannot run code: only
tensors and primitive containers are unpickled.
"""

from __future__ import annotations

import errno
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from i2i.errors import CheckpointError

FORMAT = "i2i-checkpoint"
FORMAT_VERSION = 1


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
