"""A recipe from a file or a dict, with overrides from ``--set`` strings or a dict of values."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomli_w

from i2i.assembly.host import PluginHost
from i2i.assembly.recipe import Recipe, apply_override, load_recipe, resolve
from i2i.errors import I2IError

#: What a recipe can be given as: a TOML file's path, or the recipe's tables as a dict.
RecipeSource = str | Path | Mapping[str, Any]
#: ``["train.epochs=5"]`` as on the command line, or ``{"train.epochs": 5}`` / ``{"train": {"epochs": 5}}``.
Overrides = list[str] | Mapping[str, Any] | None


def override_strings(overrides: Overrides) -> list[str]:
    """Overrides as ``section.key=value`` strings (TOML values), the form ``--set`` takes."""
    if overrides is None:
        return []
    if isinstance(overrides, str):
        raise I2IError(f"overrides={overrides!r}: give a list of 'section.key=value' strings or a dict.")
    if not isinstance(overrides, Mapping):
        return [str(item) for item in overrides]
    flat: list[str] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping) and value:
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
            return
        if not prefix or "." not in prefix:
            raise I2IError(f"overrides: {prefix or '(empty)'!r} is a section; give section.key = value.")
        try:
            text = tomli_w.dumps({"v": value}).strip()[len("v = ") :]
        except TypeError:
            raise I2IError(f"overrides: {prefix} = {value!r} is not a TOML value.") from None
        flat.append(f"{prefix}={text}")

    walk("", overrides)
    return flat


def load(source: RecipeSource, overrides: Overrides = None) -> tuple[Recipe, str]:
    """The raw recipe (overrides applied, not yet checked) and a name for it in messages."""
    items = override_strings(overrides)
    if isinstance(source, Mapping):
        recipe = copy.deepcopy(dict(source))
        for item in items:
            apply_override(recipe, item)
        if not isinstance(recipe.get("experiment", {}), dict):
            raise I2IError("recipe: [experiment] must be a table.")
        recipe.setdefault("experiment", {}).setdefault("name", "recipe")
        return recipe, "recipe"
    return load_recipe(Path(source), items), str(source)


def resolved(source: RecipeSource, host: PluginHost, overrides: Overrides = None) -> Recipe:
    """The checked recipe with every default filled in; every problem is reported at once."""
    recipe, name = load(source, overrides)
    return resolve(recipe, host, source=name)


def resolve_recipe(
    source: RecipeSource, overrides: Overrides = None, *, host: PluginHost | None = None
) -> Recipe:
    """``i2i validate`` as a function: the recipe (a TOML path or a dict) checked against the
    installed plugins (or ``host``), every default filled in; a :class:`i2i.RecipeError` lists
    every problem."""
    from i2i.assembly.host import get_host

    return resolved(source, host or get_host(), overrides)
