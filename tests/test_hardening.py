"""Careless and hostile input found in a trial on new data: each case is a clear error, not a traceback."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from test_training import SAMPLE, TINY, train

from i2i.cli import main
from i2i.errors import CheckpointError
from i2i.runs.checkpoint import load_checkpoint, save_checkpoint


def cli(capsys, *args: str) -> tuple[int, str]:
    """Exit code and stdout+stderr of ``i2i ARGS``."""
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("hard")
    path = tmp / "tiny.toml"
    path.write_text(TINY.format(out=tmp / "runs", root=SAMPLE))
    _, result = train(path, "train.max_steps=1", "train.evaluate=false")
    return result.run_dir


@pytest.fixture
def recipe(tmp_path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY.format(out=tmp_path / "runs", root=SAMPLE))
    return path


@pytest.fixture
def inputs(tmp_path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(SAMPLE / "test" / sorted(os.listdir(SAMPLE / "test"))[0], folder / "a.jpg")
    return folder


def bad_data(tmp_path: Path) -> Path:
    """The sample's pairs plus an empty, a truncated and a non-image file in train/."""
    root = tmp_path / "data"
    shutil.copytree(SAMPLE, root, ignore=shutil.ignore_patterns("*.md"))
    first = sorted((root / "train").glob("*.jpg"))[0]
    (root / "train" / "zz_empty.jpg").write_bytes(b"")
    (root / "train" / "zz_cut.jpg").write_bytes(first.read_bytes()[:2000])
    (root / "train" / "zz_text.png").write_text("not an image")
    return root


# -- output paths that are files, sizes that cannot work --------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        ("translate", "{run}", "{inputs}", "{file}"),
        ("export", "{run}", "--out-dir", "{file}", "--format", "torchscript"),
        ("eval", "{run}", "--out-dir", "{file}"),
    ],
)
def test_an_output_path_that_is_a_file_is_a_clear_error(args, run_dir, inputs, tmp_path, capsys):
    blocker = tmp_path / "taken"
    blocker.write_text("mine")
    code, text = cli(capsys, *(a.format(run=run_dir, inputs=inputs, file=blocker) for a in args))
    assert code == 1 and "existing file" in text and str(blocker) in text
    assert blocker.read_text() == "mine"


def test_output_dir_that_is_a_file_stops_the_run_cleanly(recipe, tmp_path, capsys):
    blocker = tmp_path / "runs_file"
    blocker.write_text("")
    code, text = cli(capsys, "run", str(recipe), "--set", f"experiment.output_dir={blocker}", "--no-progress")
    assert code == 1 and "experiment.output_dir" in text and "is a file" in text


def test_a_run_that_fails_on_its_data_leaves_no_empty_output_dir(recipe, tmp_path, capsys):
    out = tmp_path / "fresh" / "runs"
    code, text = cli(
        capsys, "run", str(recipe), "--set", f"experiment.output_dir={out}", "--set", "data.root=/nowhere"
    )
    assert code == 1 and "/nowhere" in text
    assert not (tmp_path / "fresh").exists()


def test_export_size_zero_names_the_multiple(run_dir, tmp_path, capsys):
    code, text = cli(capsys, "export", str(run_dir), "--size", "0", "--out-dir", str(tmp_path / "x"))
    assert code == 1 and "--size 0" in text and "multiple of 32" in text


def test_resume_given_a_checkpoint_file_names_the_run_directory(run_dir, capsys):
    code, text = cli(capsys, "run", "--resume", str(run_dir / "checkpoints" / "latest.pt"))
    assert code == 1 and f"i2i run --resume {run_dir}" in text


def test_a_checkpoint_whose_recipe_is_not_a_table_is_refused(run_dir, tmp_path, capsys):
    state = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=True)
    state["recipe"] = [1, 2, 3]
    bad = tmp_path / "bad.pt"
    torch.save(state, bad)
    with pytest.raises(CheckpointError, match="stored recipe is not a table"):
        load_checkpoint(bad)
    code, text = cli(capsys, "translate", str(bad), str(run_dir), str(tmp_path / "o"))
    assert code == 1 and "stored recipe" in text


