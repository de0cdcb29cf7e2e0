"""Training step, schedules, checkpoints, resume, evaluation, translate and export on tiny data."""

from __future__ import annotations

import json
import math
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

import i2i.inference.evaluate
import i2i.inference.translate
from i2i.assembly.host import PluginHost, get_host
from i2i.assembly.recipe import load_recipe, resolve
from i2i.assembly.schedules import linear_factor
from i2i.errors import CheckpointError, DataError, I2IError
from i2i.inference.evaluate import evaluate_checkpoint
from i2i.reports.run_report import read_log
from i2i.runs.checkpoint import load_checkpoint, save_checkpoint
from i2i.training.start import start_run

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "facades_mini"

TINY = """
[experiment]
name = "tiny"
seed = 3
output_dir = "{out}"
device = "cpu"

[data]
name = "aligned"
root = "{root}"
direction = "BtoA"
load_size = 36
crop_size = 32
max_items = 4

[generator]
name = "unet"
num_downs = 5
ngf = 8

[discriminator]
name = "patchgan"
ndf = 8
n_layers = 2

[[losses]]
name = "cgan"

[[losses]]
name = "l1"
weight = 100.0

[train]
epochs = 2
epochs_decay = 2
log_every = 1
sample_every = 3
checkpoint_every = 1
num_samples = 2
tensorboard = false

[eval]
max_items = 3
"""


@pytest.fixture
def tiny_recipe(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY.format(out=tmp_path / "runs", root=SAMPLE))
    return path


def resolved(path: Path, *overrides: str):
    return resolve(load_recipe(path, list(overrides)), get_host(), str(path))


def train(path: Path, *overrides: str, resume: Path | None = None):
    recipe = resolved(path, *overrides)
    trainer = start_run(recipe, get_host(), resume_dir=resume, show_progress=False)
    return trainer, trainer.run()


def test_linear_schedule_matches_reference():
    # constant for `epochs`, then linear towards zero over `epochs_decay` (+1) epochs
    assert [round(linear_factor(e, 2, 3), 3) for e in range(6)] == [1, 1, 0.75, 0.5, 0.25, 0]


def test_step_reduces_losses_on_one_batch(tiny_recipe):
    recipe = resolved(tiny_recipe, "train.max_steps=1", "optim.lr=0.001")
    trainer = start_run(recipe, get_host(), show_progress=False)
    batch = next(iter(trainer.loader))
    first = trainer.train_step(batch)
    for _ in range(25):
        last = trainer.train_step(batch)
    assert set(first) >= {"D_real", "D_fake", "G_cgan", "G_l1", "G_total"}
    assert last["G_l1"] < 0.6 * first["G_l1"]  # G fits the batch
    assert last["D_real"] < first["D_real"]  # D learns to call the real pair real


def test_discriminator_is_frozen_during_generator_update(tiny_recipe):
    recipe = resolved(tiny_recipe)
    trainer = start_run(recipe, get_host(), show_progress=False)
    batch = next(iter(trainer.loader))
    trainer.train_step(batch)
    D = trainer.model.discriminator
    assert all(not p.requires_grad for p in D.parameters())  # left frozen after G's update
    before = [p.detach().clone() for p in D.parameters()]
    trainer.opt_D.zero_grad()
    trainer.train_step(batch)
    assert any(not torch.equal(a, b) for a, b in zip(before, D.parameters(), strict=True))


def test_run_directory_contents_and_lr_policy(tiny_recipe):
    pytest.importorskip("tensorboard")
    trainer, result = train(tiny_recipe, "train.tensorboard=true")
    run = result.run_dir
    assert result.finished and result.step == 16 and result.epoch == 4
    for name in [
        "recipe.toml",
        "plugins.json",
        "log.jsonl",
        "checkpoints/latest.pt",
        "checkpoints/epoch_0002.pt",
    ]:
        assert (run / name).is_file(), name
    assert sorted(p.name for p in (run / "samples").iterdir())[0] == "step_0000003.png"
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    plugins = json.loads((run / "plugins.json").read_text())["plugins"]
    assert plugins["pix2pix-generators"] == f"i2i {i2i.__version__}"
    log = read_log(run / "log.jsonl")
    lrs = [r["lr_G"] for r in log[::4]]  # first step of each epoch
    assert lrs == pytest.approx([2e-4, 2e-4, 2e-4 * 2 / 3, 2e-4 / 3])
    state = load_checkpoint(run)
    assert state["step"] == 16 and state["recipe"]["generator"]["num_downs"] == 5


