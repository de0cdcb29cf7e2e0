"""Recipes: loading, ``--set`` overrides, validation against the registered factories, dumping."""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Literal

import pytest

import i2i
from i2i.assembly.host import PluginHost, get_host
from i2i.assembly.recipe import HOST_SETTINGS, apply_override, dumps, load_recipe, parse_value, resolve
from i2i.errors import I2IError, RecipeError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
RECIPE_FILES = sorted((REPO / "recipes").glob("*.toml"))
EXPERIMENTS = [p for p in RECIPE_FILES if "[diversity]" in p.read_text(encoding="utf-8")]  # i2i diversity
SHIPPED = [p for p in RECIPE_FILES if p not in EXPERIMENTS]  # single runs
EXAMPLE = REPO / "examples" / "i2i-example-plugin" / "recipe.toml"
QUICK = REPO / "recipes" / "facades_quick.toml"

MINIMAL = """
[data]
name = "aligned"
root = "somewhere"

[generator]
name = "unet_256"

[discriminator]
name = "patchgan"

[[losses]]
name = "cgan"

[[losses]]
name = "l1"
"""


def write(tmp_path: Path, text: str, name: str = "recipe.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(recipe: dict, host: PluginHost | None = None) -> list[str]:
    with pytest.raises(RecipeError) as caught:
        resolve(recipe, host or get_host(), source="test.toml")
    return caught.value.problems


# -- the shipped recipes ---------------------------------------------------------------------------


def test_the_canonical_recipes_are_shipped():
    assert {p.name for p in SHIPPED} >= {"facades_pix2pix.toml", "facades_quick.toml"}


@pytest.mark.parametrize("path", [*SHIPPED, EXAMPLE], ids=lambda p: p.parent.name + "/" + p.name)
def test_shipped_recipes_validate(path):
    recipe = load_recipe(path)
    resolved = resolve(recipe, get_host(), source=str(path))
    assert resolved["experiment"]["name"] == recipe["experiment"]["name"]
    names = [loss["name"] for loss in resolved.get("losses", [])]
    assert names == [e["name"] for e in recipe.get("losses", [])]
    assert resolved["model"]["name"] == recipe.get("model", {}).get("name", "pix2pix")


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_shipped_diversity_experiments_validate(path):
    from i2i.diversity.config import load_experiment

    experiment = load_experiment(path, get_host())
    names = [v.name for v in experiment.variants]
    if path.stem.startswith("facades_diversity") and path.stem != "facades_diversity_over_time":
        assert names == ["pix2pix", "z_input", "z_all", "z_all_ms", "z_all_ds", "bicyclegan"]
    baseline = experiment.variants[0].recipe  # every comparison starts from the paper's model
    assert baseline["generator"]["dropout"] is True and "latent" not in baseline["generator"]["name"]
    steps = {(v.recipe["train"]["epochs"], v.recipe["train"]["max_steps"]) for v in experiment.variants}
    assert len(steps) == 1  # every variant trains for the same number of steps


#: unet_256 with every default filled in, as resolving a recipe writes it.
UNET_256_DEFAULTS = {"name": "unet_256", "ngf": 64, "norm": "batch", "dropout": True, "output": "tanh"}


def test_the_facades_recipe_is_the_papers_setup():
    resolved = resolve(load_recipe(REPO / "recipes" / "facades_pix2pix.toml"), get_host())
    assert resolved["generator"] == UNET_256_DEFAULTS
    assert resolved["discriminator"] == {"name": "patchgan", "ndf": 64, "n_layers": 3, "norm": "batch"}
    assert resolved["losses"] == [
        {"name": "cgan", "mode": "vanilla", "weight": 1.0, "gp_weight": 10.0},
        {"name": "l1", "weight": 100.0},
    ]
    assert (resolved["data"]["direction"], resolved["data"]["load_size"]) == ("BtoA", 286)
    assert resolved["data"]["crop_size"] == 256 and resolved["data"]["batch_size"] == 1
    assert (resolved["optim"]["lr"], resolved["optim"]["beta1"]) == (0.0002, 0.5)
    assert (resolved["train"]["epochs"], resolved["train"]["epochs_decay"]) == (100, 100)


def test_resolving_fills_in_every_default(tmp_path):
    path = write(tmp_path, MINIMAL, "tiny_run.toml")
    recipe = load_recipe(path)
    before = copy.deepcopy(recipe)
    resolved = resolve(recipe, get_host())
    assert recipe == before  # the input is not modified
    assert resolved["experiment"]["name"] == "tiny_run"  # the file's stem
    for section in ("optim", "train", "eval"):
        assert resolved[section] == {k: p.default for k, p in HOST_SETTINGS[section].items()}
    assert resolved["experiment"]["output_dir"] == "runs"
    assert resolved["generator"] == UNET_256_DEFAULTS
    assert resolved["data"]["direction"] == "AtoB" and resolved["data"]["max_items"] is None
    assert resolved["data"]["batch_size"] == 1 and resolved["data"]["num_workers"] == 0
    assert "split" not in resolved["data"]  # injected by the host
    assert resolved["losses"][1] == {"name": "l1", "weight": 100.0}


def test_integers_are_accepted_where_numbers_are_expected(tmp_path):
    recipe = load_recipe(write(tmp_path, MINIMAL), ["losses.l1.weight=10", "optim.lr=1"])
    resolved = resolve(recipe, get_host())
    assert resolved["losses"][1]["weight"] == 10.0 and isinstance(resolved["losses"][1]["weight"], float)
    assert isinstance(resolved["optim"]["lr"], float)


# -- problems ----------------------------------------------------------------------------------------

BROKEN = """
[experiment]
seed = "zero"

[data]
name = "aligned"
root = "x"
batch_size = 0.5

[generator]
name = "unet_256"
ngf = "x"
ngff = 3
input_nc = 3
norm = "bath"

[discriminator]
name = "patchgun"

[[losses]]
name = "cgan"
mode = "lsgam"

[[losses]]
name = "l3"

[optim]
lr = "fast"

[train]
epochs = 1.5

[trian]
epochs = 1

[eval]
metrics = ["l1", "psnrr"]
"""


def test_a_broken_recipe_reports_every_problem_at_once(tmp_path):
    path = write(tmp_path, BROKEN)
    with pytest.raises(RecipeError) as caught:
        resolve(load_recipe(path), get_host(), source=str(path))
    problems = caught.value.problems
    expected = [
        "experiment.seed = 'zero': expected an integer.",
        "data.batch_size = 0.5: expected an integer.",
        "generator.ngf = 'x': expected an integer.",
        "generator.norm = 'bath': expected one of 'batch', 'instance', 'none'.",
        "generator.input_nc: set by i2i itself, remove it from the recipe.",
        "losses.cgan.mode = 'lsgam': expected one of 'vanilla', 'lsgan', 'hinge', 'wgangp'.",
        "optim.lr = 'fast': expected a number.",
        "train.epochs = 1.5: expected an integer.",
    ]
    for problem in expected:
        assert problem in problems
    starts = [
        "generator.ngff: unknown setting. Did you mean 'ngf'?",
        "discriminator.name = 'patchgun': Unknown discriminator 'patchgun'. Did you mean 'patchgan'?",
        "losses.l3.name = 'l3': Unknown loss 'l3'. Did you mean",
        "[trian]: unknown section. Did you mean 'train'?",
        "eval.metrics[1] = 'psnrr': unknown metric. Did you mean 'psnr'?",
    ]
    for start in starts:
        assert any(p.startswith(start) for p in problems), start
    assert len(problems) == len(expected) + len(starts)
    message = str(caught.value)
    assert message.startswith(f"{path}: {len(problems)} problems:\n  - ")
    assert all(f"  - {p}" in message for p in problems)


def test_unknown_names_list_the_choices():
    recipe = load_recipe(QUICK)
    recipe["generator"]["name"] = "unet_265"
    (problem,) = problems_of(recipe)
    assert problem.startswith("generator.name = 'unet_265': Unknown generator 'unet_265'.")
    assert "Did you mean 'unet_256'" in problem
    assert "Available: " in problem
    for name in ("noise_encoder_decoder", "resnet_9blocks", "unet", "unet_128"):
        assert name in problem


def test_unknown_parameters_get_a_suggestion():
    recipe = load_recipe(QUICK)
    recipe["discriminator"]["n_layer"] = 2
    recipe["data"]["batchsize"] = 4
    problems = problems_of(recipe)
    assert problems[0].startswith("data.batchsize: unknown setting. Did you mean 'batch_size'")
    assert problems[1].startswith("discriminator.n_layer: unknown setting. Did you mean 'n_layers'?")
    assert "Available: " in problems[1] and "ndf" in problems[1]
    assert "input_nc" not in problems[1]  # injected parameters are not offered


def test_missing_sections_and_names():
    problems = problems_of({"experiment": {"name": "empty"}})
    assert len(problems) == 3
    assert problems[0].startswith("[data]: missing. Available datasets: ")
    assert "aligned" in problems[0]
    assert problems[1].startswith("[generator]: missing. Available generators: ")
    assert problems[2].startswith("[[losses]]: at least one loss is needed. Available: ")
    recipe = load_recipe(QUICK)
    del recipe["generator"]["name"]
    del recipe["data"]["root"]
    assert problems_of(recipe) == [
        "data.root: required, expected a string.",
        problems[1].replace(
            "[generator]: missing. Available generators:",
            "generator.name: missing; which generator? Available:",
        ),
    ]


def test_the_discriminator_section_is_optional(tmp_path):
    """Optional when no loss trains a discriminator (test_recipe_sanity: cgan without one is refused)."""
    text = MINIMAL.replace('[discriminator]\nname = "patchgan"\n', "").replace('name = "cgan"', 'name = "l2"')
    assert "discriminator" not in resolve(load_recipe(write(tmp_path, text)), get_host())


@pytest.mark.parametrize(
    ("losses", "problem"),
    [
        ({"name": "l1"}, "[[losses]]: expected an array of tables ([[losses]] entries)."),
        ([1], 'losses.0: expected a table with name = "...".'),
        ([{"weight": 1.0}], "losses.0.name: missing; which loss? Available: "),
        ([{"name": "l1", "wieght": 1.0}], "losses.l1.wieght: unknown setting. Did you mean 'weight'?"),
        ([{"name": "l1", "weight": "heavy"}], "losses.l1.weight = 'heavy': expected a number."),
        ([{"name": "cgan", "mode": "bce"}], "losses.cgan.mode = 'bce': expected one of 'vanilla'"),
    ],
)
def test_losses_entries_are_validated(losses, problem):
    recipe = load_recipe(QUICK)
    recipe["losses"] = losses
    found = problems_of(recipe)
    assert any(p.startswith(problem) for p in found), found


def test_an_empty_losses_array_is_a_problem():
    recipe = load_recipe(QUICK)
    recipe["losses"] = []
    assert problems_of(recipe)[0].startswith("[[losses]]: at least one loss is needed.")


@pytest.mark.parametrize(
    ("section", "key"),
    [("generator", "input_nc"), ("generator", "output_nc"), ("discriminator", "input_nc"), ("data", "split")],
)
def test_injected_parameters_cannot_be_set(section, key):
    recipe = load_recipe(QUICK)
    recipe[section][key] = 3
    assert problems_of(recipe) == [f"{section}.{key}: set by i2i itself, remove it from the recipe."]


def test_literal_values_list_the_allowed_ones():
    recipe = load_recipe(QUICK)
    recipe["generator"]["norm"] = "bath"
    recipe["data"]["direction"] = "AtB"
    recipe["optim"]["policy"] = "exp"
    recipe["eval"]["modes"] = ["eval", "test"]
    assert problems_of(recipe) == [
        "optim.policy = 'exp': expected one of 'linear', 'step', 'cosine', 'plateau'.",
        "eval.modes = ['eval', 'test']: expected a list of one of 'eval', 'train'.",
        "data.direction = 'AtB': expected one of 'AtoB', 'BtoA'.",
        "generator.norm = 'bath': expected one of 'batch', 'instance', 'none'.",
    ]


@pytest.mark.parametrize("item", ["train.log_every=0", "data.batch_size=0", "eval.batch_size=0"])
def test_settings_that_must_be_positive_are_checked(item):
    with pytest.raises(RecipeError):
        resolve(load_recipe(QUICK, [item]), get_host())


def test_a_section_that_is_not_a_table():
    recipe = load_recipe(QUICK)
    recipe["train"] = 5
    recipe["generator"] = "unet_256"
    problems = problems_of(recipe)
    assert "[train]: expected a table." in problems
    assert 'generator: expected a table with name = "...".' in problems


def test_invalid_toml_names_the_file(tmp_path):
    path = write(tmp_path, "[generator\nname = 'unet_256'\n")
    with pytest.raises(I2IError, match=f"Recipe file {path} is not valid TOML"):
        load_recipe(path)
    with pytest.raises(I2IError, match="does not exist"):
        load_recipe(tmp_path / "missing.toml")


# -- plugin factories get validation from their signatures ---------------------------------------------


def _tiny(
    input_nc: int, output_nc: int, depth: int, act: Literal["relu", "gelu"] = "relu", gain: float = 1.0
):
    """A generator with a required parameter."""


def _open(input_nc, output_nc, **options):
    """A generator that takes anything."""


class _Generators:
    @i2i.hookimpl
    def i2i_register_generators(registry):  # noqa: N805
        registry.add("tiny", _tiny)
        registry.add("open", _open)


@pytest.fixture(scope="module")
def plugin_host() -> PluginHost:
    return PluginHost(extra_plugins=[("tiny-plugin", _Generators)], strict=False, disabled=[])


def test_a_plugin_factory_signature_drives_validation(plugin_host):
    recipe = load_recipe(QUICK)
    recipe["generator"] = {"name": "tiny", "act": "tanh", "gain": "high"}
    assert problems_of(recipe, plugin_host) == [
        "generator.act = 'tanh': expected one of 'relu', 'gelu'.",
        "generator.gain = 'high': expected a number.",
        "generator.depth: required, expected an integer.",
    ]
    recipe["generator"] = {"name": "tiny", "depth": 2}
    resolved = resolve(recipe, plugin_host)
    assert resolved["generator"] == {"name": "tiny", "depth": 2, "act": "relu", "gain": 1.0}


def test_a_factory_with_kwargs_accepts_any_key(plugin_host):
    recipe = load_recipe(QUICK)
    recipe["generator"] = {"name": "open", "anything": [1, 2], "input_nc": 1}
    assert problems_of(recipe, plugin_host) == [
        "generator.input_nc: set by i2i itself, remove it from the recipe."
    ]
    recipe["generator"] = {"name": "open", "anything": [1, 2]}
    assert resolve(recipe, plugin_host)["generator"] == {"name": "open", "anything": [1, 2]}


# -- --set overrides ---------------------------------------------------------------------------------


def test_overrides_are_parsed_as_toml_with_a_string_fallback():
    recipe = load_recipe(
        QUICK,
        [
            "train.epochs=5",
            "data.root=/x",
            "losses.l1.weight=10",
            'losses.0.mode="lsgan"',
            "optim.lr_D = 1e-4",
            "eval.modes=['eval']",
            "data.flip=false",
            "experiment.name=custom",
        ],
    )
    assert recipe["train"]["epochs"] == 5 and type(recipe["train"]["epochs"]) is int
    assert recipe["data"]["root"] == "/x"
    assert recipe["losses"][1] == {"name": "l1", "weight": 10}
    assert recipe["losses"][0]["mode"] == "lsgan"
    assert recipe["optim"]["lr_D"] == 1e-4
    assert recipe["eval"]["modes"] == ["eval"]
    assert recipe["data"]["flip"] is False
    assert recipe["experiment"]["name"] == "custom"
    resolved = resolve(recipe, get_host())
    assert resolved["losses"][1]["weight"] == 10.0
    assert resolved["train"]["max_steps"] == 0


@pytest.mark.parametrize(
    ("text", "value"),
    [("5", 5), ("1e-3", 1e-3), ("true", True), ("[1, 2]", [1, 2]), ('"5"', "5"), ("/data/x", "/data/x")],
)
def test_parse_value(text, value):
    assert parse_value(text) == value and type(parse_value(text)) is type(value)


def test_overrides_can_create_sections_and_keys():
    recipe = {"losses": [{"name": "l1"}]}
    apply_override(recipe, "train.max_steps=3")
    apply_override(recipe, "losses.l1.weight=2.5")
    assert recipe == {"train": {"max_steps": 3}, "losses": [{"name": "l1", "weight": 2.5}]}


@pytest.mark.parametrize(
    ("item", "match"),
    [
        ("losses.l3.weight=1", "no single entry 'l3' in losses. Did you mean 'l1'"),
        ("losses.7.weight=1", "no single entry '7' in losses"),
        ("losses.weight=1", "name an entry of losses first"),
        ("train.epochs", "must look like section.key=value"),
        ("epochs=5", "must look like section.key=value"),
        ("train.epochs.x=1", "train.epochs is a value, not a table"),
    ],
)
def test_bad_overrides_are_errors(item, match):
    with pytest.raises(I2IError, match=match):
        load_recipe(QUICK, [item])


def test_an_override_with_a_bad_value_is_reported_by_validation():
    recipe = load_recipe(QUICK, ["train.epochs=many"])
    assert problems_of(recipe) == ["train.epochs = 'many': expected an integer."]


# -- dumping ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [*SHIPPED, EXAMPLE], ids=lambda p: p.parent.name + "/" + p.name)
def test_dumps_round_trips_through_tomllib(path):
    resolved = resolve(load_recipe(path), get_host())
    back = tomllib.loads(dumps(resolved))

    def without_none(node):
        if isinstance(node, dict):
            return {k: without_none(v) for k, v in node.items() if v is not None}
        if isinstance(node, (list, tuple)):
            return [without_none(v) for v in node]
        return node

    assert back == without_none(resolved)
    assert "lr_D" not in back["optim"]  # None cannot be written in TOML
    assert resolve(back, get_host()) == resolved  # and it comes back as the default


# -- docs/recipes.md stays in step with the code ------------------------------------------------------


def test_the_recipes_doc_lists_every_host_setting():
    doc = (REPO / "docs" / "recipes.md").read_text(encoding="utf-8")
    for section, params in HOST_SETTINGS.items():
        part = doc.split(f"### `[{section}]`", 1)[1].split("\n### ", 1)[0]
        for key in params:
            assert f"| `{key}` |" in part, f"{section}.{key}"


def test_the_annotated_facades_recipe_in_the_doc_is_the_shipped_one():
    doc = (REPO / "docs" / "recipes.md").read_text(encoding="utf-8")
    block = doc.split("## The canonical facades recipe", 1)[1].split("```toml\n", 1)[1]
    shown = tomllib.loads(block.split("```", 1)[0])
    assert shown == tomllib.loads((REPO / "recipes" / "facades_pix2pix.toml").read_text())
