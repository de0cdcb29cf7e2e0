"""Output folders named by the user: created when missing, refused with a clear message when not usable."""

from __future__ import annotations

import errno
from pathlib import Path

from i2i.errors import I2IError


def blocking_file(path: Path) -> Path | None:
    """The existing file at ``path`` or at one of its parents, which keeps it from being a folder."""
    return next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)


def output_folder(path: str | Path, what: str) -> Path:
    """Create ``path`` (and its parents) as a folder to write into; ``what`` names the option.

    An existing file at ``path`` (or at one of its parents), a folder that cannot be created and
    one that cannot be written to are user errors, naming the option and the path.
    """
    path = Path(path)
    blocker = blocking_file(path)
    if blocker is not None:
        where = "is" if blocker == path else f"lies inside {blocker}, which is"
        raise I2IError(
            f"{what} {path} {where} an existing file, not a folder: choose a folder to write into."
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise I2IError(
            f"{what} {path} cannot be created ({exc.strerror}): choose a folder you can write to."
        ) from None
    return path


def describe_os_error(exc: OSError) -> str:
    """One sentence for an operating-system error met while reading or writing a user's file."""
    where = f" {exc.filename}" if exc.filename else ""
    if exc.errno == errno.ENOSPC:
        return f"The disk is full (while writing{where}). Free some space and run the command again."
    if isinstance(exc, IsADirectoryError):
        return f"{where.strip()} is a folder where i2i expects a file: move or delete it."
    if isinstance(exc, NotADirectoryError):
        return f"A file stands where i2i expects a folder ({where.strip()}): move or delete it."
    if isinstance(exc, PermissionError):
        return f"Permission denied for{where}: check who owns it."
    return f"Could not use{where}: {exc.strerror or exc}."


def unique_name(name: str, taken: set[str]) -> str:
    """``name``, or ``name-2``, ``name-3``... if an earlier item had it, and mark it taken.

    ``i2i eval`` (rows and gallery images) and ``i2i translate`` (output files) name outputs this
    one way: datasets name items by file stem, so ``1.jpg`` and ``1.png`` would otherwise share one
    name. Compared case-insensitively, as macOS and Windows file names are.
    """
    unique, n = name, 1
    while unique.casefold() in taken:
        n += 1
        unique = f"{name}-{n}"
    taken.add(unique.casefold())
    return unique