@pytest.mark.parametrize("workers", [0, 2])
def test_same_seed_same_losses(tiny_recipe, workers):
    """Identical logs across runs, and whatever the number of (persistent) loader workers."""
    _, a = train(tiny_recipe, "train.max_steps=6")
    _, b = train(tiny_recipe, "train.max_steps=6", f"data.num_workers={workers}")  # spans 2 epochs
    keys = ["D_real", "D_fake", "G_cgan", "G_l1"]
    la, lb = read_log(a.run_dir / "log.jsonl"), read_log(b.run_dir / "log.jsonl")
    assert [[r[k] for k in keys] for r in la] == [[r[k] for k in keys] for r in lb]


def stop_after(trainer, steps: int) -> None:
    """Make ``trainer`` behave as if Ctrl-C was pressed during step ``steps``."""
    step = trainer.train_step

    def wrapped(batch):
        logs = step(batch)
        if trainer.step + 1 >= steps:
            trainer._signal_seen = True
        return logs

    trainer.train_step = wrapped


# A U-Net with num_downs 6 has a dropout level: its random masks must continue exactly too.
DROPOUT = ("generator.num_downs=6", "data.load_size=72", "data.crop_size=64")


@pytest.mark.parametrize(
    ("log_every", "extra"), [(1, ()), (2, ()), (1, DROPOUT)], ids=["log1", "log2", "dropout"]
)
def test_resume_mid_epoch_gives_identical_losses(tiny_recipe, log_every, extra):
    every = f"train.log_every={log_every}"  # with 2, the stop falls inside a logging interval
    _, full = train(tiny_recipe, "train.max_steps=7", every, *extra)
    recipe = resolved(tiny_recipe, "train.max_steps=7", every, *extra)
    part = start_run(recipe, get_host(), show_progress=False)
    stop_after(part, 3)  # inside epoch 1 (4 steps per epoch)
    stopped = part.run()
    assert stopped.interrupted and stopped.step == 3
    _, resumed = train(tiny_recipe, "train.max_steps=7", every, *extra, resume=stopped.run_dir)
    assert resumed.step == 7 and not resumed.interrupted
    keys = ["step", "D_real", "D_fake", "G_cgan", "G_l1", "lr_G"]
    expected = [[r[k] for k in keys] for r in read_log(full.run_dir / "log.jsonl")]
    got = [[r[k] for k in keys] for r in read_log(stopped.run_dir / "log.jsonl")]
    assert got == expected


def test_resume_refuses_a_different_model(tiny_recipe):
    _, part = train(tiny_recipe, "train.max_steps=1")
    with pytest.raises(I2IError, match=r"\[generator\]"):
        train(tiny_recipe, "generator.ngf=16", resume=part.run_dir)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ck.pt"
    save_checkpoint({"step": 1, "w": torch.ones(3)}, path)

    def broken_save(obj, fh, *args, **kwargs):
        fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(CheckpointError, match="previous ck.pt is unchanged"):
        save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]  # no temporary file left


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_hostile_or_foreign_checkpoints_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    hostile = tmp_path / "hostile.pt"
    torch.save({"format": "i2i-checkpoint", "payload": _Boom()}, hostile)
    with pytest.raises(CheckpointError, match="arbitrary code"):
        load_checkpoint(hostile)
    assert not (tmp_path / "PWNED").exists()
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not an i2i checkpoint"):
        load_checkpoint(foreign)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(pickle.dumps([1, 2])[:3])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(garbage)
    truncated = tmp_path / "truncated.pt"
    save_checkpoint({"w": torch.ones(1000)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:500])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(truncated)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


