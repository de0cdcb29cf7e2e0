"""The Python API (docs/python.md): i2i.load equals i2i translate, results not SystemExit, the docs run."""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import i2i
from i2i.cli import app

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "facades_mini"
QUICK = REPO / "recipes" / "facades_quick.toml"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> Path:
    """The quick recipe (U-Net 128, dropout, batch norm) after 2 steps: enough to be a real model."""
    out = tmp_path_factory.mktemp("api") / "runs"
    result = i2i.train(
        QUICK,
        {"train.max_steps": 2, "eval.max_items": 2, "experiment.output_dir": str(out)},
        progress=False,
    )
    assert not result.interrupted and result.step == 2
    assert result.report is not None and result.report.is_file()
    assert set(result.metrics) == {"eval", "train"} and "ssim" in result.metrics["eval"]
    return result.run_dir


def _translate_cli(run: Path, inputs: Path, out: Path, *extra: str) -> dict[str, np.ndarray]:
    result = CliRunner().invoke(app, ["translate", str(run), str(inputs), str(out), *extra])
    assert result.exit_code == 0, result.output
    return {p.name: np.asarray(Image.open(p)) for p in sorted(out.iterdir())}


def test_load_gives_the_pixels_translate_writes(quick_run, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    files = sorted(SAMPLE.joinpath("test").iterdir())[:2]
    for f in files:
        Image.open(f).save(inputs / f"{f.stem}.png")
    for extra, kwargs in (([], {}), (["--aligned", "--size", "128"], {"aligned": True, "size": 128})):
        written = _translate_cli(quick_run, inputs, tmp_path / f"out{len(extra)}", *extra)
        translator = i2i.load(quick_run, device="cpu")
        paths = sorted(inputs.iterdir())
        from_paths = translator(paths, **kwargs)  # a list in, a list out, one seed for the list
        assert len(from_paths) == len(written)
        for img, expected in zip(from_paths, written.values(), strict=True):
            assert (np.asarray(img) == expected).all()
        for path, expected in zip(paths, written.values(), strict=True):
            pil = Image.open(path)
            assert (np.asarray(translator(pil, **kwargs)) == expected).all()
            assert (translator(np.asarray(pil), **kwargs) == expected).all()
            as_tensor = torch.from_numpy(np.asarray(pil)).permute(2, 0, 1)
            y = translator(as_tensor, **kwargs)
            assert y.dtype == torch.float32 and y.shape[0] == 3
            assert ((y * 255).round().to(torch.uint8).permute(1, 2, 0).numpy() == expected).all()


def test_load_reads_an_export_and_samples(quick_run, tmp_path):
    args = ["export", str(quick_run), "--format", "safetensors", "--out-dir", str(tmp_path), "--size", "128"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    exported = i2i.load(tmp_path / "generator.safetensors", device="cpu")
    original = i2i.load(quick_run, device="cpu")
    image = Image.open(sorted(SAMPLE.joinpath("test").iterdir())[0])
    assert (np.asarray(exported(image)) == np.asarray(original(image))).all()
    # translate accepts the export too, and writes what the checkpoint gives
    inputs = tmp_path / "in"
    inputs.mkdir()
    image.save(inputs / "x.png")
    written = _translate_cli(tmp_path / "generator.safetensors", inputs, tmp_path / "o")
    assert (written["x.png"] == np.asarray(original(image))).all()
    samples = original.sample(image, 3, sampler="translate_train", seed=1)
    assert len(samples) == 3 and not (np.asarray(samples[0]) == np.asarray(samples[1])).all()
    again = original.sample(image, 3, sampler="translate_train", seed=1)
    assert all((np.asarray(a) == np.asarray(b)).all() for a, b in zip(samples, again, strict=True))
    with pytest.raises(i2i.I2IError, match="Unknown sampler 'nope'"):
        original.sample(image, 2, sampler="nope")
    with pytest.raises(i2i.I2IError, match="Cannot translate a dict"):
        original({"a": 1})


def test_api_mistakes_raise_i2i_errors_not_system_exit(tmp_path):
    with pytest.raises(i2i.RecipeError) as caught:
        i2i.train(QUICK, {"generator": {"name": "unet_265"}, "experiment.output_dir": str(tmp_path)})
    assert any("unet_256" in p for p in caught.value.problems)
    with pytest.raises(i2i.I2IError, match="does not exist"):
        i2i.evaluate(tmp_path / "missing")
    with pytest.raises(i2i.I2IError, match="--mode 'sometimes'"):
        i2i.evaluate(tmp_path, mode="sometimes")
    with pytest.raises(i2i.CheckpointError):
        i2i.load(tmp_path / "missing.pt")
    with pytest.raises(i2i.I2IError, match="section.key"):
        i2i.train(QUICK, {"train": 3})
    assert not (tmp_path / "facades_quick").exists()  # nothing was created


def test_train_takes_a_dict_recipe(tmp_path):
    import tomllib

    recipe = tomllib.loads(QUICK.read_text())
    recipe["data"]["root"] = str(SAMPLE)
    recipe["generator"]["ngf"] = 8
    recipe["discriminator"]["ndf"] = 8
    sets = ["train.max_steps=1", f"experiment.output_dir={tmp_path}"]
    result = i2i.train(recipe, sets, evaluate_after=False, progress=False)
    assert result.step == 1 and result.evaluation is None and (result.run_dir / "recipe.toml").is_file()


def test_docs_python_examples_run(quick_run, tmp_path, monkeypatch):
    """Every ```python block of docs/python.md, in order, in one namespace, from a repository-like folder."""
    text = (REPO / "docs" / "python.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 5
    for name in ("samples", "recipes"):
        os.symlink(REPO / name, tmp_path / name)
    (tmp_path / "runs").mkdir()
    os.symlink(quick_run, tmp_path / "runs" / "facades_quick")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        ast.parse(block)
        exec(compile(block, "docs/python.md", "exec"), namespace)  # noqa: S102 - our own docs
    assert (tmp_path / "runs" / "python-doc").is_dir()


def test_list_plugins_without_a_terminal_cuts_no_name():
    result = CliRunner().invoke(app, ["list-plugins"])  # CliRunner's output is not a terminal
    assert result.exit_code == 0
    assert "diversity_sensitive" in result.output and "…" not in result.output


def test_data_verify_takes_a_diversity_recipe():
    recipe = REPO / "recipes" / "facades_diversity_quick.toml"
    result = CliRunner().invoke(app, ["data", "verify", str(recipe), "--set", f"data.root={SAMPLE}"])
    assert result.exit_code == 0, result.output
    assert "train" in result.output and "test" in result.output


PUBLIC_MODULES = {"i2i"}


def _i2i_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "i2i":
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "i2i"]
    return found


def test_default_plugins_use_only_the_public_surface():
    """The default plugins import from ``i2i`` itself, as a third-party package would."""
    offenders = [
        f"{path.relative_to(REPO)}: {module}"
        for path in sorted((REPO / "plugins").rglob("*.py"))
        for module in _i2i_imports(path)
        if module not in PUBLIC_MODULES
    ]
    assert not offenders, "plugins import i2i internals:\n" + "\n".join(offenders)


def test_every_public_name_resolves_and_is_documented():
    docs = (REPO / "docs" / "plugins.md").read_text() + (REPO / "docs" / "python.md").read_text()
    undocumented = []
    for name in i2i.__all__:
        getattr(i2i, name)
        if not name.startswith("__") and not re.search(rf"\b{re.escape(name)}\b", docs):
            undocumented.append(name)
    assert not undocumented, f"public names missing from docs/plugins.md and docs/python.md: {undocumented}"
    assert callable(i2i.diversity) and i2i.diversity.__name__ == "i2i.diversity"
