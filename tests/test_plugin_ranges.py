"""The default plugins declare the ranges of their settings, so ``i2i validate`` refuses a value out
of range naming the key, instead of the factory refusing it when ``i2i run`` builds the component."""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from typer.testing import CliRunner

from i2i.cli import app
from i2i.errors import RecipeError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
QUICK = REPO / "recipes" / "facades_quick.toml"
runner = CliRunner()


def recipe(tmp_path: Path, loss: dict[str, Any] | None = None, metric: dict | None = None) -> Path:
    """The quick recipe with a latent U-Net, cgan and ``loss``, and ``metric`` in eval.metrics."""
    table = tomllib.loads(QUICK.read_text())
    table["generator"] = {"name": "unet_z_all", "num_downs": 7, "ngf": 8, "nz": 8}
    table["losses"] = [{"name": "cgan"}, *([copy.deepcopy(loss)] if loss else [])]
    if metric is not None:
        table.setdefault("eval", {})["metrics"] = ["l1", metric]
    path = tmp_path / "recipe.toml"
    path.write_text(tomli_w.dumps(table))
    return path


def validate(path: Path):
    return runner.invoke(app, ["validate", str(path)])


@pytest.mark.parametrize(
    ("loss", "key", "value", "problem"),
    [
        ("bicyclegan", "lambda_kl", -1.0, "allowed range [0, inf)"),
        ("bicyclegan", "lambda_l1", -10.0, "allowed range [0, inf)"),
        ("bicyclegan", "lambda_z", -0.5, "allowed range [0, inf)"),
        ("bicyclegan", "lambda_z", math.inf, "allowed range [0, inf)"),
        ("bicyclegan", "nef", 0, "allowed range [1, 512]"),
        ("bicyclegan", "n_layers", 0, "allowed range [1, 12]"),
        ("mode_seeking", "eps", 0.0, "allowed range (0, inf)"),
        ("diversity_sensitive", "eps", -1e-5, "allowed range [0, inf)"),
        ("diversity_sensitive", "tau", 0.0, "must be greater than 0"),
        ("diversity_sensitive", "tau", -1.0, "must be greater than 0"),
        ("diversity_sensitive", "tau", math.nan, "not a number (NaN)"),
        ("cross_entropy", "class_weights", [1.0, -1.0], "must be finite numbers >= 0"),
        ("cross_entropy", "class_weights", [0.0, 0.0], "not all 0"),
    ],
)
def test_validate_refuses_a_loss_setting_out_of_range_naming_the_key(tmp_path, loss, key, value, problem):
    result = validate(recipe(tmp_path, {"name": loss, key: value}))
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, RecipeError), result.exception  # i2i's main(): exit 1
    prefix = f"losses.{loss}.{key} = {value!r}: "
    assert any(p.startswith(prefix) and problem in p for p in result.exception.problems), (
        result.exception.problems
    )


@pytest.mark.parametrize(
    ("metric", "problem"),
    [
        ({"name": "fid", "batch_size": 0}, "eval.metrics.1.batch_size = 0: allowed range [1, inf)"),
        ({"name": "ssim", "win_size": 1}, "eval.metrics.1.win_size = 1: allowed range [3, inf)"),
    ],
)
def test_validate_refuses_a_metric_setting_out_of_range_naming_the_key(tmp_path, metric, problem):
    result = validate(recipe(tmp_path, metric=metric))
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, RecipeError), result.exception
    assert any(p.startswith(problem) for p in result.exception.problems), result.exception.problems


@pytest.mark.parametrize(
    "loss",
    [
        {"name": "bicyclegan", "lambda_l1": 0.0, "lambda_kl": 0.0, "lambda_z": 0.0, "nef": 1, "n_layers": 1},
        {"name": "mode_seeking", "eps": 1e-8},
        {"name": "diversity_sensitive", "tau": math.inf, "eps": 0.0},  # inf turns the clamp off
        {"name": "cross_entropy", "class_weights": [0.0, 2.5, 1.0]},
    ],
    ids=lambda v: v["name"],
)
def test_validate_accepts_the_edges_of_the_ranges(tmp_path, loss):
    result = validate(recipe(tmp_path, loss))
    assert result.exit_code == 0, result.output