class _Identity(torch.nn.Module):
    latent_dim = 0

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1))

    def forward(self, x):
        return x * self.scale


class IdentityPlugin:
    @i2i.hookimpl
    def i2i_register_generators(self, registry):
        registry.add("identity", lambda input_nc, output_nc: _Identity())


def test_identity_generator_scores_perfectly(tmp_path):
    host = PluginHost(extra_plugins=[("identity", IdentityPlugin())])
    # An aligned set whose halves are identical: the identity is a perfect translator.
    for split in ("train", "test"):
        (tmp_path / "data" / split).mkdir(parents=True)
        for i in range(3):
            half = Image.effect_noise((32, 32), 40 + 10 * i).convert("RGB")
            pair = Image.new("RGB", (64, 32))
            pair.paste(half, (0, 0))
            pair.paste(half, (32, 0))
            pair.save(tmp_path / "data" / split / f"{i}.png")
    recipe_path = tmp_path / "id.toml"
    recipe_path.write_text(f"""
[experiment]
output_dir = "{tmp_path / "runs"}"
device = "cpu"
[data]
name = "aligned"
root = "{tmp_path / "data"}"
preprocess = "none"
[generator]
name = "identity"
[[losses]]
name = "l1"
[train]
max_steps = 1
tensorboard = false
[optim]
lr = 0.0
""")
    recipe = resolve(load_recipe(recipe_path), host)
    trainer = start_run(recipe, host, show_progress=False)
    result = trainer.run()
    assert trainer.model.discriminator is None  # no adversarial loss, no D
    [summary] = evaluate_checkpoint(result.run_dir, host, show_progress=False)
    assert summary["count"] == 3
    assert math.isinf(summary["metrics"]["psnr"]["mean"])
    assert summary["metrics"]["ssim"]["mean"] == pytest.approx(1.0)
    assert summary["metrics"]["l1"]["mean"] == pytest.approx(0.0)
    csv_lines = (result.run_dir / "eval" / "eval" / "per_image.csv").read_text().splitlines()
    assert csv_lines[0] == "name,l1,psnr,ssim" and len(csv_lines) == 4 and "inf" in csv_lines[1]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("trained")
    path = tmp / "tiny.toml"
    path.write_text(TINY.format(out=tmp / "runs", root=SAMPLE))
    _, result = train(path, "train.max_steps=2")
    return result.run_dir


def test_eval_both_modes_writes_reports(trained_run):
    summaries = evaluate_checkpoint(trained_run, get_host(), modes=["eval", "train"], show_progress=False)
    assert [s["mode"] for s in summaries] == ["eval", "train"]
    for s in summaries:
        out = trained_run / "eval" / s["mode"]
        assert s["count"] == 3 and s["split"] == "test"
        assert (out / "gallery.html").is_file() and (out / "metrics.json").is_file()
        assert len(list((out / "images").glob("*.png"))) == 3
    # train mode (dropout on) must not alter the stored model: eval mode is reproducible
    again = evaluate_checkpoint(trained_run, get_host(), modes=["eval"], show_progress=False)
    assert again[0]["metrics"]["l1"]["mean"] == summaries[0]["metrics"]["l1"]["mean"]


