"""The training step as a plugin (the `model` kind): pix2pix through it is the pix2pix of before."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: The quick recipe's first three steps, as logged by the trainer before the step became a model
#: plugin (float.hex of each value; one CPU thread, so the sums are reduced in one order).
BEFORE_MODEL_KIND = [
    {
        "D_real": "0x1.cd1a660000000p-1",
        "D_fake": "0x1.67bfbc0000000p-1",
        "D_total": "0x1.9a6d100000000p-1",
        "G_cgan": "0x1.04d7240000000p+0",
        "G_l1": "0x1.45fa400000000p-2",
        "G_total": "0x1.06d23c0000000p+5",
    },
    {
        "D_real": "0x1.a4de7e0000000p-1",
        "D_fake": "0x1.7c632a0000000p-1",
        "D_total": "0x1.90a0d40000000p-1",
        "G_cgan": "0x1.9ab5d80000000p-1",
        "G_l1": "0x1.03389a0000000p-1",
        "G_total": "0x1.9b73480000000p+5",
    },
    {
        "D_real": "0x1.9588440000000p-1",
        "D_fake": "0x1.7a44f00000000p-1",
        "D_total": "0x1.87e69a0000000p-1",
        "G_cgan": "0x1.9ac4440000000p-1",
        "G_l1": "0x1.0c03180000000p-1",
        "G_total": "0x1.a92fe80000000p+5",
    },
]

_RUN = """
import json, sys, torch
torch.set_num_threads(1)
import i2i
r = i2i.train("recipes/facades_quick.toml", {"train.max_steps": 3, "train.log_every": 1,
    "train.evaluate": False, "train.tensorboard": False, "train.sample_every": 0,
    "experiment.output_dir": sys.argv[1]}, progress=False)
for line in open(r.run_dir / "log.jsonl"):
    values = json.loads(line)
    print(json.dumps({k: float(v).hex() for k, v in values.items() if k[:2] in ("D_", "G_")}))
"""


def quick_losses(out: Path) -> list[dict[str, str]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", _RUN, str(out)], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def test_pix2pix_losses_are_bit_identical_to_before_the_model_kind(tmp_path):
    assert quick_losses(tmp_path) == BEFORE_MODEL_KIND


# -- unpaired models and a third party's --------------------------------------------------------
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from conftest import toy_recipe  # noqa: E402
from PIL import Image  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

import i2i  # noqa: E402
from i2i.cli import app  # noqa: E402
from i2i.reports.run_report import read_log  # noqa: E402
from i2i.runs.checkpoint import load_checkpoint  # noqa: E402

SAMPLE = REPO / "samples" / "facades_mini"
RESNET = {"name": "resnet", "n_blocks": 1, "ngf": 8, "norm": "instance", "num_downs": None}
UNPAIRED = {"name": "unpaired_aligned", "max_items": 4}


def unpaired_recipe(tmp_path: Path, model: dict, name: str = "u", **changes) -> Path:
    """The toy recipe, unpaired: the facades sample's halves shuffled apart, a small ResNet."""
    sections = {
        "experiment": {"name": name, "seed": 1},
        "model": model,
        "data": UNPAIRED,
        "generator": RESNET,
        "discriminator": {"name": "patchgan", "ndf": 8, "n_layers": 2, "norm": "instance"},
        "losses": None,
        "train": {"evaluate": False, "sample_every": 0, "epochs": 2},
        **changes,
    }
    return toy_recipe(tmp_path / f"{name}.toml", tmp_path / "runs", **sections)


def run(*args: str) -> str:
    result = CliRunner().invoke(app, [*args])
    assert result.exit_code == 0, result.output
    return result.output


def logged(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "time"} for r in read_log(run_dir / "log.jsonl")]


@pytest.mark.parametrize(
    "model", [{"name": "cyclegan", "pool_size": 2}, {"name": "cut", "num_patches": 16}, {"name": "fastcut"}]
)
def test_unpaired_models_resume_to_the_losses_of_an_uninterrupted_run(tmp_path, model):
    recipe = unpaired_recipe(tmp_path, model)
    run("run", str(recipe), "--no-progress", "--set", "experiment.name=full", "--set", "train.max_steps=6")
    run("run", str(recipe), "--no-progress", "--set", "experiment.name=cut", "--set", "train.max_steps=3")
    resumed = tmp_path / "runs" / "cut"
    run("run", "--resume", str(resumed), "--no-progress", "--set", "train.max_steps=6")
    full = logged(tmp_path / "runs" / "full")
    assert len(full) == 6 and "G_total" in full[0]
    assert logged(resumed) == full  # pools, the MLP head, RNG and optimisers all come back
    if model["name"] == "cyclegan":
        terms = {"G_A", "G_B", "cycle_A", "cycle_B", "idt_A", "idt_B", "D_A", "D_B", "lr_G", "lr_D"}
        assert terms <= set(full[0])
        state = load_checkpoint(resumed / "checkpoints" / "latest.pt")
        assert state["io_BtoA"] == {"input_nc": 3, "output_nc": 3} and len(state["pools"]["A"]["images"]) == 2


