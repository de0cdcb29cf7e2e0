"""Resuming a run: the checkpoint to continue from, and the recipe changes that forbid it.

The diversity runner checks a variant's earlier training with the same function, so a run and a
variant refuse the same changes in the same words.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from i2i.assembly.host import PluginHost
from i2i.assembly.recipe import Recipe, resolve
from i2i.errors import CheckpointError, I2IError
from i2i.runs.checkpoint import load_checkpoint

#: Recipe sections that must not change when a run is resumed. ``optim`` too: the optimisers and
#: schedules are restored from the checkpoint, so a new learning rate would be recorded but not used.
FROZEN_ON_RESUME = ("model", "data", "generator", "discriminator", "losses", "optim")


def changed_on_resume(saved: Recipe, recipe: Recipe, host: PluginHost) -> list[str]:
    """The frozen sections in which ``recipe`` differs from a checkpoint's ``saved`` recipe.

    The saved recipe is resolved again first, so a setting added to a component since the run
    started (with a default that keeps the old behaviour) does not count as a change.
    """
    try:
        saved = resolve(copy.deepcopy(saved), host, source="the checkpoint's recipe")
    except I2IError:
        pass  # compare as stored: whatever no longer resolves differs anyway
    return [s for s in FROZEN_ON_RESUME if saved.get(s) != recipe.get(s)]


def load_resume_state(run_dir: Path, recipe: Recipe, host: PluginHost) -> dict[str, Any]:
    """``run_dir``'s latest checkpoint, if ``recipe`` may continue it (else a one-paragraph error)."""
    path = run_dir / "checkpoints" / "latest.pt"
    if not path.is_file():
        raise CheckpointError(f"Cannot resume: {path} does not exist (was {run_dir} created by 'i2i run'?).")
    state = load_checkpoint(path)
    changed = changed_on_resume(state["recipe"], recipe, host)
    if changed:
        raise I2IError(
            f"Cannot resume {run_dir}: the recipe's [{'], ['.join(changed)}] differ from "
            f"the run's (saved in {run_dir / 'recipe.toml'}). Resume with that recipe, "
            "or start a new run."
        )
    return state