def test_translate_keeps_sizes_and_says_so(trained_run, tmp_path):
    from i2i.inference.translate import translate_folder

    src = tmp_path / "in"
    src.mkdir()
    Image.new("RGB", (40, 24), (200, 10, 10)).save(src / "odd.png")
    Image.new("RGB", (64, 64), (10, 200, 10)).save(src / "square.jpg")
    (src / "notes.txt").write_text("ignored")
    report = translate_folder(trained_run, src, tmp_path / "out", get_host())
    assert report.count == 2
    assert Image.open(tmp_path / "out" / "odd.png").size == (40, 24)
    assert Image.open(tmp_path / "out" / "square.png").size == (64, 64)
    assert any("odd.png" in n and "padded" in n for n in report.notes)
    assert any("--size 32" in n for n in report.notes)  # trained on 32x32 crops: say so
    Image.new("RGB", (20, 12)).save(src / "tiny.png")  # smaller than the U-Net's 32px minimum
    report = translate_folder(trained_run, src, tmp_path / "out2", get_host(), size=32)
    for name, size in [("odd", (40, 24)), ("square", (64, 64)), ("tiny", (20, 12))]:
        assert Image.open(tmp_path / "out2" / f"{name}.png").size == size
    assert report.notes == [
        "3 image(s) were resized to 32x32 for the network and back to their own size.",
        "2 input(s) are not square, and --size 32 resized them to 32x32, changing their aspect ratio "
        "for the network (outputs are resized back).",
    ]


def test_export_matches_pytorch(trained_run, tmp_path):
    from i2i.inference.export import export_generator

    pytest.importorskip("onnxruntime")
    results = export_generator(trained_run, get_host(), ["torchscript", "onnx"], out_dir=tmp_path, size=32)
    assert [p.name for p, _ in results] == ["generator.torchscript.pt", "generator.onnx"]
    assert all(diff < 1e-4 for _, diff in results)
    scripted = torch.jit.load(str(tmp_path / "generator.torchscript.pt"))
    assert scripted(torch.zeros(1, 3, 32, 32)).shape == (1, 3, 32, 32)


def test_cli_run_interrupt_and_resume(tiny_recipe, tmp_path):
    """Ctrl-C saves a checkpoint; --resume finishes the run; eval and the report follow."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "i2i", "run", str(tiny_recipe), "--no-progress", "--set", "train.epochs=40"]
    proc = subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    log = tmp_path / "runs" / "tiny" / "log.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.exists() and log.read_text().count("\n") >= 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "--resume" in stderr and "Traceback" not in stderr
    stopped_at = load_checkpoint(tmp_path / "runs" / "tiny")["step"]
    assert 2 <= stopped_at < 168
    done = subprocess.run(
        cmd
        + ["--set", "train.max_steps=" + str(stopped_at + 3), "--resume", str(tmp_path / "runs" / "tiny")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert load_checkpoint(tmp_path / "runs" / "tiny")["step"] == stopped_at + 3
    assert "psnr" in done.stdout and (tmp_path / "runs" / "tiny" / "index.html").is_file()
    steps = [r["step"] for r in read_log(log)]
    assert steps == list(range(1, stopped_at + 4))  # no step lost or repeated


def test_third_party_latent_generator_and_two_sample_loss_train(tmp_path, monkeypatch):
    """The example plugin's z-generator and two-sample loss run through the unchanged loop."""
    monkeypatch.chdir(REPO)  # its recipe names samples/facades_mini relative to the repository
    recipe = REPO / "examples" / "i2i-example-plugin" / "recipe.toml"
    _, result = train(
        recipe,
        f"experiment.output_dir={tmp_path}",
        "train.max_steps=2",
        "train.tensorboard=false",
        "data.max_items=2",
        "eval.max_items=2",
    )
    [entry] = [r for r in read_log(result.run_dir / "log.jsonl") if r["step"] == 2]
    assert {"G_latent_spread", "spread_ratio", "G_cgan", "D_real"} <= set(entry)
    assert entry["spread_ratio"] > 0  # two different z gave two different outputs
    [summary] = evaluate_checkpoint(result.run_dir, get_host(), show_progress=False)
    assert summary["count"] == 2


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("step", [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]),
        ("cosine", [1.0, 0.9330, 0.75, 0.5, 0.25, 0.0670]),
        ("linear", [1.0, 1.0, 1.0, 0.75, 0.5, 0.25]),
    ],
)
def test_learning_rate_policies(policy, expected):
    from i2i.assembly.schedules import make_scheduler, step_scheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    optim = {"policy": policy, "step_epochs": 2, "gamma": 0.5, "patience": 1}
    sched = make_scheduler(opt, optim, {"epochs": 3, "epochs_decay": 3})
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        step_scheduler(sched, 0.0)
    assert lrs == pytest.approx(expected, abs=1e-4)


