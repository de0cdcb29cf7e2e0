"""Property-based validation: ``i2i validate`` over generated recipes, valid and nonsense.

Each example is a consistent tiny recipe (sizes, depths and filters that fit together) with zero,
one or two values replaced by nonsense from the classes of issue 9. The property: a recipe
with no nonsense is accepted (exit 0) and builds networks that run on a crop-sized image; a recipe
with nonsense is refused with exit 1 and a problem naming every replaced key; nothing ever ends
in an internal error (exit 3). ``pytest --hypothesis-show-statistics`` prints how often each class
came up (the figures in docs/reliability.md).
"""

from __future__ import annotations

import copy
import math
import tempfile
from pathlib import Path

import pytest
import tomli_w
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from i2i.cli import main

#: Examples per run; derandomized, so every run (and CI) checks the same recipes.
PER_CLASS = 10  # recipes per nonsense class (a third of them carry a second class too)
VALID = 40  # sensible recipes validated
BUILT = 10  # accepted recipes whose networks are also built and run (building is the slow part)
SETTINGS = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

CROPS = [32, 64, 96, 128]
NAN, INF = math.nan, math.inf


@st.composite
def valid_recipes(draw) -> dict:
    """A recipe whose every value makes sense and whose parts fit one another."""
    crop = draw(st.sampled_from(CROPS))
    load = crop + draw(st.integers(0, 40))
    preprocess = draw(st.sampled_from(["resize_and_crop", "crop", "scale_width_and_crop"]))
    generator = draw(st.sampled_from(["unet", "unet_128", "resnet", "resnet_6blocks", "unet_z_all"]))
    if generator == "unet_128":
        crop = 128
        load = max(load, crop)
    depths = [n for n in range(5, 8) if crop % 2**n == 0]
    gen: dict = {"name": generator, "ngf": draw(st.integers(1, 4))}
    if generator in ("unet", "unet_z_all"):
        gen["num_downs"] = draw(st.sampled_from(depths))
    if generator == "unet_z_all":
        gen["nz"] = draw(st.integers(1, 8))
    if generator == "resnet":
        gen["n_blocks"] = draw(st.integers(0, 2))
    layers = [n for n in range(1, 6) if 3 * 2**n <= crop]
    return {
        "experiment": {
            "name": draw(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True)),
            "seed": draw(st.integers(0, 2**64 - 2)),
            "device": draw(st.sampled_from(["auto", "cpu"])),
        },
        "data": {
            "name": draw(st.sampled_from(["aligned", "paired_folders"])),
            "root": "nowhere",
            "preprocess": preprocess,
            "load_size": load,
            "crop_size": crop,
            "batch_size": draw(st.integers(1, 8)),
        },
        "generator": gen,
        "discriminator": {
            "name": "patchgan",
            "ndf": draw(st.integers(1, 4)),
            "n_layers": draw(st.sampled_from(layers)),
        },
        "losses": [
            {"name": "cgan", "weight": draw(st.floats(0, 10))},
            {"name": "l1", "weight": draw(st.floats(0, 200))},
        ],
        "optim": {
            "lr": draw(st.floats(0, 1)),
            "beta1": draw(st.floats(0, 1, exclude_max=True)),
            "beta2": draw(st.floats(0, 1, exclude_max=True)),
            "gamma": draw(st.floats(0, 1, exclude_min=True, exclude_max=True)),
        },
        "train": {
            "epochs": draw(st.integers(0, 1000)),
            "init_gain": draw(st.floats(0, 1)),
            "checkpoint_minutes": draw(st.floats(0, 1e6)),
        },
        "eval": {"modes": draw(st.sampled_from([["eval"], ["train"], ["eval", "train"]]))},
    }


def _set(path: str, values):
    """A nonsense class: replace ``section.key`` (``losses.N.key`` for a loss) with one of ``values``."""

    def apply(draw, recipe: dict) -> str:
        *parents, key = path.split(".")
        node = recipe
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[key] = draw(values)
        shown = path.replace("losses.0", "losses.cgan").replace("losses.1", "losses.l1")
        return f"{shown} = "

    return apply


def _crop_over_load(draw, recipe: dict) -> str:
    recipe["data"]["crop_size"] = recipe["data"]["load_size"] + draw(st.integers(1, 1000))
    return "data.crop_size = "


def _unet_too_deep(draw, recipe: dict) -> str:
    crop = recipe["data"]["crop_size"]
    deep = [n for n in range(5, 17) if crop % 2**n]
    recipe["generator"] = {"name": "unet", "ngf": 1, "num_downs": draw(st.sampled_from(deep))}
    return "generator.num_downs = "


def _patchgan_too_deep(draw, recipe: dict) -> str:
    crop = recipe["data"]["crop_size"]
    recipe["discriminator"]["n_layers"] = draw(st.integers(1, 12).filter(lambda n: 3 * 2**n > crop))
    return "discriminator.n_layers = "


def _no_discriminator(draw, recipe: dict) -> str:
    del recipe["discriminator"]
    return "losses.cgan: this loss trains a discriminator"


def _single_dataset(draw, recipe: dict) -> str:
    recipe["data"]["name"] = "single"
    return "data.name = 'single'"


BAD_NAMES = st.sampled_from(
    ["", ".", "..", "/tmp/x", "a/b", "../up", "a\\b", "x\x00y", "tab\there", "n" * 300]
)
NOT_FINITE = st.sampled_from([NAN, INF, -INF])
NEGATIVE = st.floats(max_value=0, exclude_max=True, allow_nan=False, allow_infinity=False)

