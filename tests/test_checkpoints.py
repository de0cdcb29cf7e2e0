"""Checkpoints that fit a disk: epoch snapshots without optimiser state, ``train.keep_last``, and
writes in the background that keep the atomic-rename guarantees."""

from __future__ import annotations

import shutil
import threading
import time
from io import StringIO
from pathlib import Path

import pytest
import torch
from rich.console import Console
from test_training import SAMPLE, TINY, resolved, train

import i2i.runs.checkpoint
from i2i.assembly.host import get_host
from i2i.errors import CheckpointError, RecipeError
from i2i.inference.evaluate import evaluate_checkpoint
from i2i.reports.run_report import read_log
from i2i.runs.checkpoint import CheckpointWriter, load_checkpoint, prune_snapshots, snapshots
from i2i.training.start import start_run


@pytest.fixture
def tiny_recipe(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY.format(out=tmp_path / "runs", root=SAMPLE))  # 4 epochs of 4 steps
    return path


def slow_writes(monkeypatch, seconds: float) -> list[str]:
    """Make every checkpoint write take ``seconds`` longer; returns the names written, in order."""
    real = i2i.runs.checkpoint.save_checkpoint
    written: list[str] = []

    def slow(state, path):
        time.sleep(seconds)
        written.append(Path(path).name)
        return real(state, path)

    monkeypatch.setattr(i2i.runs.checkpoint, "save_checkpoint", slow)
    return written


# -- epoch snapshots --------------------------------------------------------------------------------
def test_epoch_snapshots_hold_the_networks_but_not_the_optimisers(tiny_recipe, tmp_path):
    _, result = train(tiny_recipe, "train.max_steps=8", "train.evaluate=false")
    folder = result.run_dir / "checkpoints"
    latest, snapshot = load_checkpoint(folder / "latest.pt"), load_checkpoint(folder / "epoch_0002.pt")
    assert {"opt_G", "opt_D", "sched_G", "sched_D"} <= set(latest) and not latest.get("snapshot")
    assert not any(k.startswith(("opt_", "sched_")) for k in snapshot) and snapshot["snapshot"] is True
    for key in ("generator", "discriminator", "losses", "rng", "recipe", "io", "step", "epoch"):
        assert key in snapshot, key
    assert snapshot["step"] == latest["step"] == 8
    for name, weights in latest["generator"].items():
        assert torch.equal(weights, snapshot["generator"][name]), name
    # Adam keeps two more copies of every weight: the snapshot is about a third of latest.pt.
    assert (folder / "epoch_0002.pt").stat().st_size < 0.45 * (folder / "latest.pt").stat().st_size
    # What inference reads works from a snapshot: eval, translate (i2i.load), export.
    import i2i

    summary = evaluate_checkpoint(
        folder / "epoch_0002.pt", get_host(), out_dir=tmp_path / "ev", show_progress=False
    )
    assert summary[0]["count"] == 3
    translator = i2i.load(folder / "epoch_0002.pt")
    assert translator.generator is not None
    from i2i.cli import main

    with pytest.raises(SystemExit) as done:
        main(
            [
                "export",
                str(folder / "epoch_0002.pt"),
                "--out-dir",
                str(tmp_path / "x"),
                "--format",
                "safetensors",
            ]
        )
    assert done.value.code in (0, None)


def test_a_run_resumed_from_an_epoch_snapshot_goes_on_with_fresh_optimisers_and_says_so(tiny_recipe):
    _, full = train(tiny_recipe, "train.evaluate=false")  # 16 steps, the reference
    _, part = train(tiny_recipe, "train.max_steps=12", "train.evaluate=false", "experiment.name=part")
    folder = part.run_dir / "checkpoints"
    shutil.copyfile(folder / "epoch_0002.pt", folder / "latest.pt")  # as the diversity runner does
    out = StringIO()
    recipe = resolved(tiny_recipe, "train.evaluate=false", "experiment.name=part")
    trainer = start_run(
        recipe, get_host(), resume_dir=part.run_dir, show_progress=False, console=Console(file=out, width=400)
    )
    assert trainer.step == 8
    result = trainer.run()
    text = " ".join(out.getvalue().split())
    assert "is an epoch snapshot" in text and "fresh optimisers" in text and "set to epoch 2" in text
    assert result.step == 16 and not result.interrupted
    got = {r["step"]: r for r in read_log(part.run_dir / "log.jsonl")}
    want = {r["step"]: r for r in read_log(full.run_dir / "log.jsonl")}
    assert list(got) == list(range(1, 17))  # steps 9-12 trained again, the old lines dropped
    assert [got[s]["lr_G"] for s in got] == pytest.approx([want[s]["lr_G"] for s in want])  # schedule in step
    assert got[9]["G_l1"] == want[9]["G_l1"]  # the same weights (the losses come before the update)
    assert got[10]["G_l1"] != want[10]["G_l1"]  # then fresh Adam: another (sound) continuation


# -- train.keep_last --------------------------------------------------------------------------------
def test_keep_last_removes_older_snapshots_i2i_wrote_and_nothing_else(tiny_recipe, tmp_path):
    run = tmp_path / "runs" / "tiny"
    folder = run / "checkpoints"
    folder.mkdir(parents=True)
    outside = tmp_path / "mine.pt"
    outside.write_text("mine")
    foreign = {
        "epoch_0000.pt.bak": "a copy",
        "epoch_1.pt": "not i2i's pattern",
        "Epoch_0001.pt": "not i2i's pattern",
        "epoch_0001.pt.tmp": "not a snapshot name",
        "notes.txt": "notes",
    }
    for name, text in foreign.items():
        (folder / name).write_text(text)
    (folder / "epoch_0000.pt").symlink_to(outside)  # a link someone made: not a file i2i wrote
    (run / "epoch_0001.pt").write_text("outside the checkpoints folder")
    # The run directory exists already, so train it by resuming... no: a new run takes the next name.
    _, result = train(tiny_recipe, "train.keep_last=2", "train.evaluate=false", "experiment.name=kept")
    kept = result.run_dir / "checkpoints"
    assert sorted(p.name for p in kept.glob("epoch_*.pt")) == ["epoch_0003.pt", "epoch_0004.pt"]
    # In a folder holding other files: only the snapshots are candidates, and only the oldest go.
    for n in (1, 2):
        shutil.copyfile(kept / "epoch_0003.pt", folder / f"epoch_000{n}.pt")
    removed = prune_snapshots(folder, 1)
    assert [p.name for p in removed] == ["epoch_0001.pt"]
    assert (folder / "epoch_0002.pt").is_file() and (folder / "epoch_0000.pt").is_symlink()
    assert outside.read_text() == "mine" and (run / "epoch_0001.pt").is_file()
    for name, text in foreign.items():
        assert (folder / name).read_text() == text, name
    assert [p.name for _, p in snapshots(folder)] == ["epoch_0002.pt"]
    assert prune_snapshots(folder, 0) == []  # 0 keeps all


def test_keep_last_is_checked_like_any_setting(tiny_recipe):
    with pytest.raises(RecipeError, match="train.keep_last"):
        resolved(tiny_recipe, "train.keep_last=-1")


# -- background writes --------------------------------------------------------------------------------
def test_a_save_returns_before_the_write_and_writes_the_state_it_was_given(tiny_recipe, monkeypatch):
    written = slow_writes(monkeypatch, 0.5)
    trainer = start_run(resolved(tiny_recipe, "train.evaluate=false"), get_host(), show_progress=False)
    try:
        before = {k: v.clone() for k, v in trainer.model.generator.state_dict().items()}
        start = time.perf_counter()
        path = trainer.save()
        assert time.perf_counter() - start < 0.4  # the step goes on while the file is written
        with torch.no_grad():
            for p in trainer.model.generator.parameters():
                p.add_(1.0)  # training changes the weights during the write
        assert written == [] and not path.exists()
        trainer.wait_for_saves()
        saved = load_checkpoint(path)["generator"]
        assert all(torch.equal(saved[k], before[k]) for k in before)
    finally:
        trainer.release()


