"""Recipes that parse and type-check but make no sense are refused by ``i2i validate``.

Each case is one class of nonsense from issue 9, checked through the command line: exit 1 and a
problem naming the key and the allowed range, never an internal error (exit 3).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pytest

import i2i
from i2i.cli import main
from i2i.schema import Range

REPO = Path(__file__).resolve().parents[1]
QUICK = REPO / "recipes" / "facades_quick.toml"
DIVERSITY = REPO / "recipes" / "facades_diversity_quick.toml"


@pytest.fixture(autouse=True)
def _plain_environment(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # one problem per line, however long
    monkeypatch.delenv("I2I_DEBUG", raising=False)


def validate(capsys, *args: str) -> tuple[int, str]:
    """Run ``i2i validate ARGS``; the exit code and what it printed."""
    with pytest.raises(SystemExit) as caught:
        main(["validate", *map(str, args)])
    captured = capsys.readouterr()
    return caught.value.code, captured.out + captured.err


def rejects(capsys, recipe: Path, overrides: list[str], *fragments: str) -> str:
    args = [a for item in overrides for a in ("--set", item)]
    code, text = validate(capsys, recipe, *args)
    assert code == 1, text
    assert "Internal error" not in text and "Traceback" not in text
    flat = " ".join(text.split())
    for fragment in fragments:
        assert fragment in flat, f"{fragment!r} not in {flat!r}"
    return flat


def quick_without(tmp_path: Path, section: str) -> Path:
    """The quick recipe without one [section] (its lines up to the next header)."""
    lines, out, skipping = QUICK.read_text().splitlines(), [], False
    for line in lines:
        if line.startswith("["):
            skipping = line.strip() == f"[{section}]"
        if not skipping:
            out.append(line)
    path = tmp_path / "recipe.toml"
    path.write_text("\n".join(out) + "\n")
    return path


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (["data.load_size=0"], ["data.load_size = 0", "[1, 32768]"]),
        (["data.crop_size=-4"], ["data.crop_size = -4", "[1, 32768]"]),
        (["data.load_size=64"], ["data.crop_size = 128", "load_size (64)"]),
        (["data.preprocess='crop'", "data.crop_size=512"], ["data.crop_size = 512", "load_size (143)"]),
        (["data.preprocess='none'", "data.load_size=100"], ["data.crop_size = 128", "load_size (100)"]),
        (["data.preprocess='scale_width'", "data.load_size=64"], ["data.crop_size = 128", "load_size"]),
        (["generator.ngf=0"], ["generator.ngf = 0", "[1, 512]"]),
        (["discriminator.ndf=-3"], ["discriminator.ndf = -3", "[1, 512]"]),
        (["discriminator.n_layers=0"], ["discriminator.n_layers = 0", "[1, 12]"]),
        (["discriminator.n_layers=1000"], ["discriminator.n_layers = 1000", "[1, 12]"]),
        (["discriminator.n_layers=6"], ["discriminator.n_layers = 6", "at most 5", "128x128"]),
        (["generator.name='unet'", "generator.num_downs=4"], ["generator.num_downs = 4", "[5, 16]"]),
        (["generator.name='unet'", "generator.num_downs=8"], ["generator.num_downs = 8", "5 to 7"]),
        (["generator.name='unet_256'"], ["generator.name = 'unet_256'", "multiple of 256"]),
        (["generator.name='unet'", "data.crop_size=100", "data.load_size=100"], ["multiple of 32"]),
        (["generator.name='resnet'", "data.crop_size=126"], ["multiple of 4"]),
        (["optim.lr=nan"], ["optim.lr = nan", "[0, inf)"]),
        (["optim.lr=inf"], ["optim.lr = inf", "[0, inf)"]),
        (["optim.lr=-0.1"], ["optim.lr = -0.1", "[0, inf)"]),
        (["optim.lr_D=nan"], ["optim.lr_D = nan"]),
        (["optim.beta1=1.0"], ["optim.beta1 = 1.0", "[0, 1)"]),
        (["optim.beta2=-0.5"], ["optim.beta2 = -0.5", "[0, 1)"]),
        (["optim.policy='plateau'", "optim.gamma=1.5"], ["optim.gamma = 1.5", "(0, 1)"]),
        (["losses.l1.weight=-100"], ["losses.l1.weight = -100", "[0, inf)"]),
        (["losses.cgan.weight=nan"], ["losses.cgan.weight = nan"]),
        (["experiment.seed=-1"], ["experiment.seed = -1", "[0, 18446744073709551614]"]),
        (["experiment.seed=18446744073709551615"], ["experiment.seed", "[0, 18446744073709551614]"]),
        (["experiment.device='meta'"], ["experiment.device = 'meta'", "cpu"]),
        (["experiment.device='cuda:x'"], ["experiment.device = 'cuda:x'"]),
        (["train.init_gain=nan"], ["train.init_gain = nan"]),
        (["eval.modes=[]"], ["eval.modes = []", "at least 1"]),
        (["train.checkpoint_minutes=nan"], ["train.checkpoint_minutes = nan", "[0, inf)"]),
        (["train.checkpoint_minutes=-1"], ["train.checkpoint_minutes = -1"]),
        (["train.epochs=99999999999999999999999"], ["train.epochs", "[0, "]),
        (["experiment.name='..'"], ["experiment.name = '..'", "output_dir"]),
        (["experiment.name='.'"], ["experiment.name = '.'"]),
        (["experiment.name=''"], ["experiment.name = ''"]),
        (["experiment.name='/tmp/evil'"], ["experiment.name = '/tmp/evil'"]),
        (["experiment.name='a/../../b'"], ["experiment.name = 'a/../../b'"]),
        (["experiment.name='a\\\\b'"], ["experiment.name"]),
        (['experiment.name="a\\u0000b"'], ["experiment.name"]),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_nonsense_values_are_refused_with_key_and_range(capsys, overrides, fragments):
    rejects(capsys, QUICK, overrides, *fragments)


def test_the_inference_only_dataset_cannot_train(capsys, tmp_path):
    path = tmp_path / "single.toml"
    text = QUICK.read_text().replace('name = "aligned"', 'name = "single"')
    path.write_text(text.replace('direction = "BtoA"\n', "").replace("flip = true\n", ""))
    rejects(capsys, path, [], "data.name = 'single'", "inference")


def test_an_adversarial_loss_needs_a_discriminator(capsys, tmp_path):
    path = quick_without(tmp_path, "discriminator")
    rejects(capsys, path, [], "losses.cgan", "[discriminator]", "patchgan")


def test_a_loss_may_declare_that_negative_weights_are_fine(capsys, tmp_path, install_host):
    """Range metadata on a loss factory's weight replaces the default 'at least 0'."""

    def bonus(weight: Annotated[float, Range(-10, 10)] = -1.0) -> i2i.Loss:
        """A reward term: its weight is meant to be negative."""
        return i2i.Loss(weight)

    class Plugin:
        @i2i.hookimpl
        def i2i_register_losses(registry):  # noqa: N805
            registry.add("bonus", bonus)

    install_host(("bonus-plugin", Plugin))
    recipe = tmp_path / "r.toml"
    recipe.write_text(QUICK.read_text() + '\n[[losses]]\nname = "bonus"\nweight = -5.0\n')
    code, text = validate(capsys, recipe)
    assert code == 0, text
    rejects(capsys, recipe, ["losses.bonus.weight=-11"], "losses.bonus.weight = -11", "[-10, 10]")


