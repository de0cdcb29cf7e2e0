"""Reading a diversity experiment: a base recipe plus a ``[diversity]`` section of variants.

A variant names the samplers that draw its outputs and changes the base recipe in a few sections;
everything else (data, optimiser, schedule, evaluation split) stays identical, so the variants differ
only in what the experiment compares. Rules:

- ``generator`` / ``discriminator`` / ``optim`` / ``train``: merged over the base's table when they
  keep its component name, replacing it when they name another component;
- ``losses`` replaces the base's list; ``add_losses`` appends to it;
- ``from = "RUN_DIR_OR_CHECKPOINT"`` uses an already trained model instead of training one;
- ``steps`` (or ``[diversity] steps`` for every variant) also measures the model at those training
  steps, from the networks-only snapshots its training keeps (``train.snapshot_steps``);
- ``[data]`` cannot change: all variants are trained and measured on the same pairs.

With ``[diversity] seeds = [0, 1, 2]`` every variant is trained once per seed (run folders
``NAME_seedS``), so the report can give each figure's spread over training seeds.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from i2i.assembly.host import PluginHost
from i2i.assembly.recipe import Recipe, load_recipe, resolve
from i2i.errors import I2IError, RecipeError, suggest
from i2i.schema import Param, Range, range_problem

SECTION = "diversity"

#: The experiment-wide settings of ``[diversity]``.
SETTINGS: dict[str, Param] = {
    p.name: p
    for p in [
        Param("inputs", int, 100, "test inputs (N); the whole split if it is smaller", minimum=1),
        Param(
            "samples", int, 20, "samples per input (K); diversity uses the K-1 consecutive pairs", minimum=2
        ),
        Param(
            "seed",
            int,
            0,
            "sampling seed: input i draws its samples after manual_seed(seed + i)",
            range=Range(0, 2**63),
        ),
        Param(
            "seeds",
            list[int],
            [],
            "training seeds: each variant is trained once per seed and the table gives mean ± std "
            "(default: experiment.seed only)",
        ),
        Param(
            "steps",
            list[int],
            [],
            "also measure every variant at these training steps (a diversity-over-time curve)",
        ),
        Param("split", str, "", "the split sampled (default: eval.split)"),
        Param(
            "metrics",
            list[str | dict],
            ["l1", "ssim"],
            "pairwise diversity measures (metrics with a 'diversity' kind); per-pixel std is always added",
        ),
        Param("quality", list[str | dict], ["l1", "psnr", "ssim"], "quality metrics against the target"),
        Param("figure_inputs", int, 6, "inputs (rows) in each variant's figure", minimum=1),
        Param("figure_samples", int, 8, "samples (columns) in each variant's figure", minimum=1),
    ]
}

#: Keys a variant may hold.
VARIANT_KEYS = {
    "name",
    "label",
    "samplers",
    "from",
    "generator",
    "discriminator",
    "losses",
    "add_losses",
    "optim",
    "train",
    "steps",
    "seeds",
}
MERGED_SECTIONS = ("generator", "discriminator", "optim", "train")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass
class Variant:
    """One trained model of the experiment and the samplers that draw its outputs.

    With several training seeds, each variant of the recipe becomes one ``Variant`` per seed; they
    share ``group`` (the recipe's variant name), and ``name`` (the run folder) ends in ``_seedS``.
    """

    name: str
    label: str
    samplers: list[dict[str, Any]]
    recipe: Recipe
    source: str | None = None  # an existing run directory or checkpoint, when not trained here
    group: str = ""
    seed: int | None = None
    steps: list[int] = field(default_factory=list)  # earlier training steps measured as well

    def __post_init__(self) -> None:
        self.group = self.group or self.name


@dataclass
class Experiment:
    """A resolved diversity experiment."""

    name: str
    path: Path
    base: Recipe
    settings: dict[str, Any]
    variants: list[Variant] = field(default_factory=list)

    @property
    def root(self) -> Path:
        """The experiment's folder: reports here, variant runs in ``variants/``."""
        return Path(self.base["experiment"]["output_dir"]) / self.name


def is_experiment(raw: Recipe) -> bool:
    return isinstance(raw, dict) and SECTION in raw


def _merge(base: Recipe, variant: dict[str, Any]) -> Recipe:
    recipe = copy.deepcopy(base)
    for section in MERGED_SECTIONS:
        if section not in variant:
            continue
        table = copy.deepcopy(variant[section])
        old = recipe.get(section, {})
        same_component = "name" not in table or table.get("name") == old.get("name")
        recipe[section] = {**old, **table} if same_component else table
    if "losses" in variant:
        recipe["losses"] = copy.deepcopy(variant["losses"])
    if "add_losses" in variant:
        recipe["losses"] = [*recipe.get("losses", []), *copy.deepcopy(variant["add_losses"])]
    return recipe


def _check_settings(table: Any, problems: list[str]) -> dict[str, Any]:
    if not isinstance(table, dict):
        problems.append(f"[{SECTION}]: expected a table.")
        return {}
    settings: dict[str, Any] = {}
    for key, value in table.items():
        if key == "variants":
            continue
        param = SETTINGS.get(key)
        if param is None:
            problems.append(f"{SECTION}.{key}: unknown setting. {suggest(key, [*SETTINGS, 'variants'])}")
            continue
        if param.annotation == list[int]:
            problem = _int_list_problem(value, minimum=1 if key == "steps" else 0)
            if problem:
                problems.append(f"{SECTION}.{key} = {value!r}: {problem}.")
            else:
                settings[key] = sorted(set(value))
            continue
        expected = {int: int, str: str}.get(param.annotation)
        if expected is int and (isinstance(value, bool) or not isinstance(value, int)):
            problems.append(f"{SECTION}.{key} = {value!r}: expected an integer.")
            continue
        if expected is str and not isinstance(value, str):
            problems.append(f"{SECTION}.{key} = {value!r}: expected a string.")
            continue
        if expected is None and not isinstance(value, list):
            problems.append(f"{SECTION}.{key} = {value!r}: expected a list of names or tables.")
            continue
        out_of_range = range_problem(value, param.bounds)
        if out_of_range:
            problems.append(f"{SECTION}.{key} = {value!r}: {out_of_range}.")
            continue
        settings[key] = value
    for key, param in SETTINGS.items():
        settings.setdefault(key, copy.deepcopy(param.default))
    return settings


def _int_list_problem(value: Any, minimum: int) -> str | None:
    if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
        return "expected a list of integers"
    if any(v < minimum or v >= 2**63 for v in value):
        return f"every entry must be an integer of at least {minimum}"
    return None


def _seeds(variant: dict[str, Any], settings: dict[str, Any]) -> list[int | None]:
    """The training seeds of a variant (its own ``seeds``, else ``[diversity] seeds``), or
    ``[None]``: trained once with ``experiment.seed``, in a folder without a seed suffix."""
    own = variant.get("seeds")
    if isinstance(own, list) and own and not _int_list_problem(own, 0):
        return sorted(set(own))
    return list(settings.get("seeds") or []) or [None]


def _steps(variant: dict[str, Any], settings: dict[str, Any]) -> list[int]:
    """The training steps a variant is also measured at (its own ``steps``, else
    ``[diversity] steps``); a malformed list, already reported, measures none."""
    steps = variant.get("steps", settings.get("steps", []))
    return sorted(set(steps)) if not _int_list_problem(steps, 1) else []


def _entry(value: Any) -> dict[str, Any] | None:
    """A component entry written as a name or as a table with a name."""
    if isinstance(value, str):
        return {"name": value}
    if isinstance(value, dict) and isinstance(value.get("name"), str):
        return dict(value)
    return None


def _check_components(entries: list, kind: str, where: str, host: PluginHost, problems: list[str]) -> list:
    checked = []
    registry = host.registry(kind)
    for i, raw in enumerate(entries):
        entry = _entry(raw)
        if entry is None:
            problems.append(f"{where}[{i}] = {raw!r}: expected a {kind} name or a table with name = ...")
            continue
        if entry["name"] not in registry:
            problems.append(
                f"{where}[{i}] = {entry['name']!r}: unknown {kind}. "
                f"{suggest(entry['name'], registry.names())}"
            )
            continue
        checked.append(entry)
    return checked


def _check_variant(raw: Any, index: int, problems: list[str], host: PluginHost) -> dict[str, Any] | None:
    where = f"{SECTION}.variants[{index}]"
    if not isinstance(raw, dict):
        problems.append(f"{where}: expected a table ([[diversity.variants]]).")
        return None
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        problems.append(
            f"{where}.name = {name!r}: a variant needs a name of letters, digits, '_', '-' or '.' "
            "(it names the variant's run folder)."
        )
        return None
    where = f"{SECTION}.variants.{name}"
    for key in raw:
        if key not in VARIANT_KEYS:
            hint = "All variants share [data]." if key == "data" else suggest(key, VARIANT_KEYS)
            problems.append(f"{where}.{key}: not a variant setting. {hint}")
    samplers = raw.get("samplers")
    if not isinstance(samplers, list) or not samplers:
        problems.append(
            f"{where}.samplers: a non-empty list of samplers is needed. "
            f"Available: {', '.join(host.registry('sampler').names())}."
        )
        samplers = []
    for key in ("generator", "discriminator", "optim", "train"):
        if key in raw and not isinstance(raw[key], dict):
            problems.append(f"{where}.{key}: expected a table.")
    for key in ("losses", "add_losses"):
        if key in raw and not isinstance(raw[key], list):
            problems.append(f"{where}.{key}: expected a list of loss tables.")
    source = raw.get("from")
    if source is not None and not isinstance(source, str):
        problems.append(f"{where}.from = {source!r}: expected the path of a run directory or checkpoint.")
    if "steps" in raw:
        problem = _int_list_problem(raw["steps"], minimum=1)
        if problem:
            problems.append(f"{where}.steps = {raw['steps']!r}: {problem}.")
        elif source is not None:
            problems.append(
                f"{where}: 'steps' measures snapshots kept while the variant trains here; a variant "
                "taken 'from' a finished run has only that run's checkpoint."
            )
    if "seeds" in raw:
        problem = _int_list_problem(raw["seeds"], minimum=0)
        if problem or not raw["seeds"]:
            problems.append(f"{where}.seeds = {raw['seeds']!r}: {problem or 'give at least one seed'}.")
    label = raw.get("label", name)
    return {
        **raw,
        "label": label if isinstance(label, str) else name,
        "samplers": _check_components(samplers, "sampler", f"{where}.samplers", host, problems),
    }


def load_experiment(path: str | Path, host: PluginHost, overrides: list[str] | None = None) -> Experiment:
    """Read and validate a diversity experiment; every problem of every variant is reported at once."""
    path = Path(path)
    raw = load_recipe(path, overrides)
    if not is_experiment(raw):
        raise I2IError(
            f"{path} has no [{SECTION}] section, so it describes a single run, not a diversity "
            f"experiment: train it with 'i2i run {path}', or add [{SECTION}] and "
            "[[diversity.variants]] (see docs/diversity.md)."
        )
    table = raw.pop(SECTION)
    problems: list[str] = []
    settings = _check_settings(table, problems)
    base_problems: list[str] = []
    try:
        base = resolve(raw, host, source=str(path))
    except RecipeError as exc:
        base_problems = exc.problems
        base = None
    problems += base_problems
    variants_raw = table.get("variants", []) if isinstance(table, dict) else []
    if not isinstance(variants_raw, list) or not variants_raw:
        problems.append(f"{SECTION}.variants: at least one [[diversity.variants]] table is needed.")
        variants_raw = []
    for key in ("metrics", "quality"):
        kind_where = f"{SECTION}.{key}"
        settings[key] = _check_components(settings.get(key, []), "metric", kind_where, host, problems)
    checked = [v for i, raw_v in enumerate(variants_raw) if (v := _check_variant(raw_v, i, problems, host))]
    names = [v["name"] for v in checked]
    for dup in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"{SECTION}.variants: the name {dup!r} is used twice.")
    experiment_name = raw.get("experiment", {}).get("name", path.stem)
    seeds_of = {v["name"]: _seeds(v, settings) for v in checked}
    problems += [
        f"{SECTION}.variants.{v['name']}: 'from' takes one trained model, so it cannot be "
        "trained once per seed."
        for v in checked
        if v.get("from") is not None and seeds_of[v["name"]] != [None]
    ]
    variants: list[Variant] = []
    if base is not None:
        root = Path(base["experiment"]["output_dir"]) / experiment_name / "variants"
        # Seed by seed: an experiment cut short has every variant of the first seed to show.
        order = sorted(
            {s for seeds in seeds_of.values() for s in seeds}, key=lambda s: (s is not None, s or 0)
        )
        pairs = [(v, seed) for seed in order for v in checked if seed in seeds_of[v["name"]]]
        for v, seed in pairs:
            name = v["name"] if seed is None else f"{v['name']}_seed{seed}"
            steps = _steps(v, settings)
            merged = _merge(raw, v)
            merged["experiment"] = {
                **merged.get("experiment", {}),
                "name": name,
                "output_dir": str(root),
                **({} if seed is None else {"seed": seed}),
            }
            if steps:
                train = merged.setdefault("train", {})
                kept = train.get("snapshot_steps", [])
                kept = kept if isinstance(kept, list) else []
                train["snapshot_steps"] = sorted({*kept, *steps})
            try:
                recipe = resolve(merged, host, source=f"{path} [{SECTION}.variants.{v['name']}]")
            except RecipeError as exc:
                problems += [f"variant {v['name']}: {p}" for p in exc.problems]
                continue
            cap = recipe["train"]["max_steps"]
            if cap and any(step > cap for step in steps):
                problems.append(
                    f"variant {v['name']}: steps {[s for s in steps if s > cap]} lie beyond its "
                    f"train.max_steps = {cap}, so they would never be reached."
                )
            variants.append(
                Variant(name, v["label"], v["samplers"], recipe, v.get("from"), v["name"], seed, steps)
            )
    if problems:
        raise RecipeError(str(path), list(dict.fromkeys(problems)))  # once, not once per seed
    assert base is not None
    if not settings["split"]:
        settings["split"] = base["eval"]["split"]
    return Experiment(experiment_name, path, base, settings, variants)
