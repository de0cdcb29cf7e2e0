"""Recipes: TOML files that name registered components and their parameters.

:func:`load_recipe` reads a file and applies ``--set`` overrides; :func:`resolve` checks every
section against the host's settings and the registered factories' signatures, collects *all*
problems into one :class:`~i2i.errors.RecipeError`, and returns the recipe with every default
filled in (what a run directory records).
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import re
import sys
import typing
from pathlib import Path
from typing import Any, Literal

from i2i.assembly.host import PluginHost
from i2i.errors import I2IError, RecipeError, suggest
from i2i.registry import Component
from i2i.schema import (
    CheckContext,
    Param,
    Range,
    accepts_extra,
    coerce,
    describe,
    factory_params,
    matches,
    range_problem,
)
from i2i.speed.options import SPEED_SETTINGS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

Recipe = dict[str, Any]

#: Seeds torch accepts (``manual_seed`` takes 0..2**64-1; the loop also seeds with ``seed + 1``).
SEEDS = Range(0, 2**64 - 2)
#: Device names a run can use: torch's own list is longer, but ``meta`` and the rest cannot train.
DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:[0-9]+)?)$")

#: Settings the host itself reads, per section (component parameters come from the factories).
HOST_SETTINGS: dict[str, dict[str, Param]] = {
    "experiment": {
        p.name: p
        for p in [
            Param("name", str, "", "run name; defaults to the recipe file's stem"),
            Param("seed", int, 0, "fixes init, data order and jitter", range=SEEDS),
            Param("output_dir", str, "runs", "where run directories are created"),
            Param("device", str, "auto", "auto, cpu, cuda, cuda:N or mps"),
        ]
    },
    "data": {
        p.name: p
        for p in [
            Param("batch_size", int, 1, minimum=1),
            Param("num_workers", int, 0, "DataLoader worker processes", range=Range(0, 256)),
            Param(
                "skip_bad",
                bool,
                False,
                "leave out items whose files are corrupt, truncated or not images (counted), not stop",
            ),
            Param(
                "cache",
                Literal["off", "decoded"],
                "off",
                "'decoded': decode each image once, jitter on the training device",
            ),
        ]
    },
    "optim": {
        p.name: p
        for p in [
            Param("lr", float, 2e-4, "Adam learning rate of G (and D unless lr_D is set)", minimum=0),
            Param("lr_D", float | None, None, minimum=0),
            Param("beta1", float, 0.5, range=Range(0, 1, high_open=True)),
            Param("beta2", float, 0.999, range=Range(0, 1, high_open=True)),
            Param("weight_decay", float, 0.0, minimum=0),
            Param("fused", bool, True, "fused Adam kernel (about 1.2x faster per step on CPU)"),
            Param("policy", Literal["linear", "step", "cosine", "plateau"], "linear"),
            Param("step_epochs", int, 50, "policy 'step': decay every this many epochs", minimum=1),
            Param(
                "gamma",
                float,
                0.1,
                "policy 'step'/'plateau': decay factor",
                range=Range(0, 1, low_open=True, high_open=True),
            ),
            Param("patience", int, 5, "policy 'plateau': epochs without improvement", minimum=0),
        ]
    },
    "train": {
        p.name: p
        for p in [
            Param("epochs", int, 100, "epochs at the initial learning rate", minimum=0),
            Param("epochs_decay", int, 100, "epochs of decay after that (policy 'linear')", minimum=0),
            Param("max_steps", int, 0, "stop after this many steps in total (0: no cap)", minimum=0),
            Param("init", Literal["normal", "xavier", "kaiming", "orthogonal", "none"], "normal"),
            Param("init_gain", float, 0.02, minimum=0),
            Param("log_every", int, 10, "steps between loss log lines", minimum=1),
            Param("sample_every", int, 200, "steps between sample grids", minimum=0),
            Param("checkpoint_every", int, 5, "epochs between kept snapshots (networks only)", minimum=0),
            Param("keep_last", int, 0, "keep only the newest this many epoch snapshots (0: all)", minimum=0),
            Param(
                "snapshot_steps",
                list[int],
                [],
                "also keep a networks-only snapshot step_NNNNNNN.pt after each of these steps",
            ),
            Param("checkpoint_minutes", float, 10.0, "also refresh latest.pt this often (0: off)", minimum=0),
            Param("num_samples", int, 4, "images in each sample grid", minimum=1),
            Param("tensorboard", bool, True, "also write TensorBoard events when installed"),
            Param("evaluate", bool, True, "evaluate on the eval split when training ends"),
            Param("skip_nonfinite", bool, False, "skip steps with NaN/inf losses instead of stopping"),
            Param(
                "sync_batchnorm",
                Literal["auto", "off"],
                "auto",
                "several processes: 'auto' computes batch-norm statistics over all processes' items",
            ),
        ]
    },
    "eval": {
        p.name: p
        for p in [
            Param("split", str, "test"),
            Param(
                "modes",
                list[Literal["eval", "train"]],
                ["eval"],
                "'eval': eval-mode networks; 'train': dropout and batch statistics on",
                range=Range(1),
            ),
            Param(
                "metrics",
                list[str | dict],
                ["l1", "psnr", "ssim"],
                'names, or tables with parameters: { name = "fid", weights = "..." }',
            ),
            Param("max_items", int, 0, "evaluate at most this many images (0: all)", minimum=0),
            Param("batch_size", int, 1, minimum=1),
        ]
    },
}
HOST_SETTINGS["speed"] = SPEED_SETTINGS

#: Sections holding one component: section → (registry kind, whether the section is required).
COMPONENT_SECTIONS = {
    "model": ("model", False),
    "data": ("dataset", True),
    "generator": ("generator", True),
    "discriminator": ("discriminator", False),
}
ALL_SECTIONS = [
    "experiment",
    "model",
    "data",
    "generator",
    "discriminator",
    "losses",
    "optim",
    "train",
    "eval",
    "speed",
]


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read a recipe file and apply ``section.key=value`` overrides (values parsed as TOML)."""
    path = Path(path)
    if path.exists() and not path.is_file():  # a folder, or a pipe that would block the read
        what = "a folder" if path.is_dir() else "not a regular file"
        raise I2IError(f"Recipe file {path} is {what}; give the path of a .toml recipe.")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise I2IError(f"Recipe file {path} does not exist.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise I2IError(f"Recipe file {path} could not be read: {exc}.") from None
    recipe = _parse_toml(text, f"Recipe file {path}")
    for item in overrides or []:
        apply_override(recipe, item)
    recipe.setdefault("experiment", {}).setdefault("name", path.stem)
    return recipe


def _parse_toml(text: str, what: str) -> dict[str, Any]:
    """``tomllib.loads`` with its non-TOML failures (too deep, too many digits) as user errors."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise I2IError(f"{what} is not valid TOML: {exc}.") from None
    except RecursionError:
        raise I2IError(f"{what} is nested too deeply to read (arrays or tables inside each other).") from None
    except ValueError as exc:  # Python's limit on the digits of an integer (sys.get_int_max_str_digits)
        raise I2IError(
            f"{what} holds an integer with more than {sys.get_int_max_str_digits()} digits, which "
            f"cannot be read ({exc})."
        ) from None


def parse_value(text: str) -> Any:
    """A ``--set`` value: TOML syntax when it parses (5, 1e-3, true, [1, 2], "x"), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    except (RecursionError, ValueError):
        return _parse_toml(f"v = {text}", "The value")  # raises the matching user error


def apply_override(recipe: Recipe, item: str) -> None:
    """Apply one ``a.b.c=value``; ``losses.l1.weight`` or ``losses.1.weight`` address list entries."""
    key, sep, raw = item.partition("=")
    parts = [p for p in key.strip().split(".") if p]
    if not sep or len(parts) < 2:
        raise I2IError(f"--set {item!r} must look like section.key=value, e.g. train.epochs=5.")
    node: Any = recipe
    for i, part in enumerate(parts[:-1]):
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            node = _list_entry(node, part, where)
        else:
            node = node.setdefault(part, {})
        if not isinstance(node, (dict, list)):
            raise I2IError(f"--set {item!r}: {where} is a value, not a table.")
    if isinstance(node, list):
        raise I2IError(f"--set {item!r}: name an entry of {'.'.join(parts[:-1])} first.")
    try:
        node[parts[-1]] = parse_value(raw.strip())
    except I2IError as exc:
        raise I2IError(f"--set {'.'.join(parts)}: {exc}") from None


def _list_entry(entries: list, part: str, where: str) -> Any:
    if part.isdigit() and int(part) < len(entries):
        return entries[int(part)]
    named = [e for e in entries if isinstance(e, dict) and e.get("name") == part]
    if len(named) == 1:
        return named[0]
    names = [str(e.get("name")) for e in entries if isinstance(e, dict)]
    raise I2IError(f"--set: no single entry {part!r} in {where.rsplit('.', 1)[0]}. {suggest(part, names)}")


def _check_table(
    table: dict, params: dict[str, Param], where: str, problems: list[str], open_ended: bool = False
) -> dict:
    """Check keys and values of one table; returns it with defaults filled in."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        param = params.get(key)
        if param is None:
            if not open_ended:
                hint = suggest(key, params) if params else "It takes no settings."
                problems.append(f"{where}.{key}: unknown setting. {hint}")
            else:
                out[key] = value
            continue
        if not matches(value, param.annotation):
            problems.append(f"{where}.{key} = {value!r}: expected {describe(param.annotation)}.")
            continue
        out_of_range = range_problem(value, param.bounds)
        if out_of_range:
            problems.append(f"{where}.{key} = {value!r}: {out_of_range}.")
            continue
        out[key] = coerce(value, param.annotation)
    for name, param in params.items():
        if name in out or name in table:
            continue
        if param.required:
            problems.append(f"{where}.{name}: required, expected {describe(param.annotation)}.")
        else:
            out[name] = param.default
    return out


#: Loss weights below 0 turn a loss into a reward; a loss factory that means it declares a range.
LOSS_WEIGHT = Range(0)


def _check_component(
    table: Any,
    where: str,
    kind: str,
    host: PluginHost,
    problems: list[str],
    extra: dict[str, Param] | None = None,
    checks: list[tuple[str, Any, dict]] | None = None,
) -> dict | None:
    """Check one component table; a clean one is queued on ``checks`` for its cross-setting rules."""
    if not isinstance(table, dict):
        problems.append(f'{where}: expected a table with name = "...".')
        return None
    name = table.get("name")
    if not isinstance(name, str):
        registry = host.registry(kind)
        problems.append(
            f"{where}.name: missing; which {kind}? Available: {', '.join(registry.names()) or 'none'}."
        )
        return None
    try:
        component = host.registry(kind).get(name)
    except I2IError as exc:  # unknown, or provided twice
        problems.append(f"{where}.name = {name!r}: {exc}")
        return None
    params = factory_params(component.factory)
    for injected in component.injected:
        if injected in table and injected in params:
            problems.append(f"{where}.{injected}: set by i2i itself, remove it from the recipe.")
    params = {k: v for k, v in params.items() if k not in component.injected}
    weight = params.get("weight")
    if kind == "loss" and weight is not None and weight.range is None:
        params["weight"] = dataclasses.replace(weight, range=LOSS_WEIGHT)
    params.update(extra or {})
    rest = {k: v for k, v in table.items() if k != "name" and k not in component.injected}
    before = len(problems)
    checked = _check_table(rest, params, where, problems, open_ended=accepts_extra(component.factory))
    if checks is not None and len(problems) == before:
        checks.append((where, component.factory, {"name": name, **checked}))
    return {"name": name, **checked}


def uses_discriminator(component: Component) -> bool:
    """Whether a registered loss needs a discriminator, as its plugin declared it, without building it.

    The declaration is ``registry.add(name, factory, uses_discriminator=True)``, or the class
    attribute of a loss class registered as its own factory. A plugin that declares neither (written
    before the declaration existed) is read as before, from the loss class its factory's return
    annotation names (``def my_gan(...) -> MyGanLoss``); one that says nothing at all trains no D here,
    and the run refuses it when the built loss asks for one (see ``build_discriminator``).
    """
    if component.uses_discriminator is not None:
        return component.uses_discriminator
    try:
        target = typing.get_type_hints(component.factory).get("return")
    except Exception:  # unresolvable hints
        return False
    return inspect.isclass(target) and getattr(target, "uses_discriminator", False) is True


def _check_experiment(table: dict, problems: list[str]) -> None:
    name, device = table.get("name"), table.get("device")
    if isinstance(name, str) and not _is_folder_name(name):
        problems.append(
            f"experiment.name = {name!r}: the run directory is output_dir/NAME, so the name must be one "
            "folder name inside output_dir: not empty, '.' or '..', without '/', '\\' or control "
            "characters, at most 255 bytes."
        )
    if isinstance(device, str) and not DEVICE.match(device):
        problems.append(
            f"experiment.device = {device!r}: not a device i2i can train on; use auto, cpu, cuda, "
            "cuda:N or mps."
        )


def _is_folder_name(name: str) -> bool:
    return (
        name not in ("", ".", "..")
        and not any(c in name for c in "/\\")
        and all(ord(c) >= 32 and c != "\x7f" for c in name)
        and len(name.encode("utf-8", "surrogatepass")) <= 255
    )


def _run_checks(checks: list[tuple[str, Any, dict]], out: Recipe, problems: list[str]) -> None:
    """The factories' own cross-setting rules (see :func:`i2i.schema.recipe_check`)."""
    image_size = None
    for where, factory, params in checks:
        sizer = getattr(factory, "i2i_image_size", None)
        if where == "data" and sizer is not None:
            image_size = sizer(params)
    context = CheckContext(recipe=out, image_size=image_size)
    for where, factory, params in checks:
        check = getattr(factory, "i2i_check", None)
        if check is None:
            continue
        try:
            found = list(check(params, context))
        except I2IError as exc:
            found = [str(exc)]
        problems += [f"{where}.{p}" for p in found]


#: The model kind of a recipe without a [model] section.
DEFAULT_MODEL = "pix2pix"


def _model_class(table: Any, host: PluginHost) -> Any:
    """The registered model factory a checked ``[model]`` table names (None if it did not check)."""
    if not isinstance(table, dict) or "name" not in table:
        return None
    try:
        factory = host.registry("model").get(table["name"]).factory
    except I2IError:
        return None
    return getattr(factory, "func", factory)  # a functools.partial of a model class: the class


def resolve(recipe: Recipe, host: PluginHost, source: str = "recipe") -> Recipe:
    """Validate ``recipe`` completely and return it with every default filled in."""
    problems: list[str] = []
    if not isinstance(recipe, dict):
        raise RecipeError(source, ["the recipe must be a TOML document of tables"])
    for section in recipe:
        if section == "diversity":
            problems.append(
                "[diversity]: this recipe describes a diversity experiment; run it with "
                f"'i2i diversity {source}'."
            )
        elif section not in ALL_SECTIONS:
            problems.append(f"[{section}]: unknown section. {suggest(section, ALL_SECTIONS)}")
    out: Recipe = {}
    for section in ["experiment", "optim", "train", "eval", "speed"]:
        table = recipe.get(section, {})
        if not isinstance(table, dict):
            problems.append(f"[{section}]: expected a table.")
            continue
        out[section] = _check_table(table, HOST_SETTINGS[section], section, problems)
    _check_experiment(out.get("experiment", {}), problems)
    checks: list[tuple[str, Any, dict]] = []
    for section, (kind, required) in COMPONENT_SECTIONS.items():
        if section not in recipe:
            if required:
                problems.append(
                    f"[{section}]: missing. Available {kind}s: "
                    f"{', '.join(host.registry(kind).names()) or 'none'}."
                )
            continue
        checked = _check_component(
            recipe[section], section, kind, host, problems, HOST_SETTINGS.get(section), checks
        )
        if checked is not None:
            out[section] = checked
    if "model" not in out and "model" not in recipe:
        out["model"] = {"name": DEFAULT_MODEL}  # a recipe without [model] is pix2pix, as before
    model = _model_class(out.get("model"), host)
    if model is not None and getattr(model, "needs_discriminator", False) and "discriminator" not in recipe:
        problems.append(
            f"[discriminator]: missing; the model {out['model']['name']!r} trains one. Available: "
            f"{', '.join(host.registry('discriminator').names()) or 'none'}."
        )
    uses_losses = model is None or getattr(model, "uses_losses", True)
    losses = recipe.get("losses", [])
    if not isinstance(losses, list):
        problems.append("[[losses]]: expected an array of tables ([[losses]] entries).")
        losses = []
    if losses and not uses_losses:
        problems.append(
            f"[[losses]]: the model {out['model']['name']!r} has its own losses (set their weights in "
            "[model]); remove the [[losses]] tables."
        )
        losses = []
    if not losses and uses_losses:
        problems.append(
            "[[losses]]: at least one loss is needed. Available: "
            f"{', '.join(host.registry('loss').names()) or 'none'}."
        )
    if uses_losses:  # a model with its own losses has no [[losses]] in its resolved recipe either
        out["losses"] = []
    for i, entry in enumerate(losses):
        label = entry.get("name", i) if isinstance(entry, dict) else i
        checked = _check_component(entry, f"losses.{label}", "loss", host, problems, checks=checks)
        if checked is not None:
            out["losses"].append(checked)
            component = host.registry("loss").get(checked["name"])
            if "discriminator" not in recipe and uses_discriminator(component):
                problems.append(
                    f"losses.{label}: this loss trains a discriminator, but the recipe has no "
                    "[discriminator] section. Add one (available: "
                    f"{', '.join(host.registry('discriminator').names()) or 'none'}) or drop the loss."
                )
    metrics = out.get("eval", {}).get("metrics", [])
    for i, metric in enumerate(metrics):
        if isinstance(metric, dict):
            metrics[i] = _check_component(metric, f"eval.metrics.{i}", "metric", host, problems) or metric
        elif metric not in host.registry("metric"):
            problems.append(
                f"eval.metrics[{i}] = {metric!r}: unknown metric. "
                f"{suggest(metric, host.registry('metric').names())}"
            )
    _run_checks(checks, out, problems)
    if problems:
        raise RecipeError(source, problems)
    return out


def dumps(recipe: Recipe) -> str:
    """The recipe as TOML, sections in their usual order and losses as ``[[losses]]`` tables.

    ``None`` values, which TOML cannot hold, are left out (they mean "use the default").
    """
    import tomli_w

    def clean(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: clean(v) for k, v in node.items() if v is not None}
        if isinstance(node, (list, tuple)):
            return [clean(v) for v in node]
        return node

    order = [s for s in ALL_SECTIONS if s in recipe] + [s for s in recipe if s not in ALL_SECTIONS]
    parts = []
    for section in order:
        value = clean(copy.deepcopy(recipe[section]))
        if isinstance(value, list) and all(isinstance(v, dict) for v in value):
            parts += [f"[[{section}]]\n{tomli_w.dumps(v)}" for v in value]
        elif isinstance(value, dict):
            parts.append(f"[{section}]\n{tomli_w.dumps(value)}")
        else:
            parts.append(tomli_w.dumps({section: value}))
    return "\n".join(parts)
