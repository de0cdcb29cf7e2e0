"""The FCN-score: confusion-matrix scores, a segmenter trained by a recipe, and `i2i eval` with it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from i2i_pix2pix.fcn_score import confusion, scores
from typer.testing import CliRunner

from i2i.assembly.host import get_host
from i2i.assembly.recipe import load_recipe, resolve
from i2i.cli import app
from i2i.errors import I2IError
from i2i.training.start import start_run

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "facades_mini"
runner = CliRunner()


def test_a_perfect_segmentation_scores_one():
    truth = torch.tensor([[0, 0, 1, 2], [2, 2, 1, 0]])
    result = scores(confusion(truth, truth, 4))  # class 3 never occurs: left out of the means
    assert result == {"pixel_acc": 1.0, "class_acc": 1.0, "iou": 1.0}


def test_a_constant_segmentation_scores_known_values():
    truth = torch.tensor([0] * 6 + [1] * 3 + [2] * 1)
    predicted = torch.zeros_like(truth)  # everything called class 0
    result = scores(confusion(predicted, truth, 3))
    assert result["pixel_acc"] == pytest.approx(0.6)
    assert result["class_acc"] == pytest.approx(1 / 3)  # recall 1 for class 0, 0 for 1 and 2
    assert result["iou"] == pytest.approx((6 / 10) / 3)  # class 0: 6 / (6 + 4); others 0


SEGMENTER = """
[experiment]
name = "seg"
seed = 0
device = "cpu"
output_dir = "{out}"

[data]
name = "aligned"
root = "{root}"
direction = "AtoB"
target_palette = "cmp_facades"
load_size = 72
crop_size = 64
max_items = 4

[generator]
name = "unet"
num_downs = 6
ngf = 4
dropout = false
output = "logits"

[[losses]]
name = "cross_entropy"

[train]
epochs = 1
epochs_decay = 0
max_steps = 3
tensorboard = false
evaluate = false
"""

PIX2PIX = """
[experiment]
name = "p2p"
seed = 0
device = "cpu"
output_dir = "{out}"

[data]
name = "aligned"
root = "{root}"
direction = "BtoA"
load_size = 72
crop_size = 64
max_items = 4

[generator]
name = "unet"
num_downs = 6
ngf = 4

[discriminator]
name = "patchgan"
ndf = 4
n_layers = 2

[[losses]]
name = "cgan"

[[losses]]
name = "l1"

[train]
epochs = 1
epochs_decay = 0
max_steps = 2
tensorboard = false
evaluate = false

[eval]
max_items = 3
metrics = [
    "l1",
    {{ name = "fcn_pixel_acc", weights = "{weights}" }},
    {{ name = "fcn_class_acc", weights = "{run}" }},
    {{ name = "fcn_iou", weights = "{weights}" }},
]
"""


def train(text: str, tmp_path: Path, name: str, **fields: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text.format(out=tmp_path / "runs", root=SAMPLE, **fields))
    recipe = resolve(load_recipe(path), get_host(), str(path))
    return start_run(recipe, get_host(), show_progress=False).run().run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A tiny segmenter, its fp16 safetensors export (through the CLI), and a pix2pix run whose
    recipe scores with it."""
    tmp = tmp_path_factory.mktemp("fcn")
    segmenter = train(SEGMENTER, tmp, "seg")
    args = ["export", str(segmenter), "--format", "safetensors", "--half", "--size", "64"]
    result = runner.invoke(app, [*args, "--out-dir", str(tmp / "export")])
    assert result.exit_code == 0, result.output
    exported = tmp / "export" / "generator.safetensors"
    model = train(PIX2PIX, tmp, "p2p", weights=exported, run=segmenter)
    return segmenter, exported, model


def test_eval_reports_the_fcn_scores_through_the_cli(runs, tmp_path):
    _, exported, model = runs
    from safetensors import safe_open

    with safe_open(str(exported), framework="pt") as fh:  # --half stored the weights in fp16
        assert {fh.get_tensor(k).dtype for k in fh.keys() if k.endswith("weight")} == {torch.float16}
    result = runner.invoke(app, ["eval", str(model), "--mode", "eval", "--out-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "fcn_iou" in result.output
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())["metrics"]
    for key in ("fcn_pixel_acc", "fcn_class_acc", "fcn_iou"):
        assert 0.0 <= saved[key]["mean"] <= 1.0, saved


def test_a_model_that_is_not_a_segmenter_is_refused(runs):
    _, _, model = runs
    with pytest.raises(I2IError, match="target_palette"):
        get_host().registry("metric").build("fcn_iou", weights=str(model))


def test_missing_segmenter_weights_say_how_to_make_them(tmp_path):
    with pytest.raises(I2IError, match="facades_segmenter"):
        get_host().registry("metric").build("fcn_pixel_acc", weights=str(tmp_path / "nope.safetensors"))


def test_eval_takes_metrics_by_name_and_the_shipped_segmenter_works(runs, tmp_path):
    _, _, model = runs
    args = ["eval", str(model), "--mode", "eval", "--out-dir", str(tmp_path)]
    result = runner.invoke(app, [*args, "--metrics", "psnr,fcn_pixel_acc"])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())["metrics"]
    assert set(saved) == {"psnr", "fcn_pixel_acc"}  # the shipped segmenter, by default
    assert 0.0 <= saved["fcn_pixel_acc"]["mean"] <= 1.0
    result = runner.invoke(app, [*args, "--metrics", "psnr,fcn_iuo"])
    assert result.exit_code == 1
    assert "Did you mean 'fcn_iou'" in str(result.exception)