def test_plateau_policy_decays_when_the_loss_stalls():
    from i2i.assembly.schedules import make_scheduler, step_scheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = make_scheduler(
        opt, {"policy": "plateau", "gamma": 0.5, "patience": 1}, {"epochs": 1, "epochs_decay": 1}
    )
    for loss in [3.0, 2.0, 2.0, 2.0]:
        step_scheduler(sched, loss)
    assert opt.param_groups[0]["lr"] == 0.5


def test_a_run_that_cannot_start_leaves_no_run_directory(tiny_recipe, tmp_path):
    with pytest.raises(I2IError, match="does not exist"):
        train(tiny_recipe, f"data.root={tmp_path / 'nowhere'}")
    assert not (tmp_path / "runs" / "tiny").exists()


def test_fid_without_weights_stops_before_training(tiny_recipe, tmp_path, monkeypatch):
    monkeypatch.setenv("I2I_FID_WEIGHTS", str(tmp_path / "missing.pth"))
    with pytest.raises(I2IError, match="never downloads"):
        train(tiny_recipe, 'eval.metrics=["psnr", "fid"]')
    assert not (tmp_path / "runs").exists()


def test_latest_checkpoint_is_refreshed_mid_epoch_on_a_timer(tiny_recipe):
    recipe = resolved(tiny_recipe, "train.max_steps=3", "train.checkpoint_minutes=0.000001")
    trainer = start_run(recipe, get_host(), show_progress=False)
    saved_at = []
    save = trainer.save
    trainer.save = lambda name="latest.pt": saved_at.append(trainer.step) or save(name)
    trainer.run()
    assert saved_at[:3] == [1, 2, 3]  # inside the first 4-step epoch, not only at its end


def test_metrics_take_parameters_in_the_recipe(tiny_recipe, tmp_path):
    from i2i.errors import RecipeError

    with pytest.raises(RecipeError) as caught:
        resolved(
            tiny_recipe, 'eval.metrics=["l1", {name = "ssim", win_size = 5}, {name = "psnr", bogus = 1}]'
        )
    assert caught.value.problems == ["eval.metrics.2.bogus: unknown setting. It takes no settings."]
    missing = tmp_path / "inception.pth"
    with pytest.raises(I2IError, match=str(missing)):
        train(tiny_recipe, f'eval.metrics=[{{name = "fid", weights = "{missing}"}}]')
    _, result = train(tiny_recipe, "train.max_steps=1", 'eval.metrics=["l1", {name = "ssim", win_size = 5}]')
    [summary] = evaluate_checkpoint(result.run_dir, get_host(), show_progress=False)
    assert set(summary["metrics"]) == {"l1", "ssim"}


@pytest.mark.parametrize("workers", [0, 1])
def test_a_corrupt_image_mid_run_saves_progress_and_says_how_to_resume(tmp_path, workers):
    data = tmp_path / "data" / "train"
    data.mkdir(parents=True)
    for i in range(1, 5):
        (data / f"{i}.jpg").write_bytes((SAMPLE / "train" / f"{i}.jpg").read_bytes())
    recipe = tmp_path / "r.toml"
    recipe.write_text(TINY.format(out=tmp_path / "runs", root=tmp_path / "data"))
    trainer = start_run(resolved(recipe, f"data.num_workers={workers}"), get_host(), show_progress=False)
    # Damaged after the start-of-run scan passed it (a failing disk, a sync tool): found mid-run.
    (data / "4.jpg").write_bytes((SAMPLE / "train" / "4.jpg").read_bytes()[:300])
    with pytest.raises(DataError) as caught:
        trainer.run()
    message = str(caught.value)
    assert "4.jpg" in message and "--resume" in message and "Traceback" not in message
    state = load_checkpoint(tmp_path / "runs" / "tiny")
    assert state["step"] == int(message.split("stopped at step ")[1].split()[0])