def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint({"step": 1}, tmp_path / "latest.pt")

    def full(*args, **kwargs):
        raise RuntimeError(
            "[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file"
        )

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(CheckpointError, match="disk is probably full.*previous latest.pt is unchanged"):
        save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]  # no temporary file left


def test_a_log_that_is_a_folder_is_a_clear_error(run_dir, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    (copy / "log.jsonl").unlink()
    (copy / "log.jsonl").mkdir()
    code, text = cli(capsys, "run", "--resume", str(copy), "--set", "train.max_steps=2", "--no-progress")
    assert code == 1 and "log.jsonl is a folder" in text


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_pipes_never_block(run_dir, inputs, tmp_path, capsys):
    fifo = tmp_path / "recipe.toml"
    os.mkfifo(fifo)
    code, text = cli(capsys, "validate", str(fifo))
    assert code == 1 and "not a regular file" in text
    os.mkfifo(inputs / "pipe.png")
    code, text = cli(capsys, "translate", str(run_dir), str(inputs), str(tmp_path / "out"))
    assert code == 0 and "Translated 1 images" in text and "pipe.png" in text


def test_decompression_bombs_and_very_large_images_in_translate(run_dir, tmp_path, capsys, monkeypatch):
    folder = tmp_path / "big"
    folder.mkdir()
    Image.new("RGB", (64, 32)).save(folder / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1500)  # 2048 pixels: a warning, not a refusal
    code, text = cli(capsys, "translate", str(run_dir), str(folder), str(tmp_path / "o1"))
    assert code == 0 and "very large" in text and "64x32" in text
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # over twice the limit: Pillow refuses
    code, text = cli(capsys, "translate", str(run_dir), str(folder), str(tmp_path / "o2"))
    assert code == 1 and "decompression bomb" in text and "big.png" in text


# -- the data scan at the start of a run -------------------------------------------------------------
def run_on_bad_data(capsys, recipe: Path, tmp_path: Path, *sets: str) -> tuple[int, str]:
    """``i2i run`` on :func:`bad_data` (all 43 items), with extra ``--set`` values."""
    root = bad_data(tmp_path)
    args = ["run", str(recipe), "--no-progress"]
    for value in (f"data.root={root}", "data.max_items=100", *sets):
        args += ["--set", value]
    return cli(capsys, *args)


def test_bad_files_are_all_reported_before_training(recipe, tmp_path, capsys):
    code, text = run_on_bad_data(capsys, recipe, tmp_path)
    assert code == 1 and "3 of 43 items" in text
    for name in ("zz_empty.jpg", "zz_cut.jpg", "zz_text.png"):
        assert name in text
    assert "data.skip_bad" in text and "Run directory" not in text


def test_skip_bad_trains_on_the_rest_and_says_how_many(recipe, tmp_path, capsys):
    code, text = run_on_bad_data(
        capsys, recipe, tmp_path, "data.skip_bad=true", "train.max_steps=2", "train.evaluate=false"
    )
    assert code == 0, text
    assert "left out 3 of 43 items" in " ".join(text.split())


def test_data_verify_checks_any_recipe(recipe, tmp_path, capsys):
    root = bad_data(tmp_path)
    Image.new("RGB", (300, 256)).save(root / "test" / "single.png")
    code, text = cli(
        capsys,
        "data",
        "verify",
        str(recipe),
        "--set",
        f"data.root={root}",
        "--set",
        "data.max_items=100",
        "--json",
    )
    assert code == 1
    payload = json.loads(text[: text.rindex("}") + 1])
    train_split, test_split = payload["splits"]
    assert train_split["items"] == 43 and len(train_split["bad"]) == 3
    assert train_split["sizes"] == {"512x256": 40}
    assert test_split["bad"] == [] and "not twice as wide" in test_split["warnings"][0]
    code, text = cli(capsys, "data", "verify", str(recipe))
    assert code == 0 and "train" in text and "512x256: 4" in text
    code, text = cli(capsys, "data", "verify", str(recipe), "--set", "data.root=/nowhere")
    assert code == 1 and "/nowhere" in text


# -- translate hints ------------------------------------------------------------------------------------
def test_translate_hints_at_pairs_and_at_squashing(run_dir, inputs, tmp_path, capsys):
    code, text = cli(capsys, "translate", str(run_dir), str(inputs), str(tmp_path / "o1"))
    assert code == 0 and "--aligned" in text
    code, text = cli(capsys, "translate", str(run_dir), str(inputs), str(tmp_path / "o2"), "--size", "32")
    assert code == 0 and "not square" in text and "--aligned" in text
    code, text = cli(capsys, "translate", str(run_dir), str(inputs), str(tmp_path / "o3"), "--aligned")
    assert code == 0 and "--aligned" not in text.replace("Translated", "")


def test_eval_out_dir_holds_only_this_evaluations_images(run_dir, tmp_path, capsys):
    out = tmp_path / "ev"
    stale = out / "eval" / "images" / "old.png"
    stale.parent.mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(stale)
    code, _ = cli(capsys, "eval", str(run_dir), "--out-dir", str(out), "--max-items", "2")
    assert code == 0 and not stale.exists()
    assert len(list(stale.parent.glob("*.png"))) == 2


# -- what a run will take, and what it says while it runs ----------------------------------------------
def test_validate_says_how_long_a_run_is_and_how_big_its_evaluation(recipe, capsys):
    code, text = cli(capsys, "validate", str(recipe))
    text = " ".join(text.split())
    assert code == 0
    assert "4 items, batch 1, 4 steps per epoch x 4 epochs = 16 steps." in text
    assert "Evaluation: 3 images of 'test' in 1 mode(s) (eval), 3 translations." in text
    code, text = cli(capsys, "validate", str(recipe), "--set", "train.max_steps=5")
    assert "capped at train.max_steps: 5 steps in all" in " ".join(text.split())


def test_without_a_terminal_progress_is_plain_lines_and_epochs_fit_the_cap(recipe, capsys):
    code, text = cli(
        capsys,
        "run",
        str(recipe),
        "--set",
        "train.max_steps=3",
        "--set",
        "train.log_every=2",
        "--no-progress",
    )
    assert code == 0
    lines = [ln for ln in text.splitlines() if ln.startswith("step ")]
    assert [ln.split(" (")[0] for ln in lines] == ["step 2/3", "step 3/3"]
    assert all("epoch 1/1" in ln and "it/s" in ln and "G_l1=" in ln for ln in lines)  # not "epoch 1/4"
    assert "Evaluation: 3 images" in text  # the evaluation's size, before training starts


def test_the_first_steps_give_an_estimate_of_the_run_length(recipe, capsys, monkeypatch):
    import i2i.reports.progress

    monkeypatch.setattr(i2i.reports.progress, "ESTIMATE_AFTER_STEPS", 3)
    code, text = cli(capsys, "run", str(recipe), "--set", "train.max_steps=6", "--no-progress")
    assert code == 0
    assert "s per step over the first 3 steps: the remaining 3 steps take about" in " ".join(text.split())


def test_resuming_a_finished_run_says_so(run_dir, tmp_path, capsys):
    copy = tmp_path / "done"
    shutil.copytree(run_dir, copy)
    code, text = cli(capsys, "run", "--resume", str(copy), "--no-progress")
    text = " ".join(text.split())
    assert code == 0 and "already complete (step 1 of 1)" in text and "step 2/" not in text


def test_the_report_shows_the_recipe_that_ran(run_dir, tmp_path):
    from i2i.reports.run_report import write_index

    copy = tmp_path / "edited"
    shutil.copytree(run_dir, copy)
    page = write_index(copy).read_text()
    assert "edited after the run" not in page
    recipe_file = copy / "recipe.toml"
    recipe_file.write_text(recipe_file.read_text().replace("seed = 3", "seed = 99"))
    page = write_index(copy).read_text()
    assert "edited after the run" in page and "seed = 3" in page and "seed = 99" not in page


# -- a fresh clone following the README ----------------------------------------------------------------
def test_export_writes_what_is_installed_and_names_the_missing_extra(run_dir, tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "onnxruntime" else real(n, *a)
    )
    code, text = cli(capsys, "export", str(run_dir), "--out-dir", str(tmp_path / "x"), "--size", "32")
    assert code == 0 and "generator.torchscript.pt" in text and "i2i[onnx]" in text
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # importing it now fails, as when not installed
    code, text = cli(capsys, "export", str(run_dir), "--format", "onnx", "--out-dir", str(tmp_path / "y"))
    assert code == 1 and "i2i[onnx]" in text


def test_a_failed_fetch_leaves_no_empty_folders(tmp_path, capsys):
    dest = tmp_path / "datasets" / "facades"
    code, text = cli(
        capsys, "data", "fetch", "facades", "--dest", str(dest), "--url", "file:///nowhere.tar.gz"
    )
    assert code == 1 and not (tmp_path / "datasets").exists()


def test_help_is_fast_and_plain():
    import subprocess
    import sys

    probe = "import sys, i2i.cli; print('torch' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip()
        == "False"
    )
    result = subprocess.run([sys.executable, "-m", "i2i", "run", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "<bool>" not in result.stdout
    assert "--no-progress" in result.stdout and "plain line" in " ".join(result.stdout.split())


def test_the_docs_data_tables_are_valid_recipes(capsys, tmp_path):
    import re

    import tomllib

    repo = Path(__file__).resolve().parents[1]
    base = tomllib.loads((repo / "recipes" / "facades_quick.toml").read_text())
    for doc in ("samples/facades_mini/README.md", "docs/own-data.md"):
        blocks = re.findall(r"```toml\n(.*?)```", (repo / doc).read_text(), re.S)
        assert blocks, doc
        for block in blocks:
            table = tomllib.loads(block)
            recipe = {**base, **table}
            path = tmp_path / "r.toml"
            import tomli_w

            path.write_text(tomli_w.dumps(recipe))
            code, text = cli(capsys, "validate", str(path))
            assert code == 0, (doc, text)


# -- real SIGKILLs -------------------------------------------------------------------------------------
KILL_AFTER_STEPS = (5, 14, 23)  # kills once the log reaches these steps, of 32 (epochs end at 4, 8, ...)


def _logged_step(log: Path) -> int:
    """The last step in a log that another process may be writing (a partial last line is skipped)."""
    steps = [0]
    for line in log.read_text().splitlines() if log.exists() else []:
        try:
            steps.append(json.loads(line)["step"])
        except (ValueError, KeyError):
            pass
    return max(steps)


def _losses(run: Path) -> dict[int, dict[str, float]]:
    from i2i.reports.run_report import read_log

    return {
        r["step"]: {k: v for k, v in r.items() if k[:2] in ("D_", "G_")} for r in read_log(run / "log.jsonl")
    }


def test_sigkill_at_any_moment_then_resume_matches_an_uninterrupted_run(recipe, tmp_path):
    """SIGKILL (no handler runs) at several moments; each resume continues from the last
    latest.pt, and the finished log equals an uninterrupted run's, step for step."""
    import signal
    import subprocess
    import time

    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    # latest.pt every ~0.1 s of training as well as every epoch: kills land between and during writes
    sets = [
        "--set",
        "train.epochs=6",  # with epochs_decay 2: 8 epochs of 4 steps, so every kill lands mid-run
        "--set",
        "train.checkpoint_minutes=0.002",
        "--set",
        "train.evaluate=false",
    ]
    base = [sys.executable, "-m", "i2i", "run", "--no-progress"]
    ref = subprocess.run(
        [*base, str(recipe), *sets, "--set", "experiment.output_dir=ref"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
    )
    assert ref.returncode == 0, ref.stderr
    run = tmp_path / "runs" / "tiny"
    log = run / "log.jsonl"
    command = [*base, str(recipe), *sets]
    for after in KILL_AFTER_STEPS:
        proc = subprocess.Popen(
            command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None and _logged_step(log) < after:
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        reached = _logged_step(log)  # a few steps past `after`: the kill is not instantaneous
        assert load_checkpoint(run)["step"] <= reached  # the checkpoint always loads
        command = [*base, "--resume", str(run)]  # the run's own recipe.toml, --set values included
    # Once more, killed while a background write is under way: each write's fsync is slowed down
    # (a sitecustomize in the child), and the kill comes once a step has ended during one write.
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(
        "import os, time\n_fsync = os.fsync\n"
        "def _slow(fd):\n    time.sleep(0.5)\n    _fsync(fd)\nos.fsync = _slow\n"
    )
    before = load_checkpoint(run)["step"]
    slow = {**env, "PYTHONPATH": os.pathsep.join([str(hooks), env.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        command, cwd=tmp_path, env=slow, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    # temporary file (one write) -> the logged step and the time when it appeared
    first_seen: dict[str, tuple[int, float]] = {}
    deadline, kill = time.time() + 120, False
    while time.time() < deadline and proc.poll() is None and not kill:
        step, now = _logged_step(log), time.time()
        for tmp in (run / "checkpoints").glob(".*.tmp"):
            seen_step, seen_at = first_seen.setdefault(tmp.name, (step, now))
            # training went on during this write, and its fsync (0.5 s) is far from over
            kill |= step > seen_step and now - seen_at < 0.25
        time.sleep(0.002)
    assert proc.poll() is None, "the run ended before a write overlapped a step"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert list((run / "checkpoints").glob(".*.tmp")), "the kill did not land during a write"
    assert load_checkpoint(run)["step"] >= before  # the previous latest.pt is intact and loads
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert not list((run / "checkpoints").glob(".*.tmp"))
    got, want = _losses(run), _losses(tmp_path / "ref" / "tiny")
    assert list(got) == list(range(1, 33)) == list(want)  # 8 epochs of 4 steps
    for step in want:
        assert got[step] == pytest.approx(want[step], rel=1e-6, abs=1e-7), step


class _Payload:
    """Unpickling this would create the file MARKER: proof that pickled code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("command", ["eval", "export", "translate", "resume", "eval-file"])
def test_a_hostile_checkpoint_runs_no_code_on_any_path(command, run_dir, inputs, tmp_path, capsys):
    marker = tmp_path / "PWNED"
    hostile_run = tmp_path / "hostile_run"
    shutil.copytree(run_dir, hostile_run)
    state = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=True)
    state["generator"]["payload"] = _Payload(marker)
    torch.save(state, hostile_run / "checkpoints" / "latest.pt")
    args = {
        "eval": ["eval", str(hostile_run)],
        "export": ["export", str(hostile_run), "--out-dir", str(tmp_path / "x")],
        "translate": ["translate", str(hostile_run), str(inputs), str(tmp_path / "o")],
        "resume": ["run", "--resume", str(hostile_run), "--no-progress"],
        "eval-file": ["eval", str(hostile_run / "checkpoints" / "latest.pt")],
    }[command]
    code, text = cli(capsys, *args)
    assert code == 1 and "arbitrary code" in " ".join(text.split())
    assert not marker.exists()


def test_a_signal_during_the_ranks_agreement_is_not_lost(recipe):
    """With several processes the per-step stop flag goes through an all-reduce; a SIGTERM landing
    while that runs used to be overwritten by the agreed (older) value, and the run went on."""
    import signal

    from test_training import resolved

    from i2i.assembly.host import get_host
    from i2i.training.start import start_run

    trainer = start_run(resolved(recipe), get_host(), show_progress=False)
    agree = trainer.world.agree

    def agree_then_signal(*flags):
        result = agree(*flags)
        if trainer.step == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # its handler runs before agree() returns
        return result

    object.__setattr__(trainer.world, "agree", agree_then_signal)  # World is a frozen dataclass
    result = trainer.run()
    assert result.interrupted and result.step == 4  # seen at the next step's agreement


def test_eval_names_every_bad_file_up_front(run_dir, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(SAMPLE, root, ignore=shutil.ignore_patterns("*.md"))
    (root / "test" / "0_empty.jpg").write_bytes(b"")  # first: the run read only 4 items
    (root / "test" / "0_text.png").write_text("no image")
    code, text = cli(
        capsys, "eval", str(run_dir), "--data-root", str(root), "--out-dir", str(tmp_path / "ev")
    )
    text = " ".join(text.split())
    assert code == 1 and "2 of 4 items" in text and "0_empty.jpg" in text and "0_text.png" in text
    assert not (tmp_path / "ev").exists()  # stopped before any work
