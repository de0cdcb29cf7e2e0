"""Evaluation in one pass: both modes per loaded batch, eval mode batched, the size said up front.

The references below are the loop evaluation ran before: each mode alone, ``torch.manual_seed(seed)``
then a batch-of-one DataLoader, so these tests pin that reports did not change.
"""

from __future__ import annotations

import copy
import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import toy_recipe
from PIL import Image
from typer.testing import CliRunner

from i2i.assembly.build import build_dataset
from i2i.assembly.host import get_host
from i2i.assembly.recipe import load_recipe, resolve
from i2i.cli import app
from i2i.data.imaging import make_grid_image
from i2i.inference.evaluate import EVAL_MODE_BATCH, evaluate_checkpoint
from i2i.inference.loading import generator_from_checkpoint
from i2i.runs.checkpoint import load_checkpoint
from i2i.sampling import generate
from i2i.training.start import start_run

ITEMS = EVAL_MODE_BATCH + 2  # one full eval-mode batch and a short one


@pytest.fixture(scope="module", params=["unet", "unet_latent"])
def run_dir(request, tmp_path_factory) -> Path:
    """A trained run whose generator has dropout (and, for unet_latent, a latent code)."""
    tmp = tmp_path_factory.mktemp(request.param)
    path = tmp / "recipe.toml"
    toy_recipe(
        path,
        tmp / "runs",
        experiment={"name": "evaltest", "seed": 5},
        data={"load_size": 64, "crop_size": 64, "max_items": None},
        # the innermost block has dropout from six downsamplings on
        generator={"name": request.param, "num_downs": 6, "dropout": True},
        discriminator=None,
        losses=[{"name": "l1"}],
        train={"max_steps": 2, "evaluate": False},
        eval={"max_items": ITEMS},
    )
    host = get_host()
    return start_run(resolve(load_recipe(path), host), host, show_progress=False).run().run_dir


def old_loop(run: Path, mode: str, seed: int | None = None) -> list[np.ndarray]:
    """The strips the evaluation wrote before (each mode alone, batches of one), as pixel arrays."""
    state = load_checkpoint(run)
    recipe = state["recipe"]
    G = generator_from_checkpoint(state, get_host(), torch.device("cpu"))
    G = copy.deepcopy(G).train() if mode == "train" else G.eval()
    dataset = torch.utils.data.Subset(build_dataset(recipe, get_host(), "test"), range(ITEMS))
    torch.manual_seed(recipe["experiment"]["seed"] if seed is None else seed)
    strips = []
    with torch.no_grad():
        for batch in torch.utils.data.DataLoader(dataset, batch_size=1):
            fake = generate(G, batch["A"]).float()
            strips.append(np.asarray(make_grid_image([(batch["A"][0], fake[0], batch["B"][0])])))
    return strips


def strips(folder: Path) -> list[np.ndarray]:
    rows = list(csv.DictReader((folder / "per_image.csv").open()))
    return [np.asarray(Image.open(folder / "images" / f"{row['name']}.png")) for row in rows]


def test_both_modes_in_one_pass_write_what_separate_passes_wrote(run_dir, tmp_path):
    host = get_host()
    evaluate_checkpoint(
        run_dir, host, modes=["eval", "train"], out_dir=tmp_path / "both", show_progress=False
    )
    for mode in ("eval", "train"):
        evaluate_checkpoint(run_dir, host, modes=[mode], out_dir=tmp_path / "alone", show_progress=False)
        both, alone = tmp_path / "both" / mode, tmp_path / "alone" / mode
        for name in ("per_image.csv", "metrics.json", "gallery.html"):
            assert (both / name).read_bytes() == (alone / name).read_bytes(), (mode, name)
        images = sorted(p.name for p in (alone / "images").iterdir())
        assert len(images) == ITEMS and images == sorted(p.name for p in (both / "images").iterdir())
        for image in images:
            assert (both / "images" / image).read_bytes() == (alone / "images" / image).read_bytes()


def test_train_mode_equals_the_old_loop_for_the_same_seed(run_dir, tmp_path):
    evaluate_checkpoint(run_dir, get_host(), modes=["eval", "train"], out_dir=tmp_path, show_progress=False)
    written = strips(tmp_path / "train")
    for got, want in zip(written, old_loop(run_dir, "train"), strict=True):
        np.testing.assert_array_equal(got, want)
    # dropout does draw: another seed gives other outputs, so the equality above means something
    other = old_loop(run_dir, "train", seed=6)
    assert any(not np.array_equal(a, b) for a, b in zip(written, other, strict=True))


def test_batched_eval_mode_equals_batches_of_one(run_dir, tmp_path):
    [summary] = evaluate_checkpoint(
        run_dir, get_host(), modes=["eval"], out_dir=tmp_path, show_progress=False
    )
    assert summary["count"] == ITEMS
    for got, want in zip(strips(tmp_path / "eval"), old_loop(run_dir, "eval"), strict=True):
        # float rounding of a batched convolution may move a pixel by one level, never more
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


def test_the_cli_says_how_much_it_will_evaluate(run_dir, tmp_path):
    args = ["eval", str(run_dir), "--mode", "both", "--max-items", "3", "--out-dir", str(tmp_path)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Evaluating 3 images of 'test' in 2 modes (eval, train)" in result.output
    assert result.output.index("Evaluating 3 images") < result.output.index("Evaluation")
