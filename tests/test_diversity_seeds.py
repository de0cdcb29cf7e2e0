"""Diversity experiments over several training seeds and over training steps: the snapshots kept
for ``steps``, the pooled table (mean ± std), the Pareto front and the over-time figure."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from i2i.assembly.host import get_host
from i2i.cli import app
from i2i.diversity.config import load_experiment
from i2i.diversity.summary import pareto_front, pooled
from i2i.errors import RecipeError
from i2i.runs.checkpoint import is_snapshot, load_checkpoint

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "facades_mini"
runner = CliRunner()

SEEDED = """
[experiment]
name = "seeded"
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
max_steps = 3
log_every = 1
sample_every = 0
keep_last = 1
tensorboard = false

[diversity]
inputs = 2
samples = 3
figure_inputs = 1
seeds = [0, 1]
steps = [1, 2]
quality = ["l1", "ssim"]

[[diversity.variants]]
name = "pix2pix"
samplers = ["dropout_train", "deterministic"]

[[diversity.variants]]
name = "z_all"
samplers = ["latent_eval"]
generator = {{ name = "unet_z_all", num_downs = 6, ngf = 4, nz = 4, dropout = false }}
"""


@pytest.fixture
def seeded(tmp_path: Path) -> Path:
    path = tmp_path / "seeded.toml"
    path.write_text(SEEDED.format(out=tmp_path / "runs", root=SAMPLE))
    return path


def test_each_variant_is_trained_once_per_seed_and_keeps_its_step_snapshots(seeded, tmp_path):
    experiment = load_experiment(seeded, get_host())
    assert [(v.name, v.group, v.seed) for v in experiment.variants] == [
        ("pix2pix_seed0", "pix2pix", 0),
        ("z_all_seed0", "z_all", 0),
        ("pix2pix_seed1", "pix2pix", 1),
        ("z_all_seed1", "z_all", 1),
    ]  # seed by seed: an experiment cut short has a whole first seed
    result = runner.invoke(app, ["validate", str(seeded)])
    assert "(pix2pix, z_all, each with 2 seeds)" in " ".join(result.output.split())
    assert all(v.recipe["train"]["snapshot_steps"] == [1, 2] for v in experiment.variants)

    result = runner.invoke(app, ["diversity", str(seeded), "--no-progress"])
    assert result.exit_code == 0, result.output
    root = tmp_path / "runs" / "seeded"
    weights = {}
    for v in experiment.variants:
        folder = root / "variants" / v.name / "checkpoints"
        for step in (1, 2):
            snapshot = load_checkpoint(folder / f"step_{step:07d}.pt")
            assert is_snapshot(snapshot) and snapshot["step"] == step  # keep_last spares them
            assert not any(k.startswith("opt_") for k in snapshot)
        final = load_checkpoint(folder / "latest.pt")
        assert final["recipe"]["experiment"]["seed"] == v.seed
        weights[v.name] = next(iter(final["generator"].values()))
    assert not torch.equal(weights["pix2pix_seed0"], weights["pix2pix_seed1"])  # the seed trains

    payload = json.loads((root / "diversity.json").read_text())
    measured = {(r["variant"], r["sampler"], r["step"]) for r in payload["rows"]}
    assert len(measured) == 2 * 3 * 3  # two seeds, three sampler rows, steps 1, 2 and the final 3
    assert {r["final"] for r in payload["rows"] if r["step"] == 3} == {True}

    summary = {(r["group"], r["sampler"]): r for r in payload["summary"]}
    assert set(summary) == {
        ("pix2pix", "dropout_train"),
        ("pix2pix", "deterministic"),
        ("z_all", "latent_eval"),
    }
    finals = [r for r in payload["rows"] if r["group"] == "z_all" and r["final"]]
    row = summary["z_all", "latent_eval"]
    assert row["seeds"] == 2 and row["step"] == 3
    assert row["div_l1"] == pytest.approx(statistics.fmean(r["div_l1"] for r in finals))
    assert row["div_l1_std"] == pytest.approx(statistics.stdev(r["div_l1"] for r in finals))
    with (root / "diversity_summary.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 3
    for name in (
        "diversity_over_time.png",
        "quality_vs_diversity.png",
        "figures/z_all_seed0__latent_eval__step1.png",
    ):
        assert (root / name).is_file(), name
    page = (root / "index.html").read_text()
    assert " ± " in page and "Over training" in page and "Pareto front" in page

    # Nothing is trained or measured again on a rerun.
    stamps = {p: p.stat().st_mtime_ns for p in (root / "results").glob("*.json")}
    assert len(stamps) == 18
    result = runner.invoke(app, ["diversity", str(seeded), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())


def test_a_missing_step_snapshot_is_explained_not_retrained(seeded, tmp_path):
    one_variant = seeded.read_text().split('[[diversity.variants]]\nname = "z_all"')[0]
    seeded.write_text(one_variant.replace("seeds = [0, 1]", "seeds = [0]"))
    assert runner.invoke(app, ["diversity", str(seeded), "--no-progress"]).exit_code == 0
    snapshot = tmp_path / "runs" / "seeded" / "variants" / "pix2pix_seed0" / "checkpoints" / "step_0000002.pt"
    epoch_snapshot = snapshot.with_name("epoch_0002.pt")  # an epoch snapshot of the same step serves
    snapshot.rename(epoch_snapshot)
    assert runner.invoke(app, ["diversity", str(seeded), "--no-progress"]).exit_code == 0
    epoch_snapshot.unlink()
    result = runner.invoke(app, ["diversity", str(seeded), "--no-progress"])
    assert result.exit_code == 1
    message = " ".join(str(result.exception).split()) + " ".join(result.output.split())
    assert "no snapshot of steps [2]" in message


def test_steps_and_seeds_are_checked_when_the_experiment_is_read(seeded):
    bad = seeded.read_text().replace("steps = [1, 2]", "steps = [2, 5]")
    seeded.write_text(bad)
    with pytest.raises(RecipeError, match=r"steps \[5\] lie beyond its train.max_steps = 3"):
        load_experiment(seeded, get_host())
    seeded.write_text(bad.replace("steps = [2, 5]", 'steps = [0, "x"]'))
    with pytest.raises(RecipeError, match="diversity.steps"):
        load_experiment(seeded, get_host())
    seeded.write_text(
        bad.replace("steps = [2, 5]", "steps = [2]").replace(
            'name = "pix2pix"', 'name = "pix2pix"\nfrom = "elsewhere"'
        )
    )
    with pytest.raises(RecipeError, match="once per seed"):
        load_experiment(seeded, get_host())


def test_pareto_front_keeps_only_points_nothing_beats_on_both_axes():
    points = [(0.1, 0.5), (0.5, 0.4), (0.3, 0.3), (0.9, 0.1), (0.5, 0.2), (float("nan"), 1.0)]
    assert pareto_front(points) == [0, 1, 3]


def test_pooling_gives_mean_and_sample_std_per_method_and_step():
    rows = [
        {
            "variant": f"m_seed{s}",
            "group": "m",
            "label": "m",
            "sampler": "a",
            "mode": "eval",
            "step": 5,
            "final": True,
            "div_l1": v,
        }
        for s, v in enumerate([0.1, 0.2, 0.6])
    ]
    (row,) = pooled(rows)
    assert row["seeds"] == 3 and row["div_l1"] == pytest.approx(0.3)
    assert row["div_l1_std"] == pytest.approx(statistics.stdev([0.1, 0.2, 0.6]))


def test_a_variant_can_name_its_own_seeds(seeded):
    text = seeded.read_text().replace('name = "z_all"', 'name = "z_all"\nseeds = [7]')
    seeded.write_text(text)
    experiment = load_experiment(seeded, get_host())
    assert [v.name for v in experiment.variants] == ["pix2pix_seed0", "pix2pix_seed1", "z_all_seed7"]
    assert experiment.variants[-1].recipe["experiment"]["seed"] == 7
    result = runner.invoke(app, ["validate", str(seeded)])
    assert "(pix2pix (2 seeds), z_all (1 seed))" in " ".join(result.output.split())
    seeded.write_text(text.replace("seeds = [7]", "seeds = []"))
    with pytest.raises(RecipeError, match="z_all.seeds = \\[\\]: give at least one seed"):
        load_experiment(seeded, get_host())
