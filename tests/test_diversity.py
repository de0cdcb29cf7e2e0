"""The diversity experiment: measures, samplers, trainable loss networks, and the CLI end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from i2i.assembly.host import get_host
from i2i.assembly.recipe import load_recipe, resolve
from i2i.cli import app
from i2i.diversity.config import load_experiment
from i2i.diversity.measures import diversity_of, pairwise_measures, pixel_std, quality_of, real_reference
from i2i.errors import I2IError, RecipeError
from i2i.reports.run_report import read_log
from i2i.runs.checkpoint import load_checkpoint
from i2i.training.start import start_run

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "facades_mini"
runner = CliRunner()

# Tiny networks at 64x64 (num_downs 6 is the smallest U-Net with a dropout level).
TOY = """
[experiment]
name = "toy"
seed = 0
device = "cpu"
output_dir = "{out}"

[data]
name = "aligned"
root = "{root}"
direction = "BtoA"
load_size = 72
crop_size = 64
max_items = 6

[generator]
name = "unet"
num_downs = 6
ngf = 4
dropout = true

[discriminator]
name = "patchgan"
ndf = 4
n_layers = 2

[[losses]]
name = "cgan"

[[losses]]
name = "l1"
weight = 100.0

[train]
epochs = 1
epochs_decay = 0
max_steps = 2
log_every = 1
tensorboard = false

[diversity]
inputs = 3
samples = 3
figure_inputs = 2
quality = ["l1", "psnr", "ssim", "fcn_iou"]

[[diversity.variants]]
name = "pix2pix"
samplers = ["dropout_train", "dropout_eval", "deterministic"]

[[diversity.variants]]
name = "z_all_ms"
label = "z at every block + mode seeking"
samplers = ["latent_eval"]
generator = {{ name = "unet_z_all", num_downs = 6, ngf = 4, nz = 4 }}
add_losses = [{{ name = "mode_seeking" }}]

