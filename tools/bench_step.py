"""Benchmark the pix2pix training step: i2i's step against a reference-style baseline.

The baseline is the step as the canonical pix2pix code runs it on a CPU: torch's default Adam
(the per-parameter loop on CPU) and the default glibc allocator. i2i's step uses the fused Adam
kernel and keeps large buffers in the heap (i2i/speed/allocator.py). Both run the same networks, data and
maths, each in its own fresh process (the allocator setting is process-wide), alternating, so
machine noise hits both alike. The result is a ratio of median step times from one invocation.

    python tools/bench_step.py                       # unet_256 + PatchGAN, 256x256, batch 1
    python tools/bench_step.py --size 128 --ngf 32   # the quick recipe's networks
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch

VARIANTS = ("baseline", "fused_adam", "i2i")
LABELS = {
    "baseline": "baseline (default Adam, default malloc)",
    "fused_adam": "fused Adam only",
    "i2i": "i2i (fused Adam, tuned malloc)",
}


def measure(variant: str, size: int, ngf: int, steps: int, warmup: int, seed: int) -> list[float]:
    """Time `steps` training steps of one variant in this process; returns seconds per step."""
    from i2i.assembly.build import build_model
    from i2i.assembly.host import get_host
    from i2i.assembly.recipe import resolve
    from i2i.speed.allocator import tune_allocator
    from i2i.speed.options import plain
    from i2i.speed.step import StepSpeed
    from i2i.training.trainer import Trainer

    if variant == "i2i":
        tune_allocator()
    fused = variant in ("i2i", "fused_adam")
    torch.manual_seed(seed)
    recipe = resolve(
        {
            "experiment": {"device": "cpu"},
            "data": {"name": "aligned", "root": "unused"},
            "generator": {"name": "unet_256" if size >= 256 else "unet_128", "ngf": ngf},
            "discriminator": {"name": "patchgan", "ndf": ngf},
            "losses": [{"name": "cgan"}, {"name": "l1", "weight": 100.0}],
            "optim": {"fused": fused},
        },
        get_host(),
    )
    model = build_model(recipe, get_host(), 3, 3)
    # A Trainer without a dataset: borrow its step, feed it fixed random images.
    trainer = Trainer.__new__(Trainer)
    trainer.model, trainer.device = model, torch.device("cpu")
    trainer.speed = StepSpeed(plain(), trainer.device)  # eager fp32: the step as the reference runs it
    opt = recipe["optim"]

    def adam(params):
        kwargs = dict(lr=opt["lr"], betas=(opt["beta1"], opt["beta2"]))
        if fused:
            return torch.optim.Adam(params, fused=True, **kwargs)
        return torch.optim.Adam(params, **kwargs)  # torch's default choice, as the reference

    trainer.opt_G = adam(model.generator.parameters())
    trainer.opt_D = adam(model.discriminator.parameters())
    batch = {"A": torch.rand(1, 3, size, size) * 2 - 1, "B": torch.rand(1, 3, size, size) * 2 - 1}
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        trainer.train_step(batch)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--ngf", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per process")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="alternating process pairs")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.size, args.ngf, args.steps, args.warmup, 0)))
        return
    results: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for r in range(args.rounds):
        for variant in VARIANTS if r % 2 == 0 else VARIANTS[::-1]:
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    variant,
                    "--size",
                    str(args.size),
                    "--ngf",
                    str(args.ngf),
                    "--steps",
                    str(args.steps),
                    "--warmup",
                    str(args.warmup),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            results[variant] += json.loads(out.stdout.strip().splitlines()[-1])
            print(
                f"round {r + 1}/{args.rounds} {variant:8s} median "
                f"{statistics.median(results[variant]):.3f} s/step",
                file=sys.stderr,
            )
    base = statistics.median(results["baseline"])
    steps = len(results["i2i"])
    print(f"size {args.size}, ngf {args.ngf}, {torch.get_num_threads()} threads, {steps} steps each")
    for variant, label in LABELS.items():
        t = statistics.median(results[variant])
        print(f"{label:42s} {t:.3f} s/step ({1 / t:.2f} img/s)  {base / t:.2f}x")


if __name__ == "__main__":
    main()
