"""tools/gpu-check.sh keeps working before any GPU runs it: its dry run prints and validates the
whole plan (and runs on every machine, with --dry-run where CUDA is present)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

import gpu_check  # noqa: E402


def test_the_dry_run_prints_and_validates_the_whole_plan_and_exits_0(tmp_path):
    done = subprocess.run(
        ["bash", str(REPO / "tools" / "gpu-check.sh"), "--dry-run", "--out", str(tmp_path)],
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "gpu-check.json").read_text())
    assert report["dry_run"] is True
    names = [s["name"] for s in report["steps"]]
    assert names == ["cuda_tests", "bench", "run_2000", "ddp_2gpu"]
    for step in report["steps"]:
        assert f"would run ({step['name']}" in done.stdout and step["command"] in done.stdout
        assert step["status"] in ("planned", "skipped")
    recipes = [s for s in report["steps"] if s["recipe_sets"] is not None]
    assert recipes and all(s["summary"]["recipe"] == "valid" for s in recipes)
    assert report["steps"][0]["summary"]["collected"] >= 1  # the tests marked cuda are found
    bench = report["steps"][1]["command"]
    for option in ("speed.compile=true", "speed.channels_last=true", 'speed.tf32="on"', 'speed.amp="bf16"'):
        assert option in bench  # every [speed] option, alone and together
    assert "train.max_steps=2000" in report["steps"][2]["command"]
    markdown = (tmp_path / "gpu-check.md").read_text()
    assert "| bench |" in markdown and "dry run" in markdown


def test_a_bad_setting_in_the_plan_fails_the_dry_run(monkeypatch, tmp_path):
    import pytest

    from i2i.errors import RecipeError

    monkeypatch.setattr(gpu_check, "ALL_SPEED", ["speed.compile=maybe"])
    with pytest.raises(RecipeError, match="speed.compile"):
        gpu_check.main(["--dry-run", "--out", str(tmp_path)])


def test_a_step_over_its_time_is_stopped_and_reported(tmp_path):
    step = gpu_check.Step("slow", "sleeps", [sys.executable, "-c", "import time; time.sleep(30)"], cap_s=60)
    gpu_check.run_step(step, budget_left=1.0)
    assert step.status == "timeout" and step.seconds < 10
    ok = gpu_check.Step("quick", "prints", [sys.executable, "-c", "print('hello')"], cap_s=60)
    gpu_check.run_step(ok, budget_left=60)
    assert ok.status == "ok" and "hello" in ok.output_tail


def test_the_bench_summary_lists_what_helps_within_tolerance(tmp_path):
    def variant(speedup, match):
        return {
            "label": "x",
            "step_s": {"median": 0.01 / speedup},
            "images_per_s": 100 * speedup,
            "speedup": speedup,
            "losses_match": match,
            "loss_max_rel_diff": 1e-4,
            "loss_tolerance": 1e-3,
        }

    path = tmp_path / "bench.json"
    variants = {"plain": variant(1.0, True), "compile": variant(1.5, True), "tf32": variant(2.0, False)}
    variants |= {"channels_last": variant(1.01, True), "all": variant(3.0, True)}
    path.write_text(json.dumps({"device_name": "GPU", "variants": variants}))
    summary = gpu_check.summarise_bench(path)
    assert summary["auto_candidates"] == ["compile"]  # tf32 changed the losses, channels_last is noise