def test_run_without_an_eval_split_still_finishes_with_a_report(tmp_path):
    from typer.testing import CliRunner

    from i2i.cli import app

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train").symlink_to(SAMPLE / "train")  # no test split
    recipe = tmp_path / "r.toml"
    recipe.write_text(TINY.format(out=tmp_path / "runs", root=tmp_path / "data"))
    result = CliRunner().invoke(app, ["run", str(recipe), "--no-progress", "--set", "train.max_steps=2"])
    assert result.exit_code == 0, result.output
    assert "Evaluation skipped" in result.output and "i2i eval" in result.output
    assert (tmp_path / "runs" / "tiny" / "index.html").is_file()


# -- issue 9: data loss or silently wrong results ----------------------------------------------------


def test_translate_refuses_to_overwrite_its_inputs(trained_run, tmp_path):
    from i2i.inference.translate import translate_folder

    src = tmp_path / "in"
    src.mkdir()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(src / "a.png")
    before = (src / "a.png").read_bytes()
    for out in (src, tmp_path / "in" / ".." / "in"):
        with pytest.raises(I2IError) as caught:
            translate_folder(trained_run, src, out, get_host())
        assert str(src) in str(caught.value) and str(out) in str(caught.value)
    assert (src / "a.png").read_bytes() == before
    (tmp_path / "link").symlink_to(src)  # another name for the same folder
    with pytest.raises(I2IError, match="overwrite"):
        translate_folder(trained_run, src, tmp_path / "link", get_host())
    assert (src / "a.png").read_bytes() == before and sorted(os.listdir(src)) == ["a.png"]


def test_translate_and_eval_keep_inputs_with_the_same_stem_apart(trained_run, tmp_path):
    from i2i.inference.translate import translate_folder

    src = tmp_path / "data" / "test"
    src.mkdir(parents=True)
    Image.effect_noise((64, 32), 30).convert("RGB").save(src / "1.png")
    Image.effect_noise((64, 32), 60).convert("RGB").save(src / "1.jpg")
    Image.effect_noise((64, 32), 90).convert("RGB").save(src / "2.png")
    report = translate_folder(trained_run, src, tmp_path / "out", get_host())
    assert report.count == 3
    assert sorted(os.listdir(tmp_path / "out")) == ["1-2.png", "1.png", "2.png"]
    [summary] = evaluate_checkpoint(
        trained_run,
        get_host(),
        modes=["eval"],
        recipe_changes={"data": {"root": str(tmp_path / "data")}},
        out_dir=tmp_path / "ev",
        show_progress=False,
    )
    table = (tmp_path / "ev" / "eval" / "per_image.csv").read_text().splitlines()
    names = [line.split(",")[0] for line in table]
    assert summary["count"] == 3 and names == ["name", "1", "1-2", "2"]
    assert len(list((tmp_path / "ev" / "eval" / "images").glob("*.png"))) == 3


def test_translate_feeds_the_generator_what_eval_does(trained_run, tmp_path, monkeypatch):
    """--aligned --size N resizes like the datasets (bicubic with antialiasing)."""
    import i2i.inference.evaluate
    import i2i.inference.translate

    seen: dict[str, list[torch.Tensor]] = {"translate": [], "eval": []}

    def recording(module, key, loader):
        original = getattr(module, loader)

        def build(*args, **kwargs):
            loaded = original(*args, **kwargs)
            G = getattr(loaded, "generator", loaded)
            G.register_forward_pre_hook(lambda _m, inputs: seen[key].append(inputs[0].detach().clone()))
            return loaded

        monkeypatch.setattr(module, loader, build)

    recording(i2i.inference.translate, "translate", "load_trained")
    recording(i2i.inference.evaluate, "eval", "generator_from_checkpoint")
    src = tmp_path / "data" / "test"
    src.mkdir(parents=True)
    Image.effect_noise((600, 300), 80).convert("RGB").save(src / "big.png")  # shrunk 300 -> 32
    i2i.inference.translate.translate_folder(
        trained_run, src, tmp_path / "out", get_host(), aligned=True, size=32
    )
    evaluate_checkpoint(
        trained_run,
        get_host(),
        modes=["eval"],
        recipe_changes={"data": {"root": str(tmp_path / "data")}},
        out_dir=tmp_path / "ev",
        show_progress=False,
    )
    [x_translate], [x_eval] = seen["translate"], seen["eval"]
    assert x_translate.shape == x_eval.shape == (1, 3, 32, 32)
    assert (x_translate - x_eval).abs().max() < 1e-5