def test_cyclegan_translates_exports_and_serves_both_ways(tmp_path):
    recipe = unpaired_recipe(tmp_path, {"name": "cyclegan"}, eval={"max_items": 2})
    run("run", str(recipe), "--no-progress", "--set", "train.max_steps=2", "--set", "train.evaluate=true")
    run_dir = tmp_path / "runs" / "u"
    inputs = sorted((SAMPLE / "test").iterdir())[:1]
    outputs = {}
    for direction in ("AtoB", "BtoA"):
        out = tmp_path / direction
        run("translate", str(run_dir), str(SAMPLE / "test"), str(out), "--aligned", "--direction", direction)
        outputs[direction] = np.asarray(Image.open(out / f"{inputs[0].stem}.png"))
        translator = i2i.load(run_dir, device="cpu", direction=direction)
        assert (np.asarray(translator(inputs[0], aligned=True)) == outputs[direction]).all()
        run(
            "export",
            str(run_dir),
            "--format",
            "safetensors",
            "--out-dir",
            str(tmp_path / "x"),
            "--size",
            "32",
            "--direction",
            direction,
        )
    assert not (outputs["AtoB"] == outputs["BtoA"]).all()  # two generators, two answers
    exported = i2i.load(tmp_path / "x" / "generator_BtoA.safetensors", device="cpu")
    assert (np.asarray(exported(inputs[0], aligned=True)) == outputs["BtoA"]).all()
    from i2i.serve.model import ServedModel

    served = ServedModel(run_dir, i2i.get_host(), direction="BtoA", size=0)
    answer = served.answer_file(inputs[0])
    assert answer.outputs[0].shape == (256, 512, 3)
    with pytest.raises(i2i.CheckpointError, match="translates A to B only"):
        pix2pix = toy_recipe(
            tmp_path / "p.toml",
            tmp_path / "runs",
            experiment={"name": "p"},
            train={"evaluate": False, "sample_every": 0},
        )
        run("run", str(pix2pix), "--no-progress", "--set", "train.max_steps=1")
        i2i.load(tmp_path / "runs" / "p", direction="BtoA")


def test_cyclegan_trains_on_two_processes(tmp_path):
    recipe = unpaired_recipe(tmp_path, {"name": "cyclegan", "pool_size": 0})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "i2i",
        "run",
        str(recipe),
        "--no-progress",
        "--nproc",
        "2",
        "--set",
        "train.max_steps=2",
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 processes" in done.stderr
    assert len(logged(tmp_path / "runs" / "u")) == 2


def test_a_third_party_model_trains_through_the_public_api(tmp_path):
    """The example plugin (a separate package) registers a model of its own: G alone on L1."""
    if "regression" not in i2i.get_host().registry("model"):
        pytest.skip("the example plugin is not installed (tools/test.sh installs it)")
    recipe = toy_recipe(
        tmp_path / "r.toml",
        tmp_path / "runs",
        experiment={"name": "r"},
        model={"name": "regression", "distance": "l2"},
        losses=None,
        discriminator=None,
        train={"evaluate": True, "sample_every": 0},
        eval={"max_items": 2},
    )
    out = run("run", str(recipe), "--no-progress", "--set", "train.max_steps=3")
    assert "psnr" in out
    assert [set(r) >= {"G_l2", "lr_G"} for r in logged(tmp_path / "runs" / "r")] == [True] * 3
    run("translate", str(tmp_path / "runs" / "r"), str(SAMPLE / "test"), str(tmp_path / "o"), "--aligned")


@pytest.mark.parametrize(
    ("model", "extra", "expected"),
    [
        ({"name": "cyclegann"}, {}, "model.name = 'cyclegann'"),
        ({"name": "cyclegan", "lambda_A": -1.0}, {}, "model.lambda_A"),
        ({"name": "cyclegan", "gan_mode": "wgan"}, {}, "model.gan_mode"),
        ({"name": "cut", "num_patches": 0}, {}, "model.num_patches"),
        ({"name": "cyclegan"}, {"losses": [{"name": "l1"}]}, "[[losses]]: the model 'cyclegan' has its own"),
        ({"name": "cyclegan"}, {"discriminator": None}, "[discriminator]: missing; the model 'cyclegan'"),
    ],
)
def test_mistakes_in_a_model_section_name_the_key(tmp_path, model, extra, expected):
    recipe = unpaired_recipe(tmp_path, model, **extra)
    result = CliRunner().invoke(app, ["validate", str(recipe)])
    assert result.exit_code == 1 and isinstance(result.exception, i2i.RecipeError), result.output
    assert expected in str(result.exception)


def test_a_killed_cyclegan_run_resumes_to_the_losses_of_an_uninterrupted_one(tmp_path):
    """SIGKILL mid-run (no handler runs): the resume from the last latest.pt, image pools and all,
    ends with the log of a run that was never killed."""
    import signal
    import time

    recipe = unpaired_recipe(tmp_path, {"name": "cyclegan", "pool_size": 3})
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    sets = [
        "--set",
        "train.epochs=3",
        "--set",
        "train.epochs_decay=1",
        "--set",
        "train.checkpoint_minutes=0.002",
    ]
    base = [sys.executable, "-m", "i2i", "run", "--no-progress"]
    ref = subprocess.run(
        [*base, str(recipe), *sets, "--set", "experiment.name=ref"], env=env, capture_output=True
    )
    assert ref.returncode == 0, ref.stderr[-2000:]
    run_dir = tmp_path / "runs" / "u"
    proc = subprocess.Popen(
        [*base, str(recipe), *sets], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and len(_lines(run_dir / "log.jsonl")) < 7:
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    done = subprocess.run([*base, "--resume", str(run_dir)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    got, want = logged(run_dir), logged(tmp_path / "runs" / "ref")
    assert [r["step"] for r in got] == list(range(1, 17)) == [r["step"] for r in want]
    for g, w in zip(got, want, strict=True):
        assert g == pytest.approx(w, rel=1e-6, abs=1e-7), g["step"]


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []
