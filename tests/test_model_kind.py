"""The training step as a plugin (the `model` kind): pix2pix through it is the pix2pix of before."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: The quick recipe's first three steps, as logged by the trainer before the step became a model
#: plugin (float.hex of each value; one CPU thread, so the sums are reduced in one order).
BEFORE_MODEL_KIND = [
    {
        "D_real": "0x1.cd1a660000000p-1",
        "D_fake": "0x1.67bfbc0000000p-1",
        "D_total": "0x1.9a6d100000000p-1",
        "G_cgan": "0x1.04d7240000000p+0",
        "G_l1": "0x1.45fa400000000p-2",
        "G_total": "0x1.06d23c0000000p+5",
    },
    {
        "D_real": "0x1.a4de7e0000000p-1",
        "D_fake": "0x1.7c632a0000000p-1",
        "D_total": "0x1.90a0d40000000p-1",
        "G_cgan": "0x1.9ab5d80000000p-1",
        "G_l1": "0x1.03389a0000000p-1",
        "G_total": "0x1.9b73480000000p+5",
    },
    {
        "D_real": "0x1.9588440000000p-1",
        "D_fake": "0x1.7a44f00000000p-1",
        "D_total": "0x1.87e69a0000000p-1",
        "G_cgan": "0x1.9ac4440000000p-1",
        "G_l1": "0x1.0c03180000000p-1",
        "G_total": "0x1.a92fe80000000p+5",
    },
]

_RUN = """
import json, sys, torch
torch.set_num_threads(1)
import i2i
r = i2i.train("recipes/facades_quick.toml", {"train.max_steps": 3, "train.log_every": 1,
    "train.evaluate": False, "train.tensorboard": False, "train.sample_every": 0,
    "experiment.output_dir": sys.argv[1]}, progress=False)
for line in open(r.run_dir / "log.jsonl"):
    values = json.loads(line)
    print(json.dumps({k: float(v).hex() for k, v in values.items() if k[:2] in ("D_", "G_")}))
"""


def quick_losses(out: Path) -> list[dict[str, str]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", _RUN, str(out)], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def test_pix2pix_losses_are_bit_identical_to_before_the_model_kind(tmp_path):
    assert quick_losses(tmp_path) == BEFORE_MODEL_KIND
