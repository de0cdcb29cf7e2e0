#!/usr/bin/env bash
# The GPU acceptance check in one command (under 8 minutes on a CUDA machine): i2i bench of the paper
# recipe with every [speed] option alone and together, 2,000 steps of facades_pix2pix with its
# evaluation, a 2-GPU DDP run when two GPUs are present, the tests marked cuda. Writes
# OUT/gpu-check.json and OUT/gpu-check.md (default OUT: runs/gpu-check). Without CUDA: a dry run
# of the same plan (each command printed, each recipe validated), exit 0. See tools/gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
exec "$PYTHON" tools/gpu_check.py "$@"
