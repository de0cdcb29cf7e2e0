"""``i2i run --nproc N``: the same command on N processes of this machine, started by torchrun.

It runs ``python -m torch.distributed.run --standalone --nproc-per-node N -m i2i run ...``, so
the processes are torchrun's in every respect (rendezvous, environment, failure handling); several
machines are started with torchrun itself (see docs/training.md). Rank 0 leaves the outcome in a
status file, which turns an interrupted run into exit code 130 here as in a single process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

#: Where rank 0 writes ``{"run_dir": ..., "step": ..., "interrupted": ...}`` for the launcher.
STATUS_ENV = "I2I_RUN_STATUS"


def launched() -> bool:
    """Whether torchrun (or another launcher with its environment) started this process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def torchrun_command(nproc: int, args: list[str]) -> list[str]:
    """The torchrun command line that runs ``i2i ARGS`` on ``nproc`` local processes."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "i2i",
        *args,
    ]


def write_status(outcome: dict[str, Any]) -> None:
    """Rank 0: tell a launching ``i2i run --nproc`` how the run ended (no-op without one)."""
    path = os.environ.get(STATUS_ENV)
    if path:
        Path(path).write_text(json.dumps(outcome, default=str), encoding="utf-8")


def launch(nproc: int, args: list[str]) -> int:
    """Run torchrun and return the exit code: 130 if the run was interrupted (and saved).

    Ctrl-C in a terminal reaches torchrun directly (it shares this process group) and torchrun
    passes it on to each worker once; this process ignores it meanwhile and passes on a SIGTERM.
    """
    with tempfile.TemporaryDirectory(prefix="i2i-launch-") as tmp:
        status = Path(tmp) / "status.json"
        env = {**os.environ, STATUS_ENV: str(status)}
        # torchrun would otherwise set 1 thread per process, with a warning; share the cores instead.
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
        proc = subprocess.Popen(torchrun_command(nproc, args), env=env)
        previous = {
            signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
            signal.SIGTERM: signal.signal(signal.SIGTERM, lambda *_: proc.send_signal(signal.SIGTERM)),
        }
        try:
            code = proc.wait()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        try:
            outcome = json.loads(status.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            outcome = {}
    if outcome.get("interrupted"):
        return 130
    return code
