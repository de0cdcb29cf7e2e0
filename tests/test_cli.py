"""The command line: list-plugins and validate, in process and (a few times) as ``python -m i2i``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import i2i
from i2i.assembly.host import DISABLE_ENV, STRICT_ENV, set_host
from i2i.cli import DEBUG_ENV, app, main
from i2i.errors import RecipeError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
QUICK = REPO / "recipes" / "facades_quick.toml"
EXAMPLE = REPO / "examples" / "i2i-example-plugin" / "recipe.toml"

BAD = """
[data]
name = "aligned"
root = "x"

[generator]
name = "unet_256"
ngf = "x"
norm = "bath"

[discriminator]
name = "patchgun"

[[losses]]
name = "l1"
wieght = 10
"""
BAD_PROBLEMS = [
    "generator.ngf = 'x': expected an integer.",
    "generator.norm = 'bath': expected one of 'batch', 'instance', 'none'.",
    "discriminator.name = 'patchgun': Unknown discriminator 'patchgun'.",
    "losses.l1.wieght: unknown setting. Did you mean 'weight'?",
]

runner = CliRunner()


@pytest.fixture(autouse=True)
def _plain_environment(monkeypatch):
    # Wide, colourless output so that table rows and messages stay on one line.
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    # "0" rather than deleting: --debug sets it, and monkeypatch then still restores it.
    monkeypatch.setenv(DEBUG_ENV, "0")
    monkeypatch.delenv(STRICT_ENV, raising=False)
    monkeypatch.delenv(DISABLE_ENV, raising=False)


@pytest.fixture
def bad_recipe(tmp_path) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text(BAD, encoding="utf-8")
    return path


def subprocess_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (STRICT_ENV, DISABLE_ENV, DEBUG_ENV)}
    env["COLUMNS"] = "250"
    return env


def row(output: str, name: str) -> str:
    """The table line whose name column is ``name``."""
    cells = [(line, line.split("│")) for line in output.splitlines()]
    lines = [line for line, parts in cells if len(parts) > 3 and parts[2].strip() == name]
    assert lines, f"{name} is not listed:\n{output}"
    return lines[0]


# -- list-plugins ------------------------------------------------------------------------------------


def test_list_plugins_shows_components_and_their_packages():
    result = runner.invoke(app, ["list-plugins"])
    assert result.exit_code == 0, result.output
    for name in ("unet_256", "resnet_9blocks", "patchgan", "cgan", "aligned", "ssim"):
        assert f"i2i {i2i.__version__} (pix2pix-" in row(result.output, name)
    for name in ("noise_encoder_decoder", "latent_spread"):
        assert "i2i-example-plugin 0.1.0 (example)" in row(result.output, name)
    assert "U-Net with 8 downsamplings" in row(result.output, "unet_256")
    assert "failed to load" not in result.output


def test_list_plugins_json():
    result = runner.invoke(app, ["list-plugins", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["failed"] == []
    by_name = {(c["kind"], c["name"]): c for c in payload["components"]}
    assert by_name["generator", "unet_256"] | {"description": ""} == {
        "kind": "generator",
        "name": "unet_256",
        "plugin": "pix2pix-generators",
        "package": "i2i",
        "version": i2i.__version__,
        "description": "",
    }
    assert by_name["loss", "latent_spread"]["package"] == "i2i-example-plugin"
    assert by_name["generator", "noise_encoder_decoder"]["plugin"] == "example"
    kinds = {"dataset", "discriminator", "generator", "loss", "metric", "sampler", "palette", "model"}
    assert kinds == {k for k, _ in by_name}
    assert by_name["palette", "cmp_facades"]["plugin"] == "pix2pix-palettes"


class _Broken:
    """A plugin whose hook fails, as a plugin with a missing dependency would."""

    @i2i.hookimpl
    def i2i_register_generators(registry):  # noqa: N805
        registry.add("half_done", lambda input_nc, output_nc: None)
        raise RuntimeError("cannot find libfoo")


def test_list_plugins_reports_plugins_that_failed(install_host):
    install_host(("broken-plugin", _Broken))
    result = runner.invoke(app, ["list-plugins"])
    assert result.exit_code == 0, result.output
    table, _, failed = result.output.partition("Plugins that failed to load")
    assert failed, result.output
    line = row(failed, "broken-plugin")
    assert "running i2i_register_generators" in line
    assert "RuntimeError: cannot find libfoo" in line
    assert "I2I_STRICT_PLUGINS=1" in failed
    assert "unet_256" in table and "half_done" not in table  # the rest still works

    payload = json.loads(runner.invoke(app, ["list-plugins", "--json"]).output)
    assert payload["failed"] == [
        {
            "plugin": "broken-plugin",
            "package": None,
            "version": None,
            "stage": "running i2i_register_generators",
            "reason": "RuntimeError: cannot find libfoo",
        }
    ]


@pytest.fixture
def broken_distribution(tmp_path, monkeypatch):
    """An installed distribution "i2i-broken-example 0.3" whose plugin module fails to import;
    the process host is reset so that the next get_host() discovers it."""
    info = tmp_path / "i2i_broken_example-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: i2i-broken-example\nVersion: 0.3\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text(
        "[i2i]\nbroken-example = i2i_broken_example_plugin\n", encoding="utf-8"
    )
    (tmp_path / "i2i_broken_example_plugin.py").write_text(
        "import i2i_no_such_dependency\n", encoding="utf-8"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    set_host(None)
    yield
    set_host(None)


def test_a_broken_installed_distribution_is_listed_with_its_package(broken_distribution):
    payload = json.loads(runner.invoke(app, ["list-plugins", "--json"]).output)
    assert payload["failed"] == [
        {
            "plugin": "broken-example",
            "package": "i2i-broken-example",
            "version": "0.3",
            "stage": "importing i2i_broken_example_plugin",
            "reason": "ModuleNotFoundError: No module named 'i2i_no_such_dependency'",
        }
    ]


def test_strict_mode_turns_a_failure_into_an_error(broken_distribution, monkeypatch, capsys):
    result = runner.invoke(app, ["list-plugins"])
    assert "I2I_STRICT_PLUGINS=1" in result.output
    monkeypatch.setenv(STRICT_ENV, "1")
    set_host(None)
    with pytest.raises(SystemExit):
        main(["list-plugins"])
    err = capsys.readouterr().err
    assert "No module named 'i2i_no_such_dependency'" in err
    assert "strict mode" in err and "Traceback" not in err


def test_list_plugins_as_a_module_entry_point():
    proc = subprocess.run(
        [sys.executable, "-m", "i2i", "list-plugins", "--json"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)
    assert payload["failed"] == []
    packages = {c["name"]: c["package"] for c in payload["components"] if c["kind"] == "generator"}
    assert packages["unet_256"] == "i2i"
    assert packages["noise_encoder_decoder"] == "i2i-example-plugin"


# -- validate ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [QUICK, EXAMPLE], ids=["quick", "example"])
def test_validate_accepts_a_good_recipe(path):
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert f"{path} is valid." in result.output


def test_validate_show_prints_the_resolved_recipe_with_overrides():
    result = runner.invoke(
        app, ["validate", str(QUICK), "--show", "--set", "train.epochs=5", "-s", "losses.l1.weight=7"]
    )
    assert result.exit_code == 0, result.output
    shown = tomllib.loads(result.output.split(f"{QUICK} is valid.")[0])
    assert shown["generator"]["name"] == "unet_128"
    assert shown["train"]["epochs"] == 5
    assert shown["train"]["max_steps"] == 0  # defaults are filled in
    assert shown["losses"][1] == {"name": "l1", "weight": 7.0}


def test_validate_rejects_a_bad_recipe_with_every_problem(bad_recipe):
    result = runner.invoke(app, ["validate", str(bad_recipe)])
    assert result.exit_code != 0
    assert isinstance(result.exception, RecipeError)  # main() turns it into a message
    assert all(any(p.startswith(b) for p in result.exception.problems) for b in BAD_PROBLEMS)


def test_main_prints_errors_as_one_paragraph_without_traceback(bad_recipe, capsys):
    with pytest.raises(SystemExit) as caught:
        main(["validate", str(bad_recipe)])
    assert caught.value.code == 1
    captured = capsys.readouterr()
    assert captured.err.startswith(f"Error: {bad_recipe}: 4 problems:")
    for problem in BAD_PROBLEMS:
        assert problem in captured.err
    assert "Traceback" not in captured.out + captured.err
    assert captured.out == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["validate", "no/such/recipe.toml"], "Recipe file no/such/recipe.toml does not exist."),
        (["validate", str(QUICK), "--set", "train.epochs"], "must look like section.key=value"),
    ],
)
def test_main_reports_other_user_errors(args, message, capsys):
    with pytest.raises(SystemExit) as caught:
        main(args)
    assert caught.value.code == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_main_exits_0_on_success(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["validate", str(QUICK)])
    assert caught.value.code == 0
    assert "is valid" in capsys.readouterr().out


def test_debug_lets_the_exception_through(bad_recipe):
    with pytest.raises(RecipeError):
        main(["--debug", "validate", str(bad_recipe)])


def test_validate_as_a_module_entry_point_fails_cleanly(bad_recipe):
    proc = subprocess.run(
        [sys.executable, "-m", "i2i", "validate", str(bad_recipe)],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.startswith("Error: ")
    for problem in BAD_PROBLEMS:
        assert problem in proc.stderr
    assert "Traceback" not in proc.stderr
