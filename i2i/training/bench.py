"""``i2i bench RECIPE``: how fast the recipe trains and translates here, and what each speed-up gives.

Every variant (the plain path, each optimisation alone, all of them together) runs in a fresh
process, because some settings (the allocator) hold for a whole process; variants alternate over
the repeats so that machine noise hits them alike. Each child builds the run exactly as ``i2i run``
would (same seed, same initial weights, same batches), records the losses of its first steps,
skips the warm-up, and times data loading and the step separately. The parent reports medians with
min/max over repeats and every speed as a ratio to the plain path of the same invocation.
"""

from __future__ import annotations

import copy
import io
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from i2i.errors import I2IError
from i2i.speed.options import decide

#: ``[speed]`` with everything off: the plain path.
ALL_OFF = {
    "amp": "off",
    "channels_last": False,
    "compile": False,
    "cuda_graphs": False,
    "cudnn_benchmark": False,
    "tf32": "off",
    "allocator": False,
}
#: Relative loss difference accepted on the first steps against the plain path, by the device type
#: and the precision a variant computes in. Over the first steps the losses move by about 1-3 unit
#: roundoffs of the format the products are rounded to (measured on the CPU, tests/test_speed.py:
#: fused Adam and channels-last 1.6e-7 and 1.1e-7 vs fp32's 6e-8; bf16 autocast 2.5e-3 vs bf16's
#: 3.9e-3). fp32 on the CPU: 1e-3, a wide margin. On CUDA even an fp32 variant runs other kernels
#: than the plain path (cuDNN picks its algorithms per memory format and, with cudnn_benchmark, by
#: timing; some, like Winograd, round more): 5e-3. TF32 keeps 10 of fp32's 23 mantissa bits (unit
#: roundoff 4.9e-4): 1e-2, 7x over three roundoffs. bf16 (7 bits, 3.9e-3): 5e-2, 4x over three.
#: Devices other than the CPU use the CUDA values.
TOLERANCE: dict[tuple[str, str], float] = {
    ("cpu", "fp32"): 1e-3,
    ("cuda", "fp32"): 5e-3,
    ("cuda", "tf32"): 1e-2,
    ("cpu", "bf16"): 5e-2,
    ("cuda", "bf16"): 5e-2,
}
#: For what is not rounding: the decoded cache's float resize (8-bit levels rounded otherwise) and
#: channels-last dropout masks (other masks, same distribution).
APPROXIMATE_TOLERANCE = 5e-2


def loss_tolerance(device_type: str, precision: str, approximate: bool = False) -> float:
    """The relative loss difference :func:`bench` accepts for a variant (see :data:`TOLERANCE`)."""
    device = "cpu" if device_type == "cpu" else "cuda"
    if precision == "tf32" and device == "cpu":
        precision = "fp32"  # TF32 exists on CUDA only; the CPU computes the variant in fp32
    tol = TOLERANCE[(device, precision)]
    return max(tol, APPROXIMATE_TOLERANCE) if approximate else tol


#: Dense peak TFLOP/s (vendor figures) for the fraction-of-peak column, by device-name fragment.
PEAK_TFLOPS = {
    "H200": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4},
    "H100": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4},
    "A100": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0},
    "L4": {"fp32": 30.3, "tf32": 60.0, "bf16": 121.0},
}


@dataclass
class Variant:
    """One way of running the step: the plain path changed by ``speed``, ``adam`` and ``cache``."""

    name: str
    label: str
    speed: dict[str, Any] = field(default_factory=dict)
    adam: str = "default"  # "default": torch's choice (the per-tensor loop on CPU); "fused": optim.fused
    cache: str = "off"
    approximate: bool = False  # device-side resizing or other dropout masks: the wider tolerance
    precision: str = "fp32"  # "fp32", "tf32" or "bf16": what its matmuls and convolutions round to


#: Precisions from the finest to the coarsest (a combined variant computes in its coarsest part's).
_PRECISIONS = ["fp32", "tf32", "bf16"]