def poison_after(trainer, step: int) -> None:
    """Make G's weights NaN right after step ``step``, as a diverging run would."""
    train_step = trainer.train_step

    def wrapped(batch):
        logs = train_step(batch)
        if trainer.step + 1 == step:
            with torch.no_grad():
                next(trainer.model.generator.parameters()).fill_(float("nan"))
        return logs

    trainer.train_step = wrapped


def all_finite(state) -> bool:
    return all(torch.isfinite(t).all() for t in state["generator"].values() if t.is_floating_point())


def test_a_diverging_run_stops_and_keeps_the_last_finite_checkpoint(tiny_recipe):
    from i2i.errors import TrainingDiverged

    recipe = resolved(tiny_recipe, "train.max_steps=12", "train.log_every=100", "train.checkpoint_every=0")
    trainer = start_run(recipe, get_host(), show_progress=False)
    poison_after(trainer, 5)  # step 6 is the first with NaN losses; latest.pt is written at step 8
    with pytest.raises(TrainingDiverged, match=r"step 6\b") as caught:
        trainer.run()
    assert "G_l1" in str(caught.value)
    state = load_checkpoint(trainer.run_dir)
    assert state["step"] == 4 and all_finite(state)  # the healthy end of epoch 1 is kept


def test_an_infinite_learning_rate_fails_the_cli(tiny_recipe, capsys, monkeypatch):
    from i2i.cli import main

    monkeypatch.setenv("COLUMNS", "250")
    with pytest.raises(SystemExit) as caught:
        # lr = inf itself is refused by validation (test_recipe_sanity); 1e38 is finite but diverges
        main(["run", str(tiny_recipe), "--no-progress", "-s", "optim.lr=1e38", "-s", "train.max_steps=6"])
    assert caught.value.code == 1
    err = capsys.readouterr().err
    # D steps first, with a huge rate: G's adversarial term of that very step is NaN
    assert "step 1 gave non-finite losses (G_cgan, G_total)" in err and "Traceback" not in err
    latest = tiny_recipe.parent / "runs" / "tiny" / "checkpoints" / "latest.pt"
    assert not latest.exists() or all_finite(load_checkpoint(latest))


def test_skip_nonfinite_skips_and_counts_bad_steps(tiny_recipe):
    recipe = resolved(tiny_recipe, "train.max_steps=6", "train.skip_nonfinite=true", "train.log_every=2")
    trainer = start_run(recipe, get_host(), show_progress=False)
    [l1] = [loss for name, loss in trainer.model.losses if name == "l1"]
    generator_loss = l1.generator_loss
    calls = []

    def sometimes_nan(ctx):
        calls.append(1)
        loss = generator_loss(ctx)
        return loss * float("nan") if len(calls) == 3 else loss

    l1.generator_loss = sometimes_nan
    result = trainer.run()
    assert result.finished and result.step == 6
    log = read_log(result.run_dir / "log.jsonl")
    assert [r["skipped_nonfinite"] for r in log] == [0, 1, 1]
    assert all(math.isfinite(v) for r in log for v in r.values())
    assert all_finite(load_checkpoint(result.run_dir))


def test_resume_refuses_a_changed_optimiser(tiny_recipe):
    _, part = train(tiny_recipe, "train.max_steps=1")
    with pytest.raises(I2IError, match=r"\[optim\]"):
        train(tiny_recipe, "train.max_steps=2", "optim.lr=0.001", resume=part.run_dir)
    assert load_checkpoint(part.run_dir)["recipe"]["optim"]["lr"] == 2e-4


