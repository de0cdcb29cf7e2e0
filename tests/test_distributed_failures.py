"""A 2-process run (torchrun, gloo on the CPU) that loses a worker or is interrupted ends with one
paragraph saying what happened and how to continue, never a launcher traceback; a killed worker's
run resumes to the losses of an uninterrupted run (issue 15)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import toy_recipe
from test_distributed import descendants, worker_rank

from i2i.reports.run_report import read_log
from i2i.runs.checkpoint import load_checkpoint

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds workers through /proc")

LOSSES = ["D_real", "D_fake", "G_cgan", "G_l1", "G_total", "D_total"]
#: 4 epochs of 4 steps (8 items, 2 processes x batch 1), latest.pt every ~0.1 s as well.
SETS = ["--set=train.max_steps=16", "--set=train.checkpoint_minutes=0.002"]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "i2i", "run", *args, "--no-progress", "--nproc", "2"]


def logged_step(log: Path) -> int:
    steps = [0]
    for line in log.read_text().splitlines() if log.exists() else []:
        try:
            steps.append(json.loads(line)["step"])
        except (ValueError, KeyError):
            pass
    return max(steps)


def start(recipe: Path, name: str, *sets: str, after: int) -> tuple[subprocess.Popen, Path]:
    """``i2i run --nproc 2`` in its own process group, once its log reaches step ``after``."""
    run = recipe.parent / "runs" / name
    proc = subprocess.Popen(
        command(str(recipe), f"--set=experiment.name={name}", *sets),
        cwd=recipe.parent,
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a group of its own, as a shell gives a foreground job
    )
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and logged_step(run / "log.jsonl") < after:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before the test could act on it"
    return proc, run


def finish(proc: subprocess.Popen) -> str:
    try:
        _, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        for pid in descendants(proc.pid):
            os.kill(pid, signal.SIGKILL)
        proc.kill()
        raise
    return stderr


def losses(run: Path) -> list[list[float]]:
    return [[r["step"], *(r[k] for k in LOSSES)] for r in read_log(run / "log.jsonl")]


def one_paragraph_with_the_resume_command(stderr: str, run: Path) -> None:
    assert "Traceback" not in stderr and "Internal error" not in stderr, stderr[-3000:]
    assert "please report" not in stderr and "SignalException" not in stderr, stderr[-3000:]
    assert f"i2i run --resume {run} --nproc 2" in " ".join(stderr.split()), stderr[-3000:]


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("dist_fail")
    return toy_recipe(
        tmp / "dist.toml",
        tmp / "runs",
        experiment={"name": "dist", "seed": 5},
        data={"max_items": 8},
        train={"epochs": 50, "evaluate": False},
    )


def test_a_killed_worker_is_explained_and_the_run_resumes_to_the_uninterrupted_losses(recipe):
    full = subprocess.run(
        command(str(recipe), "--set=experiment.name=full", *SETS),
        cwd=recipe.parent,
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert full.returncode == 0, full.stderr[-3000:]
    proc, run = start(recipe, "killed", *SETS, after=5)
    rank1 = [pid for pid in descendants(proc.pid) if worker_rank(pid) == "1"]
    assert len(rank1) == 1
    os.kill(rank1[0], signal.SIGKILL)
    stderr = finish(proc)
    assert proc.returncode == 1, stderr[-3000:]
    one_paragraph_with_the_resume_command(stderr, run)
    text = " ".join(stderr.split())
    step = load_checkpoint(run)["step"]
    assert "Process 1 of 2" in text and "killed by SIGKILL" in text
    assert f"The last checkpoint, saved at step {step}, is kept in {run}" in text
    assert step < 16
    # The printed command continues the run to the end, as if it had never been interrupted.
    again = re.search(r"Continue with: (i2i run --resume \S+ --nproc 2)", text).group(1).split()
    resumed = subprocess.run(
        [sys.executable, "-m", *again[:-2], "--no-progress", *again[-2:]],
        cwd=recipe.parent,
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    got, want = losses(run), losses(recipe.parent / "runs" / "full")
    assert [g[0] for g in got] == list(range(1, 17)) == [w[0] for w in want]
    for g, w in zip(got, want, strict=True):
        assert g == pytest.approx(w, rel=1e-6, abs=1e-7), (g, w)


@pytest.mark.parametrize("target", ["launcher", "group"])
def test_ctrl_c_stops_a_two_process_run_with_its_checkpoint_and_resume_command(recipe, target):
    """SIGINT to the launcher alone used to be ignored (the run trained to the end); Ctrl-C to the
    whole process group printed torchrun's tracebacks and no way to continue."""
    proc, run = start(recipe, f"ctrl_c_{target}", after=2)
    if target == "launcher":
        proc.send_signal(signal.SIGINT)
    else:
        os.killpg(proc.pid, signal.SIGINT)
    stderr = finish(proc)
    assert proc.returncode == 130, stderr[-3000:]
    one_paragraph_with_the_resume_command(stderr, run)
    step = load_checkpoint(run)["step"]
    assert step == logged_step(run / "log.jsonl") < 200  # stopped early, saved at the step it stopped
    assert f"Stopped at step {step}; checkpoint saved" in stderr
