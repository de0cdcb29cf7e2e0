"""User-facing errors.

Anything raised as an :class:`I2IError` is a problem with the user's input (a recipe, a file, a plugin
name) and is printed by the CLI as one paragraph without a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class I2IError(Exception):
    """A problem the user can fix; its message is the whole explanation."""


class UnknownComponentError(I2IError, KeyError):
    """A recipe or call named a component that no plugin registered."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class DuplicateComponentError(I2IError):
    """Two plugins registered the same name for the same kind of component."""

    def __init__(self, name: str, message: str) -> None:
        self.name = name
        super().__init__(message)


class RecipeError(I2IError):
    """A recipe is malformed; ``problems`` lists every issue found, each with its location."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(f"{source}: {len(problems)} {noun}:\n{lines}")


class CheckpointError(I2IError):
    """A checkpoint file is missing, corrupt, foreign or unsafe to load."""


class DataError(I2IError):
    """A dataset folder or image could not be used."""


class TrainingDiverged(I2IError):
    """A loss or the weights became NaN or infinite; the last finite checkpoint is kept."""


class RunLocked(I2IError):
    """Another i2i process is training in this run directory."""


def suggest(name: str, choices: Iterable[str]) -> str:
    """A 'did you mean ...?' sentence plus the list of valid choices, for unknown-name errors."""
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    parts = []
    if close:
        parts.append("Did you mean " + " or ".join(repr(c) for c in close) + "?")
    if choices:
        parts.append("Available: " + ", ".join(choices) + ".")
    else:
        parts.append("None are available: is the plugin providing them installed?")
    return " ".join(parts)