[[diversity.variants]]
name = "bicycle"
samplers = ["latent_eval", "latent_train"]
generator = {{ name = "unet_z_all", num_downs = 6, ngf = 4, nz = 4 }}
losses = [{{ name = "cgan", mode = "lsgan" }}, {{ name = "bicyclegan", nef = 4, n_layers = 3 }}]
"""


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    path = tmp_path / "toy.toml"
    path.write_text(TOY.format(out=tmp_path / "runs", root=SAMPLE))
    return path


def metrics(*names: str):
    host = get_host()
    return {n: host.registry("metric").build(n) for n in names}


# -- measures on constructed images ----------------------------------------------------------------


def test_identical_samples_have_zero_diversity():
    measures = pairwise_measures(metrics("l1", "ssim"))
    samples = torch.rand(1, 3, 16, 16).repeat(5, 1, 1, 1)
    assert diversity_of(samples, measures) == pytest.approx({"l1": 0.0, "1-ssim": 0.0, "std": 0.0}, abs=1e-9)


def test_known_pairs_give_known_distances():
    measures = pairwise_measures(metrics("l1"))
    # Constant images 0.2, 0.6, 0.2, 0.6: every consecutive pair differs by 0.4; the per-pixel
    # population std of {0.2, 0.6, 0.2, 0.6} is 0.2.
    values = torch.tensor([0.2, 0.6, 0.2, 0.6])
    samples = values[:, None, None, None].expand(4, 3, 8, 8)
    result = diversity_of(samples, measures)
    assert result["l1"] == pytest.approx(0.4)
    assert result["std"] == pytest.approx(0.2)
    # Only consecutive pairs count: 0, 0, 1 → distances 0 and 1 → mean 0.5.
    steps = torch.tensor([0.0, 0.0, 1.0])[:, None, None, None].expand(3, 1, 4, 4)
    assert diversity_of(steps, measures)["l1"] == pytest.approx(0.5)
    assert pixel_std(steps) == pytest.approx(torch.tensor([0.0, 0.0, 1.0]).std(unbiased=False).item())


def test_quality_averages_over_samples():
    target = torch.full((3, 8, 8), 0.5)
    samples = torch.stack([torch.full((3, 8, 8), v) for v in (0.5, 0.7)])
    q = quality_of(samples, target, metrics("l1", "psnr"))
    assert q["l1"] == pytest.approx(0.1)
    assert q["psnr"] == float("inf")  # one perfect sample: the mean stays inf, not nan


def test_real_pairs_are_always_two_different_images():
    # Every target is a different constant, so a pair of one image with itself would score 0.
    targets = torch.linspace(0, 1, 7)[:, None, None, None].expand(7, 1, 8, 8).contiguous()
    measures = pairwise_measures(metrics("l1"))
    ref = real_reference(targets, measures, pairs=500, group=3, groups=20, seed=1)
    distances = measures[0].distances  # recompute the smallest possible distance
    assert min(distances(targets[:1], targets[1:2])) == pytest.approx(1 / 6)
    assert ref["values"]["l1"] >= 1 / 6
    assert ref["pairs"] == 500 and ref["group_size"] == 3 and ref["images"] == 7
    # The same seed gives the same reference; the real targets measured as "samples" of a method
    # give a ratio of about 1 against it.
    assert real_reference(targets, measures, pairs=500, group=3, groups=20, seed=1) == ref
    as_samples = diversity_of(targets, measures)["std"] / ref["values"]["std"]
    assert 0.7 < as_samples < 1.4


def test_a_metric_that_is_not_a_distance_is_refused():
    with pytest.raises(I2IError, match="psnr"):
        pairwise_measures(metrics("psnr"))


# -- samplers ----------------------------------------------------------------------------------------


def build(kind: str, name: str, **params):
    return get_host().registry(kind).build(name, **params)


def test_samplers_set_the_network_up_without_changing_the_model():
    G = build("generator", "unet", input_nc=3, output_nc=3, num_downs=6, ngf=4, dropout=True).eval()
    before = {k: v.clone() for k, v in G.state_dict().items()}
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    for name, bn_training in (("dropout_train", True), ("dropout_eval", False)):
        sampler = build("sampler", name)
        sampler.check(G)
        net = sampler.prepare(G)
        bn = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        drop = [m for m in net.modules() if isinstance(m, torch.nn.Dropout)]
        assert drop and all(m.training for m in drop)
        assert all(m.training == bn_training for m in bn)
        with torch.no_grad():
            a, b = sampler.sample(net, x), sampler.sample(net, x)
        assert not torch.equal(a, b)  # dropout masks differ between draws
    assert not G.training
    assert all(torch.equal(before[k], v) for k, v in G.state_dict().items())
    with torch.no_grad():
        det = build("sampler", "deterministic")
        net = det.prepare(G)
        assert torch.equal(det.sample(net, x), det.sample(net, x))


def test_samplers_refuse_generators_they_cannot_diversify():
    plain = build("generator", "unet", input_nc=3, output_nc=3, num_downs=6, ngf=4, dropout=False)
    with pytest.raises(I2IError, match="dropout layers"):
        build("sampler", "dropout_train").check(plain)
    with pytest.raises(I2IError, match="latent code"):
        build("sampler", "latent_eval").check(plain)


# -- trainable loss networks: BicycleGAN's encoder -------------------------------------------------


def variant_recipe(toy: Path, name: str, *overrides: str):
    experiment = load_experiment(toy, get_host(), list(overrides))
    return next(v.recipe for v in experiment.variants if v.name == name)


def test_encoder_is_trained_saved_and_restored_exactly_on_resume(toy, tmp_path):
    def run(recipe, resume=None, stop_at=None):
        trainer = start_run(recipe, get_host(), resume_dir=resume, show_progress=False)
        if stop_at is not None:
            step = trainer.train_step

            def wrapped(batch):
                logs = step(batch)
                if trainer.step + 1 >= stop_at:
                    trainer._signal_seen = True
                return logs

            trainer.train_step = wrapped
        return trainer, trainer.run()

    full_recipe = variant_recipe(
        toy, "bicycle", "train.max_steps=4", f"experiment.output_dir={tmp_path / 'a'}"
    )
    trainer, full = run(full_recipe)
    [(_, loss)] = [(n, lo) for n, lo in trainer.model.losses if n == "bicyclegan"]
    assert "L" in trainer.optimised  # the encoder has its own optimiser, stepped with G's
    state = load_checkpoint(full.run_dir)
    saved = state["losses"][1]
    assert any(k.startswith("encoder.") for k in saved) and "opt_L" in state
    fresh = variant_recipe(toy, "bicycle", f"experiment.output_dir={tmp_path / 'b'}")
    untrained = start_run(fresh, get_host(), show_progress=False).model.losses[1][1]
    changed = [k for k, v in untrained.state_dict().items() if not torch.equal(v, saved[k])]
    assert changed  # the encoder's weights moved away from their initial values

    part_recipe = variant_recipe(
        toy, "bicycle", "train.max_steps=4", f"experiment.output_dir={tmp_path / 'c'}"
    )
    _, stopped = run(part_recipe, stop_at=2)
    assert stopped.interrupted and stopped.step == 2
    resumed_trainer, resumed = run(part_recipe, resume=stopped.run_dir)
    assert resumed.step == 4
    for key, value in resumed_trainer.model.losses[1][1].state_dict().items():
        assert torch.equal(value, loss.state_dict()[key]), key
    keys = ["step", "bicycle_l1", "bicycle_kl", "bicycle_z", "D_enc_fake", "G_total"]
    expected = [[r[k] for k in keys] for r in read_log(full.run_dir / "log.jsonl")]
    got = [[r[k] for k in keys] for r in read_log(stopped.run_dir / "log.jsonl")]
    assert got == expected


# -- recipes ---------------------------------------------------------------------------------------


def test_variants_merge_over_the_base_recipe(toy):
    experiment = load_experiment(toy, get_host())
    by_name = {v.name: v for v in experiment.variants}
    assert [e["name"] for e in by_name["pix2pix"].recipe["losses"]] == ["cgan", "l1"]
    assert [e["name"] for e in by_name["z_all_ms"].recipe["losses"]] == ["cgan", "l1", "mode_seeking"]
    assert [e["name"] for e in by_name["bicycle"].recipe["losses"]] == ["cgan", "bicyclegan"]
    assert by_name["z_all_ms"].recipe["generator"]["name"] == "unet_z_all"
    assert "dropout" in by_name["pix2pix"].recipe["generator"]
    assert by_name["bicycle"].recipe["data"] == experiment.base["data"]
    assert Path(by_name["bicycle"].recipe["experiment"]["output_dir"]) == experiment.root / "variants"


def test_bad_experiments_are_reported_at_once(toy):
    text = toy.read_text().replace('samplers = ["latent_eval"]', 'samplers = ["latent_evl"]')
    text = text.replace('name = "bicycle"', 'name = "bicycle"\ndata = { load_size = 80 }')
    text = text.replace("inputs = 3", "inputs = 0")
    toy.write_text(text)
    with pytest.raises(RecipeError) as info:
        load_experiment(toy, get_host())
    message = str(info.value)
    assert "Did you mean 'latent_eval'" in message
    assert "diversity.variants.bicycle.data" in message and "share [data]" in message
    assert "diversity.inputs = 0" in message


def test_run_and_diversity_point_at_each_other(toy, tmp_path):
    with pytest.raises(RecipeError, match="i2i diversity"):
        resolve(load_recipe(toy), get_host(), str(toy))
    plain = tmp_path / "plain.toml"
    plain.write_text(toy.read_text().split("[diversity]")[0])
    result = runner.invoke(app, ["diversity", str(plain)])
    assert result.exit_code == 1
    assert "i2i run" in str(result.exception)


# -- the experiment end to end, through the CLI ----------------------------------------------------


def test_experiment_end_to_end_and_resume(toy, tmp_path):
    result = runner.invoke(app, ["validate", str(toy)])
    assert result.exit_code == 0 and "diversity experiment (pix2pix, z_all_ms, bicycle)" in result.output
    result = runner.invoke(app, ["diversity", str(toy), "--no-progress", "--set", "train.max_steps=1"])
    assert result.exit_code == 0, result.output
    root = tmp_path / "runs" / "toy"
    payload = json.loads((root / "diversity.json").read_text())
    rows = {(r["variant"], r["sampler"]): r for r in payload["rows"]}
    assert set(rows) == {
        ("pix2pix", "dropout_train"),
        ("pix2pix", "dropout_eval"),
        ("pix2pix", "deterministic"),
        ("z_all_ms", "latent_eval"),
        ("bicycle", "latent_eval"),
        ("bicycle", "latent_train"),
    }
    assert rows["pix2pix", "deterministic"]["div_l1"] == 0.0
    assert rows["pix2pix", "dropout_train"]["div_l1"] > 0
    assert all(r["step"] == 1 for r in rows.values())
    assert payload["protocol"]["inputs"] == 3 and payload["protocol"]["samples"] == 3
    assert payload["reference"]["values"]["l1"] > 0
    for r in payload["rows"]:
        assert r["ratio_l1"] == pytest.approx(r["div_l1"] / payload["reference"]["values"]["l1"])
        assert {"q_l1", "q_psnr", "q_ssim", "div_1-ssim", "div_std"} <= set(r)
        assert 0.0 <= r["q_fcn_iou"] <= 1.0  # set-level, against the input label maps
    for name in (
        "index.html",
        "diversity.csv",
        "quality_vs_diversity.png",
        "figures/bicycle__latent_train.png",
    ):
        assert (root / name).is_file(), name
    page = (root / "index.html").read_text()
    assert "z at every block + mode seeking" in page and "real pairs" in page

    # Continue with more steps: variants resume from their checkpoints (no step repeated), and
    # results of the older models are measured again.
    result = runner.invoke(app, ["diversity", str(toy), "--no-progress", "--set", "train.max_steps=2"])
    assert result.exit_code == 0, result.output
    steps = [r["step"] for r in read_log(root / "variants" / "bicycle" / "log.jsonl")]
    assert steps == [1, 2]
    rows = json.loads((root / "diversity.json").read_text())["rows"]
    assert all(r["step"] == 2 for r in rows)

    # A rerun of a finished experiment trains nothing and measures nothing again.
    stamps = {p: p.stat().st_mtime_ns for p in (root / "results").glob("*.json")}
    stamps |= {p: p.stat().st_mtime_ns for p in (root / "variants").glob("*/checkpoints/latest.pt")}
    result = runner.invoke(app, ["diversity", str(toy), "--no-progress", "--set", "train.max_steps=2"])
    assert result.exit_code == 0, result.output
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())