def test_shipped_values_at_the_edges_are_still_accepted(capsys):
    code, text = validate(
        capsys,
        QUICK,
        "--set",
        "optim.beta1=0",
        "--set",
        "experiment.seed=18446744073709551614",
        "--set",
        "optim.lr=0",
        "--set",
        "data.preprocess='crop'",
        "--set",
        "data.load_size=128",
        "--set",
        "experiment.device='cpu'",
        "--set",
        "experiment.name='run.v2-final'",
    )
    assert code == 0, text


def test_deeply_nested_toml_is_a_recipe_error(capsys, tmp_path):
    path = tmp_path / "deep.toml"
    path.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    code, text = validate(capsys, path)
    assert code == 1 and str(path) in text and "nested" in text, text


def test_huge_integers_are_a_recipe_error(capsys, tmp_path):
    path = tmp_path / "big.toml"
    path.write_text(QUICK.read_text().replace("seed = 0", "seed = " + "9" * 5000))
    code, text = validate(capsys, path)
    assert code == 1 and str(path) in text and "digits" in text, text
    code, text = validate(capsys, QUICK, "--set", "train.epochs=" + "9" * 5000)
    assert code == 1 and "train.epochs" in text and "digits" in text, text


def test_diversity_variants_get_the_same_checks(capsys, tmp_path):
    text = DIVERSITY.read_text()
    path = tmp_path / "div.toml"
    variant = '[[diversity.variants]]\nname = "bad"\nsamplers = ["deterministic"]\n'
    path.write_text(f"{text}\n{variant}[diversity.variants.optim]\nbeta1 = 1.5\n")
    rejects(capsys, path, [], "variant bad", "optim.beta1 = 1.5", "[0, 1)")


@pytest.mark.parametrize("device", ["cuda", "cuda:7", "mps", "cuda:one-past-the-last"])
def test_a_device_missing_here_is_a_clear_error_when_the_run_starts(capsys, tmp_path, device):
    """Each device is refused where this machine lacks it; on a GPU machine "cuda" exists, and the
    GPU after its last one is the device that is missing everywhere."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device == "cuda:one-past-the-last":
        device = f"cuda:{gpus}"
    elif device.startswith("cuda") and gpus > (torch.device(device).index or 0):
        pytest.skip(f"this machine has {device}")
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has that device")
    with pytest.raises(SystemExit) as caught:
        main(
            [
                "run",
                str(QUICK),
                "--set",
                f"experiment.device='{device}'",
                "--set",
                f"experiment.output_dir='{tmp_path}'",
                "--no-progress",
            ]
        )
    text = capsys.readouterr().err
    assert caught.value.code == 1, text
    assert f"experiment.device = '{device}'" in " ".join(text.split()) and "Internal" not in text
