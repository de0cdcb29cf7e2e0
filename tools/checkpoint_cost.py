"""What a recipe's checkpoints take on disk, and what one save costs the training loop (docs/training.md).

    python tools/checkpoint_cost.py recipes/facades_pix2pix.toml --set 'data.root="datasets/facades"'

Builds the recipe's run on the CPU and takes a step (so that the optimisers' state exists), then
reports the bytes of ``latest.pt`` and of an epoch snapshot, the total over the snapshots that
``train.checkpoint_every`` writes in the whole run (before: each snapshot held the optimisers), and
the time a save holds the loop: before (a finiteness check of every weight, then the synchronous
write) and now (the finiteness screen and the copy off the device; the write goes on in the
background and is timed too).
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console

from i2i.assembly.host import get_host
from i2i.assembly.sources import resolved
from i2i.runs.checkpoint import FORMAT, FORMAT_VERSION, save_checkpoint, snapshot_of
from i2i.training.trainer import Trainer


def nbytes(state: dict) -> int:
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **state}, buffer)
    return buffer.tell()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipe")
    parser.add_argument("--set", dest="sets", action="append", default=[])
    parser.add_argument("--repeats", type=int, default=2, help="saves timed each way")
    args = parser.parse_args()
    sets = ['experiment.device="cpu"', "data.num_workers=0", *args.sets]
    recipe = resolved(args.recipe, get_host(), sets)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(
            recipe, get_host(), Path(tmp), console=Console(file=io.StringIO()), show_progress=False
        )
        trainer.sampler.set_epoch(0)
        batches = iter(trainer.loader)
        steps = []
        for _ in range(args.repeats + 1):
            start = time.perf_counter()
            trainer.train_step(next(batches))
            steps.append(time.perf_counter() - start)
        state = trainer.state_dict()
        full, snapshot = nbytes(state), nbytes(snapshot_of(state))
        before, now, background = [], [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            weights = [
                t
                for _, net in trainer.model.named_children()
                if net is not None
                for t in (*net.parameters(), *net.buffers())
                if t.is_floating_point()
            ]
            bool(torch.stack([torch.isfinite(t).all() for t in weights]).all())
            save_checkpoint(trainer.state_dict(), Path(tmp) / "synchronous.pt")
            before.append(time.perf_counter() - start)
            start = time.perf_counter()
            trainer.save()
            queued = time.perf_counter()
            trainer.wait_for_saves()
            now.append(queued - start)
            background.append(time.perf_counter() - queued)
            trainer._saved = (-1, 0.0)  # the same step again: save it anyway
    train = recipe["train"]
    epochs = train["epochs"] + train["epochs_decay"]
    count = epochs // train["checkpoint_every"] if train["checkpoint_every"] else 0
    median = statistics.median
    gb = 1e9
    name = recipe["experiment"]["name"]
    print(
        f"{name}: latest.pt {full / 1e6:.1f} MB, "
        f"epoch snapshot {snapshot / 1e6:.1f} MB ({snapshot / full:.4f})"
    )
    print(
        f"{count} snapshots over {epochs} epochs: {count * full / gb:.2f} GB before, "
        f"{count * snapshot / gb:.2f} GB now; with latest.pt {(count + 1) * full / gb:.2f} GB before, "
        f"{(count * snapshot + full) / gb:.2f} GB now"
    )
    for keep in (10, 5):
        if keep < count:
            print(f"  train.keep_last = {keep}: {(keep * snapshot + full) / 1e9:.2f} GB")
    step = median(steps[1:])
    print(
        f"step {step:.2f} s; a save holds the loop {median(before):.2f} s before, {median(now):.2f} s now "
        f"(then {median(background):.2f} s of writing in the background)"
    )
    every = 60 * train["checkpoint_minutes"]
    if every > 0:
        minutes = train["checkpoint_minutes"]
        print(
            f"  a save every {minutes:g} min: {100 * median(before) / every:.3f} % of the training time "
            f"before, {100 * median(now) / every:.3f} % now"
        )


if __name__ == "__main__":
    sys.exit(main())