def test_the_printed_resume_command_runs_as_printed(tiny_recipe, monkeypatch):
    """After Ctrl-C, ``i2i run --resume RUN_DIR`` continues with the run's recipe and --set values."""
    import shlex

    from typer.testing import CliRunner

    from i2i.cli import app
    from i2i.training.trainer import Trainer

    step = Trainer.train_step

    def stopping(self, batch):
        logs = step(self, batch)
        if self.step + 1 >= 2:
            self._signal_seen = True  # as the first Ctrl-C does
        return logs

    monkeypatch.setattr(Trainer, "train_step", stopping)
    overrides = ["-s", "train.max_steps=5", "-s", "train.evaluate=false", "-s", "train.log_every=1"]
    stopped = CliRunner().invoke(app, ["run", str(tiny_recipe), "--no-progress", *overrides])
    assert stopped.exit_code == 130, stopped.output
    run_dir = tiny_recipe.parent / "runs" / "tiny"
    hint = stopped.output.split("Continue with:")[1].strip().splitlines()[0]
    assert hint == shlex.join(["i2i", "run", "--resume", str(run_dir)])
    monkeypatch.undo()
    done = CliRunner().invoke(app, shlex.split(hint)[1:] + ["--no-progress"])
    assert done.exit_code == 0, done.output
    assert load_checkpoint(run_dir)["step"] == 5  # the --set train.max_steps=5 of the first command
    assert [r["step"] for r in read_log(run_dir / "log.jsonl")] == [1, 2, 3, 4, 5]


def test_a_run_directory_is_trained_by_one_process_at_a_time(tiny_recipe):
    from i2i.errors import RunLocked

    _, result = train(tiny_recipe, "train.max_steps=1")
    recipe = resolved(tiny_recipe, "train.max_steps=2")
    first = start_run(recipe, get_host(), resume_dir=result.run_dir, show_progress=False)
    with pytest.raises(RunLocked, match=str(result.run_dir)):
        start_run(recipe, get_host(), resume_dir=result.run_dir, show_progress=False)
    first.run()  # unlocks when it ends
    _, again = train(tiny_recipe, "train.max_steps=3", resume=result.run_dir)
    assert again.step == 3


def test_resume_after_a_hard_kill_drops_the_steps_it_redoes(tiny_recipe):
    _, result = train(tiny_recipe, "train.max_steps=4")  # latest.pt at step 4
    run = result.run_dir
    with (run / "log.jsonl").open("a") as fh:  # killed at step 7, mid-line, mid-checkpoint
        fh.write(json.dumps({"step": 5, "G_l1": 9.0}) + "\n" + json.dumps({"step": 6, "G_l1": 9.0}))
        fh.write('\n{"step": 7, "G_')
    (run / "checkpoints" / ".latest.pt.k1ll3d.tmp").write_bytes(b"partial")
    train(tiny_recipe, "train.max_steps=6", resume=run)
    log = read_log(run / "log.jsonl")
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6] and all(r["G_l1"] != 9.0 for r in log)
    assert len((run / "log.jsonl").read_text().splitlines()) == 6
    assert not list((run / "checkpoints").glob(".*.tmp"))


def test_a_run_from_before_a_new_setting_still_resumes(tiny_recipe):
    """A setting added to a component later (with a default) is not a change of the model."""
    _, part = train(tiny_recipe, "train.max_steps=1")
    path = part.run_dir / "checkpoints" / "latest.pt"
    state = load_checkpoint(path)
    del state["recipe"]["generator"]["output"]  # as written before the option existed
    state.pop("path")
    save_checkpoint({k: v for k, v in state.items() if k not in ("format", "format_version")}, path)
    _, resumed = train(tiny_recipe, "train.max_steps=2", resume=part.run_dir)
    assert resumed.step == 2
    with pytest.raises(I2IError, match=r"\[generator\]"):
        train(tiny_recipe, "train.max_steps=3", "generator.output=\"logits\"", resume=part.run_dir)