def plan_variants(recipe: dict[str, Any], device: torch.device) -> list[Variant]:
    """The plain path, each optimisation the recipe turns on for ``device`` alone, and all together."""
    choices = decide(recipe.get("speed"), device)
    singles: list[Variant] = []
    if recipe["optim"]["fused"]:
        singles.append(Variant("fused_adam", "fused Adam", adam="fused"))
    for key in ("allocator", "cudnn_benchmark", "channels_last", "compile"):
        if getattr(choices, key):
            # channels_last draws dropout masks in memory order: other masks, same distribution.
            approximate = key == "channels_last"
            singles.append(Variant(key, key.replace("_", " "), speed={key: True}, approximate=approximate))
    if choices.tf32 and device.type == "cuda":
        singles.append(
            Variant("tf32", "TF32 matmuls and convolutions", speed={"tf32": "on"}, precision="tf32")
        )
    if choices.amp == "bf16":
        singles.append(Variant("amp_bf16", "bf16 autocast", speed={"amp": "bf16"}, precision="bf16"))
    if recipe["data"].get("cache") == "decoded":
        singles.append(Variant("decoded_cache", "decoded cache", cache="decoded", approximate=True))
    plain = Variant("plain", "plain (eager, fp32, default Adam, default allocator, DataLoader)")
    if len(singles) <= 1:
        return [plain, *singles]
    together = Variant("all", "all of them (the recipe as it runs)")
    for v in singles:
        together.speed.update(v.speed)
        together.adam = "fused" if v.adam == "fused" else together.adam
        together.cache = "decoded" if v.cache == "decoded" else together.cache
        together.approximate |= v.approximate
        together.precision = max(together.precision, v.precision, key=_PRECISIONS.index)
    return [plain, *singles, together]


# -- the child: one variant in one fresh process ---------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _batches(trainer) -> Iterator[dict[str, Any]]:
    epoch = 0
    while True:
        trainer.sampler.set_epoch(epoch)
        yield from trainer.loader
        epoch += 1


def _plain_adam(trainer) -> None:
    """Replace every optimiser by ``torch.optim.Adam`` with torch's default implementation choice."""
    for part in trainer.optimised.values():
        old = part.optimizer
        groups = [
            {"params": g["params"], "lr": g["lr"], "betas": g["betas"], "weight_decay": g["weight_decay"]}
            for g in old.param_groups
        ]
        part.optimizer = torch.optim.Adam(groups)


def _inference(generator, shape: tuple[int, ...], batch: int, device, speed, runs: int) -> float:
    """Images per second of ``generator`` in eval mode on random inputs of ``shape``."""
    x = speed.inputs(torch.rand(batch, *shape) * 2 - 1)
    generator.eval()
    times = []
    with torch.inference_mode(), speed.autocast():
        for i in range(runs + 2):
            start = time.perf_counter()
            generator(x)
            _sync(device)
            if i >= 2:
                times.append(time.perf_counter() - start)
    generator.train()
    return batch / statistics.median(times)


def _reset_peak_resident() -> None:
    """Linux: start the process's resident-memory high-water mark (VmHWM) afresh."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_resident_bytes() -> int | None:
    """Linux: the process's peak resident memory since :func:`_reset_peak_resident` (None elsewhere):
    the networks, optimiser states, data and the step's activations, on the CPU."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def run_variant(recipe: dict[str, Any], variant: Variant, options: dict[str, Any]) -> dict[str, Any]:
    """Build the run for ``variant`` in this process, then time it; returns the measurements."""
    from torch.utils.flop_counter import FlopCounterMode

    from i2i.assembly.host import get_host
    from i2i.training.trainer import Trainer

    recipe = copy.deepcopy(recipe)
    recipe["speed"] = {**recipe.get("speed", {}), **ALL_OFF, **variant.speed}
    recipe["optim"]["fused"] = variant.adam == "fused"
    recipe["data"]["cache"] = variant.cache
    with tempfile.TemporaryDirectory() as tmp:
        quiet = Console(file=io.StringIO())
        trainer = Trainer(recipe, get_host(), Path(tmp), console=quiet, show_progress=False)
    if variant.adam == "default":
        _plain_adam(trainer)
    device, speed = trainer.device, trainer.speed
    for net in trainer.model.networks().values():
        net.train()
    batches = _batches(trainer)
    _reset_peak_resident()  # the peak from here on: the step's, not importing torch's
    warmup, steps, loss_steps = options["warmup"], options["steps"], options["loss_steps"]
    losses, data_s, step_s = [], [], []
    batch: dict[str, Any] = {}
    for i in range(max(warmup + steps, loss_steps)):
        start = time.perf_counter()
        batch = next(batches)
        _sync(device)
        loaded = time.perf_counter()
        logs = trainer.train_step(batch)
        _sync(device)
        done = time.perf_counter()
        if i < loss_steps:
            losses.append({k: float(v) for k, v in logs.items()})
        if warmup <= i < warmup + steps:
            data_s.append(loaded - start)
            step_s.append(done - loaded)
    result: dict[str, Any] = {
        "variant": variant.name,
        "data_s": data_s,
        "compute_s": step_s,
        "losses": losses,
        "notes": speed.notes,
        "compiled": speed.compiled,  # what really ran (confirmed after the first step)
        "threads": torch.get_num_threads(),
        "batch_size": recipe["data"]["batch_size"],
        "device": str(device),
    }
    if options["flops"]:
        with FlopCounterMode(display=False) as counter:
            trainer.train_step(batch)
        result["flops_per_step"] = counter.get_total_flops()
    if options["inference"]:
        shape = tuple(batch["A"].shape[1:])
        G = trainer.model.translator("AtoB")
        runs = options["inference_runs"]
        result["inference_images_per_s"] = {
            str(b): _inference(G, shape, b, device, speed, runs) for b in (1, options["inference_batch"])
        }
    if device.type == "cpu":
        peak = _peak_resident_bytes()
        if peak:
            result["peak_memory_bytes"] = peak
    if device.type == "cuda":
        result["peak_memory_bytes"] = torch.cuda.max_memory_allocated(device)
        result["device_name"] = torch.cuda.get_device_name(device)
    return result