#: Nonsense classes: name → (section it breaks, how it breaks it).
NONSENSE = {
    "load_size out of range": ("data", _set("data.load_size", st.integers(max_value=0) | st.integers(32769))),
    "crop_size out of range": ("data", _set("data.crop_size", st.integers(max_value=0) | st.integers(32769))),
    "crop larger than load": ("data", _crop_over_load),
    "single dataset for training": ("data", _single_dataset),
    "batch_size < 1": ("data", _set("data.batch_size", st.integers(max_value=0))),
    "ngf out of range": ("generator", _set("generator.ngf", st.integers(max_value=0) | st.integers(513))),
    "num_downs does not fit the crop": ("generator", _unet_too_deep),
    "ndf out of range": ("discriminator", _set("discriminator.ndf", st.integers(max_value=0))),
    "n_layers out of range": (
        "discriminator",
        _set("discriminator.n_layers", st.integers(max_value=0) | st.integers(13, 10**6)),
    ),
    "n_layers does not fit the crop": ("discriminator", _patchgan_too_deep),
    "cgan without discriminator": ("discriminator", _no_discriminator),
    "lr not finite or negative": ("optim", _set("optim.lr", NOT_FINITE | NEGATIVE)),
    "lr_D not finite or negative": ("optim", _set("optim.lr_D", NOT_FINITE | NEGATIVE)),
    "beta1 outside [0, 1)": ("optim", _set("optim.beta1", st.floats(1, 10) | NEGATIVE | NOT_FINITE)),
    "beta2 outside [0, 1)": ("optim", _set("optim.beta2", st.floats(1, 10) | NEGATIVE | NOT_FINITE)),
    "negative or NaN loss weight": ("losses", _set("losses.1.weight", NEGATIVE | st.just(NAN))),
    "seed outside torch's range": (
        "experiment",
        _set("experiment.seed", st.integers(max_value=-1) | st.integers(min_value=2**64 - 1)),
    ),
    "device not usable": (
        "experiment",
        _set("experiment.device", st.sampled_from(["meta", "xla", "cuda:x", ""])),
    ),
    "run name escapes output_dir": ("experiment", _set("experiment.name", BAD_NAMES)),
    "init_gain not finite or negative": ("train", _set("train.init_gain", NOT_FINITE | NEGATIVE)),
    "checkpoint_minutes NaN or negative": ("train", _set("train.checkpoint_minutes", NOT_FINITE | NEGATIVE)),
    "epochs beyond 64 bits or negative": (
        "train",
        _set("train.epochs", st.integers(max_value=-1) | st.integers(min_value=2**63)),
    ),
    "eval.modes empty": ("eval", _set("eval.modes", st.just([]))),
}
#: Classes whose check needs the data section to be sound (they relate to its crop).
NEEDS_DATA = {"num_downs does not fit the crop", "n_layers does not fit the crop"}


@st.composite
def cases(draw, name: str) -> tuple[dict, list[str], list[str]]:
    """A recipe with nonsense of class ``name`` (and sometimes of a second class), and a fragment of
    the problem each must cause."""
    recipe = copy.deepcopy(draw(valid_recipes()))
    names = [name]
    other = draw(st.sampled_from([None, None, *sorted(NONSENSE)]))
    sections = {NONSENSE[name][0], NONSENSE[other][0] if other else None}
    # Two breaks of one section could hide each other; a depth check needs a sound [data].
    if other and len(sections) == 2 and not ("data" in sections and NEEDS_DATA & {name, other}):
        names.append(other)
    return recipe, names, [NONSENSE[n][1](draw, recipe) for n in names]


def _validate(recipe: dict, capsys) -> tuple[int, str]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "generated.toml"
        path.write_text(tomli_w.dumps(recipe), encoding="utf-8")
        with pytest.raises(SystemExit) as caught:
            main(["validate", str(path)])
    captured = capsys.readouterr()
    return caught.value.code, " ".join((captured.out + captured.err).split())


def _builds(recipe: dict) -> None:
    """The accepted recipe builds G and D, which run on one crop-sized image."""
    import torch

    from i2i.assembly.build import build_model
    from i2i.assembly.host import get_host
    from i2i.assembly.recipe import resolve

    resolved = resolve(recipe, get_host())
    model = build_model(resolved, get_host(), input_nc=3, output_nc=3)
    size = resolved["data"]["crop_size"]
    x = torch.zeros(1, 3, size, size)
    model.generator.eval()
    with torch.no_grad():
        z = torch.zeros(1, model.latent_dim) if model.latent_dim else None
        y = model.generator(x, z) if z is not None else model.generator(x)
        assert y.shape == x.shape
        model.discriminator.eval()
        model.discriminator(torch.cat([x, y], dim=1))


@pytest.mark.parametrize("name", sorted(NONSENSE))
@settings(SETTINGS, max_examples=PER_CLASS)
@given(data=st.data())
def test_nonsense_is_refused_naming_the_key(name, data, capsys):
    recipe, names, fragments = data.draw(cases(name))
    event(f"nonsense classes in the recipe: {len(names)}")
    code, text = _validate(recipe, capsys)
    assert code == 1, f"{'accepted' if code == 0 else 'internal error for'} {names}: {text}"
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} missing for {names}: {text}"


@settings(SETTINGS, max_examples=VALID)
@given(recipe=valid_recipes())
def test_sensible_recipes_are_accepted(recipe, capsys):
    event(f"generator {recipe['generator']['name']}, crop {recipe['data']['crop_size']}")
    code, text = _validate(recipe, capsys)
    assert code == 0, text


@settings(SETTINGS, max_examples=BUILT)
@given(recipe=valid_recipes())
def test_accepted_recipes_build_networks_that_run(recipe, capsys):
    code, text = _validate(recipe, capsys)
    assert code == 0, text
    event(f"built: {recipe['generator']['name']} at {recipe['data']['crop_size']}px")
    _builds(recipe)