def test_a_second_save_of_a_file_waits_for_the_first_and_the_run_waits_for_all(tiny_recipe, monkeypatch):
    written = slow_writes(monkeypatch, 0.2)
    recipe = resolved(
        tiny_recipe, "train.max_steps=5", "train.evaluate=false", "train.checkpoint_minutes=0.0001"
    )
    trainer = start_run(recipe, get_host(), show_progress=False)
    result = trainer.run()  # timed saves at every step, an epoch's at step 4, the final one
    assert not trainer.writer.pending(result.run_dir / "checkpoints" / "latest.pt")
    assert load_checkpoint(result.run_dir)["step"] == 5  # the last one written is the newest
    assert written.count("latest.pt") == 5 and "epoch_0001.pt" in written
    assert written.index("epoch_0001.pt") > written.index("latest.pt")
    assert not list((result.run_dir / "checkpoints").glob(".*.tmp"))


def test_a_background_write_that_fails_stops_the_run_with_the_checkpoint_error(tiny_recipe, monkeypatch):
    def full(*args, **kwargs):
        raise RuntimeError(
            "[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file"
        )

    monkeypatch.setattr(torch, "save", full)
    recipe = resolved(tiny_recipe, "train.evaluate=false", "train.checkpoint_minutes=0.0001")
    trainer = start_run(recipe, get_host(), show_progress=False)
    with pytest.raises(CheckpointError, match="disk is probably full.*no latest.pt was written") as caught:
        trainer.run()
    assert "\n" not in str(caught.value)  # one paragraph
    assert trainer.step < 16  # it stopped the run, within a step or two of the failure
    assert not list((trainer.run_dir / "checkpoints").glob(".*.tmp"))


def test_the_writer_raises_a_failed_write_once_and_keeps_order(tmp_path, monkeypatch):
    writer = CheckpointWriter()
    order = []
    real = i2i.runs.checkpoint.save_checkpoint

    def recording(state, path):
        if state.get("fail"):
            raise CheckpointError(f"Could not write the checkpoint {path} (the disk is probably full).")
        order.append(state["n"])
        return real(state, path)

    monkeypatch.setattr(i2i.runs.checkpoint, "save_checkpoint", recording)
    for n in range(5):
        writer.save({"n": n}, tmp_path / f"{n % 2}.pt")
    writer.wait()
    assert order == [0, 1, 2, 3, 4] and load_checkpoint(tmp_path / "0.pt")["n"] == 4
    writer.save({"fail": True}, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match="x.pt"):
        writer.wait()
    writer.wait()  # raised once
    assert threading.active_count() >= 1 and not writer.pending(tmp_path / "x.pt")


def test_the_finiteness_screen_before_a_save_is_exact(tmp_path):
    """Weights are screened with one sum per tensor: a sum that overflows on finite weights must not
    stop the run, and a single NaN or infinity must."""
    from i2i.errors import TrainingDiverged
    from i2i.training.divergence import DivergenceGuard

    guard = DivergenceGuard(tmp_path, skip=False, agree_all=lambda flag: flag)
    net = torch.nn.Linear(4, 4)
    with torch.no_grad():
        net.weight.fill_(3e38)  # finite, but the sum of 16 of them overflows float32
    guard.check_savable({}, [("G", net)], step=1)
    for bad in (float("nan"), float("inf")):
        with torch.no_grad():
            net.weight[1, 2] = bad
        with pytest.raises(TrainingDiverged, match="weights of the G became non-finite"):
            guard.check_savable({}, [("G", net), ("D", None)], step=2)