# -- the parent: alternate variants over repeats, summarise ----------------------------------------
def _stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _max_rel_diff(a: list[dict[str, float]], b: list[dict[str, float]]) -> float:
    worst = 0.0
    for x, y in zip(a, b, strict=False):
        for key in x.keys() & y.keys():
            if math.isfinite(x[key]) and math.isfinite(y[key]):
                worst = max(worst, abs(x[key] - y[key]) / max(abs(y[key]), 1e-3))
            elif x[key] != y[key]:
                return math.inf
    return worst


def _child(recipe: dict[str, Any], variant: Variant, options: dict[str, Any]) -> dict[str, Any]:
    spec = json.dumps({"recipe": recipe, "variant": asdict(variant), "options": options})
    proc = subprocess.run(
        [sys.executable, "-m", "i2i.training.bench"], input=spec, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise I2IError(f"i2i bench: the {variant.name!r} variant failed: {tail[0]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench(
    recipe: dict[str, Any],
    *,
    steps: int = 10,
    repeats: int = 3,
    warmup: int = 3,
    loss_steps: int = 3,
    inference_batch: int = 8,
    console: Console | None = None,
    show_progress: bool = True,
    only: list[str] | None = None,
) -> dict[str, Any]:
    """Measure ``recipe`` (resolved) on its device; returns the summary that ``--json`` writes.
    ``only`` keeps the named variants (e.g. ``["plain"]``: the recipe's step as it is)."""
    from i2i.assembly.build import pick_device

    console = console or Console(stderr=True)
    device = pick_device(recipe["experiment"]["device"])
    variants = plan_variants(recipe, device)
    if only is not None:
        variants = [v for v in variants if v.name in only]
    runs: dict[str, list[dict[str, Any]]] = {v.name: [] for v in variants}
    with Progress(
        TextColumn("[bold]bench[/bold] {task.fields[what]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not show_progress,
    ) as progress:
        task = progress.add_task("bench", total=repeats * len(variants), what="")
        for r in range(repeats):
            order = variants if r % 2 == 0 else variants[::-1]
            for v in order:
                progress.update(task, what=f"{v.name} (repeat {r + 1}/{repeats})")
                extras = r == 0 and v.name in ("plain", variants[-1].name)
                options = {
                    "steps": steps,
                    "warmup": warmup,
                    "loss_steps": loss_steps,
                    "flops": r == 0 and v.name == "plain",
                    "inference": extras,
                    "inference_batch": inference_batch,
                    "inference_runs": max(3, min(steps, 10)),
                }
                runs[v.name].append(_child(recipe, v, options))
                progress.advance(task)
    return summarise(recipe, device, variants, runs, steps, repeats, warmup)


def summarise(recipe, device, variants, runs, steps, repeats, warmup) -> dict[str, Any]:
    plain = runs["plain"][0]
    batch = plain["batch_size"]
    flops = plain.get("flops_per_step")
    out: dict[str, Any] = {
        "recipe": recipe["experiment"]["name"],
        "device": plain["device"],
        "device_name": plain.get("device_name", ""),
        "threads": plain["threads"],
        "torch": torch.__version__,
        "batch_size": batch,
        "steps": steps,
        "repeats": repeats,
        "warmup": warmup,
        "flops_per_step": flops,
        "variants": {},
    }
    base_step = None
    for v in variants:
        reps = runs[v.name]
        total = [
            statistics.median(d + c for d, c in zip(r["data_s"], r["compute_s"], strict=True)) for r in reps
        ]
        entry: dict[str, Any] = {
            "label": v.label,
            "step_s": _stats(total),
            "data_s": _stats([statistics.median(r["data_s"]) for r in reps]),
            "compute_s": _stats([statistics.median(r["compute_s"]) for r in reps]),
            "notes": reps[0]["notes"],
        }
        med = entry["step_s"]["median"]
        entry["steps_per_s"] = 1 / med
        entry["images_per_s"] = batch / med
        if base_step is None:
            base_step = med
        entry["speedup"] = base_step / med
        if flops:
            entry["achieved_flop_per_s"] = flops / entry["compute_s"]["median"]
        tol = loss_tolerance(torch.device(plain["device"]).type, v.precision, v.approximate)
        diff = _max_rel_diff(reps[0]["losses"], plain["losses"])
        entry["losses_first_steps"] = reps[0]["losses"]
        entry["loss_max_rel_diff"] = diff
        entry["loss_tolerance"] = tol
        entry["precision"] = v.precision
        entry["losses_match"] = diff <= tol
        if "inference_images_per_s" in reps[0]:
            entry["inference_images_per_s"] = reps[0]["inference_images_per_s"]
        if "peak_memory_bytes" in reps[0]:
            entry["peak_memory_bytes"] = max(r["peak_memory_bytes"] for r in reps)
            peak = next((p for k, p in PEAK_TFLOPS.items() if k in plain.get("device_name", "")), None)
            if peak and flops:
                kind = v.precision  # fp32 (TF32 off), tf32 or bf16: the peak of what ran
                entry["fraction_of_peak"] = entry["achieved_flop_per_s"] / (peak[kind] * 1e12)
        out["variants"][v.name] = entry
    return out


def table(summary: dict[str, Any]) -> Table:
    """The summary as a rich table: one row per variant."""
    t = Table(
        title=f"i2i bench {summary['recipe']} on {summary['device']} {summary['device_name']} "
        f"({summary['threads']} threads, batch {summary['batch_size']}, median [min-max] of "
        f"{summary['repeats']} x {summary['steps']} steps)"
    )
    for col in ("variant", "step s", "img/s", "vs plain", "data s", "compute s", "GFLOP/s", "losses"):
        t.add_column(col, justify="left" if col == "variant" else "right")
    for name, e in summary["variants"].items():
        s = e["step_s"]
        gflops = f"{e['achieved_flop_per_s'] / 1e9:.1f}" if "achieved_flop_per_s" in e else "-"
        if "fraction_of_peak" in e:
            gflops += f" ({100 * e['fraction_of_peak']:.1f}% peak)"
        match = "same" if e["losses_match"] else "[red]DIFFER[/red]"
        t.add_row(
            f"{name}: {e['label']}",
            f"{s['median']:.4f} [{s['min']:.4f}-{s['max']:.4f}]",
            f"{e['images_per_s']:.2f}",
            f"{e['speedup']:.2f}x",
            f"{e['data_s']['median']:.4f}",
            f"{e['compute_s']['median']:.4f}",
            gflops,
            f"{match} ({e['loss_max_rel_diff']:.1e})",
        )
    return t


def describe_extras(summary: dict[str, Any]) -> list[str]:
    """Lines for what the table has no column for: FLOPs, inference, memory, notes."""
    lines = []
    if summary["flops_per_step"]:
        lines.append(f"FLOPs per training step: {summary['flops_per_step'] / 1e9:.2f} GFLOP")
    for name, e in summary["variants"].items():
        if "inference_images_per_s" in e:
            ips = ", ".join(f"batch {b}: {v:.2f} img/s" for b, v in e["inference_images_per_s"].items())
            lines.append(f"inference ({name}): {ips}")
        if "peak_memory_bytes" in e:
            lines.append(f"peak memory ({name}): {e['peak_memory_bytes'] / 2**20:.0f} MiB")
        lines += [f"{name}: {note}" for note in e["notes"]]
    return lines


def _main() -> None:
    spec = json.loads(sys.stdin.read())
    result = run_variant(spec["recipe"], Variant(**spec["variant"]), spec["options"])
    print(json.dumps(result))


if __name__ == "__main__":
    _main()
