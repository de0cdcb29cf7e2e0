"""The GPU acceptance check in one command: ``tools/gpu-check.sh [--out DIR] [--data-root PATH]``.

On a machine with CUDA it runs, within a time budget (7 min 40 s by default, under the 8 minutes a
first GPU session can spare), and writes ``OUT/gpu-check.json`` and ``OUT/gpu-check.md``:

1. the suite's tests marked ``cuda`` (``pytest -m cuda``);
2. ``i2i bench`` of the paper recipe (``recipes/facades_pix2pix.toml``) with every ``[speed]``
   option alone and all together: fused Adam, cuDNN autotuning, channels-last, torch.compile,
   TF32, bf16 autocast and the decoded data cache, each against the plain fp32 step;
3. 2,000 steps of the paper recipe with its evaluation (speed ``auto``: what a user gets);
4. 500 steps of a 2-process DDP run (NCCL), when the machine has two GPUs or more.

Without CUDA (or with ``--dry-run``) it says so, prints each command it would run, validates each
recipe with the command's settings, checks that the ``cuda`` tests are collected, writes the same
two files with every step "planned", and exits 0: CI runs this (tests/test_gpu_check.py), so the
plan keeps working until a GPU runs it. A ``[speed]`` option that helps and keeps the losses within
tolerance is listed as a candidate for ``MEASURED_ON_CUDA`` in ``i2i/speed/options.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "recipes" / "facades_pix2pix.toml"
#: Every [speed] option that runs on CUDA (cuda_graphs is not implemented: a note only).
ALL_SPEED = [
    "optim.fused=true",
    "speed.cudnn_benchmark=true",
    "speed.channels_last=true",
    "speed.compile=true",
    'speed.tf32="on"',
    'speed.amp="bf16"',
    'data.cache="decoded"',
]
BUDGET_S = 460


@dataclass
class Step:
    """One command of the plan, and what came of it."""

    name: str
    what: str
    argv: list[str]
    cap_s: int  # the most this step may take (less when the budget runs low)
    recipe_sets: list[str] | None = None  # validated in a dry run (an i2i command on PAPER)
    status: str = "planned"  # planned, ok, failed, timeout, skipped
    seconds: float = 0.0
    summary: dict[str, Any] = field(default_factory=dict)
    output_tail: str = ""

    @property
    def command(self) -> str:
        return shlex.join(self.argv)


def find_data_root(given: str | None) -> tuple[Path, str | None]:
    """The facades dataset to use, and a note when the bundled sample stands in for it."""
    candidates = [Path(given)] if given else []
    candidates += [REPO / "datasets" / "facades", REPO.parent / "shared" / "datasets" / "facades"]
    if os.environ.get("I2I_FACADES"):
        candidates.insert(0, Path(os.environ["I2I_FACADES"]))
    for root in candidates:
        if (root / "train").is_dir():
            return root, None
    sample = REPO / "samples" / "facades_mini"
    return sample, (
        f"the facades dataset was not found ({', '.join(str(c) for c in candidates)}): the bundled "
        f"sample {sample} stands in, so speeds are real but the evaluation is not the paper's"
    )


def plan(out: Path, data_root: Path, gpus: int, python: str) -> list[Step]:
    i2i = [python, "-m", "i2i"]
    stamp = time.strftime("%Y%m%d-%H%M%S")  # a new run directory each time: earlier ones are kept
    data = f"data.root={json.dumps(str(data_root))}"
    runs = f"experiment.output_dir={json.dumps(str(out / 'runs'))}"
    bench_sets = [data, *ALL_SPEED]
    run_sets = [data, runs, f'experiment.name="gpu_check_2000_{stamp}"', "train.max_steps=2000"]
    ddp_sets = [data, runs, f'experiment.name="gpu_check_ddp_{stamp}"', "train.max_steps=500"]
    ddp_sets.append("train.evaluate=false")

    def sets(values: list[str]) -> list[str]:
        return [f"--set={v}" for v in values]

    steps = [
        Step(
            "cuda_tests",
            "the suite's tests marked cuda",
            [python, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", str(REPO / "tests")],
            cap_s=120,
        ),
        Step(
            "bench",
            "i2i bench of the paper recipe: every [speed] option alone and all together",
            [*i2i, "bench", str(PAPER), *sets(bench_sets), "--steps", "20", "--repeats", "1", "--warmup", "5"]
            + ["--json", str(out / "bench.json"), "--no-progress"],
            cap_s=230,
            recipe_sets=bench_sets,
        ),
        Step(
            "run_2000",
            "2,000 steps of facades_pix2pix with its evaluation",
            [*i2i, "run", str(PAPER), *sets(run_sets), "--no-progress"],
            cap_s=150,
            recipe_sets=run_sets,
        ),
        Step(
            "ddp_2gpu",
            "500 steps on 2 GPUs (DDP, NCCL)",
            [*i2i, "run", str(PAPER), *sets(ddp_sets), "--nproc", "2", "--no-progress"],
            cap_s=100,
            recipe_sets=ddp_sets,
        ),
    ]
    if gpus < 2:
        steps[-1].status = "skipped"
        steps[-1].summary = {"why": f"this machine has {gpus} GPU(s); the DDP run needs 2"}
    return steps


def run_step(step: Step, budget_left: float) -> None:
    """Run ``step`` in its own process group, for at most its cap or what the budget has left."""
    limit = max(1.0, min(step.cap_s, budget_left))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "160"}
    start = time.perf_counter()
    proc = subprocess.Popen(
        step.argv,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=limit)
        step.status = "ok" if proc.returncode == 0 else "failed"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        step.status = "timeout"
    step.seconds = time.perf_counter() - start
    step.output_tail = "\n".join((output or "").splitlines()[-40:])


def summarise_bench(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    bench = json.loads(path.read_text())
    variants = {}
    for name, e in bench["variants"].items():
        variants[name] = {
            "label": e["label"],
            "step_ms": 1000 * e["step_s"]["median"],
            "images_per_s": e["images_per_s"],
            "speedup": e["speedup"],
            "losses_match": e["losses_match"],
            "loss_max_rel_diff": e["loss_max_rel_diff"],
            "loss_tolerance": e["loss_tolerance"],
            "peak_memory_mib": e.get("peak_memory_bytes", 0) / 2**20,
            "fraction_of_peak": e.get("fraction_of_peak"),
            "notes": e.get("notes", []),
        }
    candidates = [
        n
        for n, v in variants.items()
        if n not in ("plain", "all") and v["losses_match"] and v["speedup"] > 1.05
    ]
    return {"device_name": bench.get("device_name"), "variants": variants, "auto_candidates": candidates}


def summarise_run(run_dir: Path) -> dict[str, Any]:
    log = run_dir / "log.jsonl"
    if not log.is_file():
        return {}
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    summary: dict[str, Any] = {"steps": lines[-1]["step"] if lines else 0}
    if len(lines) >= 2:  # from the second log line: the first holds start-up and warm-up
        steps = lines[-1]["step"] - lines[0]["step"]
        seconds = lines[-1]["time"] - lines[0]["time"]
        summary["step_ms"] = 1000 * seconds / max(steps, 1)
    metrics = run_dir / "eval" / "eval" / "metrics.json"
    if metrics.is_file():
        summary["eval"] = {k: v["mean"] for k, v in json.loads(metrics.read_text())["metrics"].items()}
    return summary


def summarise_tests(output: str) -> dict[str, Any]:
    last = [
        line for line in output.splitlines() if " passed" in line or " failed" in line or "skipped" in line
    ]
    return {"result": last[-1].strip("= ") if last else output.strip().splitlines()[-1:]}


def dry_run(steps: list[Step], python: str) -> None:
    """Print every command, validate each recipe with its settings, check the cuda tests collect."""
    sys.path.insert(0, str(REPO))
    from i2i.assembly.host import get_host
    from i2i.assembly.sources import resolved

    for step in steps:
        print(f"would run ({step.name}, at most {step.cap_s} s): {step.command}")
        if step.recipe_sets is not None:
            resolved(PAPER, get_host(), step.recipe_sets)  # a bad setting raises here, naming it
            step.summary["recipe"] = "valid"
    collect = subprocess.run(
        [
            python,
            "-m",
            "pytest",
            "-m",
            "cuda",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
            str(REPO / "tests"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    collected = [line for line in collect.stdout.splitlines() if "::" in line]
    if collect.returncode not in (0, 5) or not collected:
        raise SystemExit(f"gpu-check: the tests marked cuda are not collected:\n{collect.stdout[-2000:]}")
    steps[0].summary["collected"] = len(collected)


def machine() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
        "gpus": torch.cuda.device_count() if torch.cuda.is_available() else 0,
    }
    if info["cuda"]:
        info["cuda_version"] = torch.version.cuda
        info["gpu_names"] = [torch.cuda.get_device_name(i) for i in range(info["gpus"])]
    return info


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_fmt(v) for v in value) or "none"
    return str(value)


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    where = ", ".join(m.get("gpu_names", [])) or "no GPU"
    lines = [
        f"# i2i GPU check ({'dry run' if report['dry_run'] else 'measured'})",
        "",
        f"{where}; torch {m['torch']}, Python {m['python']}; {report['seconds']:.0f} s of a "
        f"{report['budget_s']} s budget.",
        "",
    ]
    lines += [f"Note: {n}" for n in report["notes"]] + ([""] if report["notes"] else [])
    lines += ["| step | what | status | seconds | result |", "|---|---|---|---|---|"]
    for s in report["steps"]:
        result = "; ".join(f"{k}: {_fmt(v)}" for k, v in s["summary"].items() if k != "variants")
        lines.append(f"| {s['name']} | {s['what']} | {s['status']} | {s['seconds']:.0f} | {result} |")
    bench = next((s["summary"] for s in report["steps"] if s["name"] == "bench"), {})
    if bench.get("variants"):
        lines += ["", "| variant | step ms | img/s | vs plain | losses (max rel. diff / tolerance) |"]
        lines += ["|---|---|---|---|---|"]
        for name, v in bench["variants"].items():
            same = "same" if v["losses_match"] else "DIFFER"
            lines.append(
                f"| {name}: {v['label']} | {v['step_ms']:.2f} | {v['images_per_s']:.1f} | "
                f"{v['speedup']:.2f}x | {same} ({v['loss_max_rel_diff']:.1e} / {v['loss_tolerance']:.0e}) |"
            )
        lines += ["", f"Candidates for MEASURED_ON_CUDA: {', '.join(bench['auto_candidates']) or 'none'}."]
    lines += ["", "Commands:", ""] + [f"- `{s['command']}`" for s in report["steps"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tools/gpu-check.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(REPO / "runs" / "gpu-check"), help="folder for the results")
    parser.add_argument("--data-root", default=None, help="the facades dataset (train/, test/)")
    parser.add_argument("--budget", type=int, default=BUDGET_S, help="seconds for the whole check")
    parser.add_argument("--dry-run", action="store_true", help="print and validate the plan only")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    info = machine()
    dry = args.dry_run or not info["cuda"]
    notes = []
    if not info["cuda"]:
        notes.append("CUDA is not available on this machine: a dry run of the plan, nothing is measured")
        print(f"gpu-check: {notes[-1]}.")
    data_root, note = find_data_root(args.data_root)
    if note:
        notes.append(note)
        print(f"gpu-check: {note}.")
    python = sys.executable
    steps = plan(out, data_root, info["gpus"], python)
    start = time.perf_counter()
    if dry:
        dry_run(steps, python)
    else:
        for step in steps:
            if step.status == "skipped":
                continue
            left = args.budget - (time.perf_counter() - start)
            if left < 10:
                step.status, step.summary = "skipped", {"why": "the time budget is spent"}
                continue
            print(f"gpu-check: {step.name} ({step.what}), at most {min(step.cap_s, left):.0f} s")
            run_step(step, left)
            if step.name == "bench":
                step.summary.update(summarise_bench(out / "bench.json"))
            elif step.recipe_sets is not None:
                name = next(v for v in step.recipe_sets if v.startswith("experiment.name="))
                step.summary.update(summarise_run(out / "runs" / json.loads(name.split("=", 1)[1])))
            else:
                step.summary.update(summarise_tests(step.output_tail))
            print(f"gpu-check: {step.name} {step.status} in {step.seconds:.0f} s")
    report = {
        "dry_run": dry,
        "machine": info,
        "data_root": str(data_root),
        "budget_s": args.budget,
        "seconds": time.perf_counter() - start,
        "notes": notes,
        "steps": [{**asdict(s), "command": s.command} for s in steps],
    }
    (out / "gpu-check.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "gpu-check.md").write_text(markdown(report), encoding="utf-8")
    print(f"gpu-check: wrote {out / 'gpu-check.json'} and {out / 'gpu-check.md'}")
    failed = [s.name for s in steps if s.status in ("failed", "timeout")]
    if failed:
        print(f"gpu-check: {', '.join(failed)} did not pass; see the output tails in gpu-check.json")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
