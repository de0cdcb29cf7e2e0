"""Looking before running: what is installed, whether a recipe holds, what its data holds.

``i2i list-plugins``, ``i2i validate`` and ``i2i data verify`` print what these functions return.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from i2i.assembly.build import build_dataset, describe_plan
from i2i.assembly.host import PluginHost
from i2i.assembly.recipe import Recipe, dumps, load_recipe
from i2i.assembly.sources import resolved
from i2i.data.scan import SplitReport, verify_splits
from i2i.diversity.config import is_experiment, load_experiment
from i2i.errors import I2IError


def plugin_listing(host: PluginHost) -> dict[str, list[dict[str, Any]]]:
    """Every registered component with the package providing it, and every plugin that failed."""
    return {
        "components": [
            {
                "kind": c.kind,
                "name": c.name,
                "plugin": c.provider.plugin,
                "package": c.provider.distribution,
                "version": c.provider.version,
                "description": c.description,
            }
            for c in host.components()
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


@dataclass
class Validation:
    """A recipe that holds: a single run, or a diversity experiment and its variants."""

    source: Path
    recipes: dict[str, Recipe]  # "" for a single run; the variant names for an experiment
    experiment: bool
    plan: list[str] = field(default_factory=list)  # what the run will do, when its data is there
    missing_root: str | None = None  # data.root, when it does not exist
    #: An experiment's variants as its recipe names them, with the number of seeds each is trained with.
    groups: dict[str, int] = field(default_factory=dict)

    @property
    def variants(self) -> str:
        """An experiment's variants in a line, and the seeds each is trained with when several."""
        counts = set(self.groups.values())
        if len(counts) > 1:  # say it per variant
            return ", ".join(f"{g} ({n} seed{'s' if n > 1 else ''})" for g, n in self.groups.items())
        each = f", each with {counts.pop()} seeds" if counts and max(counts) > 1 else ""
        return ", ".join(self.groups or self.recipes) + each

    def dumps(self) -> str:
        """The resolved recipe(s) as TOML, every default filled in."""
        parts = [(f"# variant {name}\n" if name else "") + dumps(r) for name, r in self.recipes.items()]
        return "\n".join(parts)


def validate(path: Path, host: PluginHost, overrides: list[str] | None = None) -> Validation:
    """Check a recipe (or a diversity experiment) without running it; every problem is reported at once."""
    if is_experiment(load_recipe(path, overrides)):
        experiment = load_experiment(path, host, overrides)
        recipes = {v.name: v.recipe for v in experiment.variants}
        groups: dict[str, int] = {}
        for v in experiment.variants:
            groups[v.group] = groups.get(v.group, 0) + 1
        return Validation(path, recipes, experiment=True, groups=groups)
    recipe = resolved(path, host, overrides)
    result = Validation(path, {"": recipe}, experiment=False)
    root = recipe["data"].get("root")
    if isinstance(root, str) and not Path(root).exists():
        result.missing_root = root
    else:
        result.plan = describe_plan(recipe, host)
    return result


@dataclass
class DataVerification:
    """``i2i data verify RECIPE``: one report per split of each distinct [data] table."""

    recipe: Path
    name: str  # the dataset plugin's name
    reports: list[SplitReport]

    @property
    def unusable(self) -> list[str]:
        return [r.split for r in self.reports if r.error or r.bad]

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` form: sizes as ``"WxH": count``, bad files with their reasons."""
        return {
            "recipe": str(self.recipe),
            "splits": [
                {
                    "split": r.split,
                    "items": r.items,
                    "sizes": {f"{w}x{h}": n for (w, h), n in r.sizes.most_common()},
                    "bad": [{"path": str(p.path), "reason": p.reason} for p in r.bad],
                    "skipped": [{"path": str(path), "reason": why} for path, why in r.skipped],
                    "warnings": r.warnings,
                    "error": r.error,
                }
                for r in self.reports
            ],
        }

    def problem(self) -> I2IError | None:
        """The error ``i2i data verify`` exits with when a split cannot be used as it is."""
        if not self.unusable:
            return None
        train_bad = any(r.split == "train" and r.bad and not r.error for r in self.reports)
        hint = ""
        if train_bad:
            hint = " Fix or delete the bad files, or set data.skip_bad = true to leave them out."
        splits = ", ".join(self.unusable)
        return I2IError(f"{self.recipe}: the data of split(s) {splits} cannot be used as it is.{hint}")


def verify_data(path: Path, host: PluginHost, overrides: list[str] | None = None) -> DataVerification:
    """Build the training and evaluation splits of a recipe's data as a run would, and scan every
    file. A diversity experiment's [data] is checked the same way (each distinct one once)."""
    raw = load_recipe(path, overrides)
    if is_experiment(raw):
        variants = load_experiment(path, host, overrides).variants
        recipes = list({repr(v.recipe["data"]): v.recipe for v in variants}.values())
    else:
        recipes = [resolved(path, host, overrides)]
    reports: list[SplitReport] = []
    for recipe in recipes:
        splits = list(dict.fromkeys(["train", recipe["eval"]["split"]]))
        reports += verify_splits(lambda split, r=recipe: build_dataset(r, host, split), splits)
    return DataVerification(path, recipes[0]["data"]["name"], reports)
