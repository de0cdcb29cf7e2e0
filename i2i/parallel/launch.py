"""``i2i run --nproc N``: the same command on N processes of this machine, started by torchrun.

The launcher (the ``i2i run`` process you started) runs torchrun's agent in a child process,
``python -c AGENT --standalone --nproc-per-node N -m i2i run ...``, so the workers are torchrun's in
every respect (rendezvous, environment, failure detection); several machines are started with
torchrun itself (see docs/training.md). What this module adds around torchrun:

* **Stopping.** The agent runs in its own session, so a Ctrl-C in the terminal reaches the launcher
  only, whether it is sent to the launcher alone or to its whole process group. Each SIGINT or
  SIGTERM the launcher receives is passed on once to every worker, as SIGTERM, by the agent: the
  first makes the workers finish the step, agree, save and exit (rank 0 prints the resume command),
  a second aborts without saving, as in one process. The agent waits for the workers to finish on
  their own before torchrun closes the rest, so rank 0 is not killed while it saves or reports.
  If the launcher dies, the agent stops the workers the same way.
* **Reporting.** Rank 0 tells the launcher its run directory as soon as it holds it
  (:func:`announce_run_dir`) and how the run ended (:func:`write_status`). When a worker dies
  (killed, crashed) or the run stops without rank 0 reporting, the launcher says in one paragraph
  what happened, which checkpoint is kept and the command that continues the run; torchrun's own
  log lines and tracebacks are shown only with ``--debug`` (or I2I_DEBUG=1). Workers that lose
  contact with a dead peer stop without a message of their own (:func:`lost_peer_message`).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from i2i.errors import I2IError

#: Where rank 0 writes ``{"run_dir": ..., "step": ..., "interrupted": ...}`` for the launcher.
STATUS_ENV = "I2I_RUN_STATUS"
#: Where the agent writes what torchrun reported about failed workers.
FAILURES_ENV = "I2I_RUN_FAILURES"
DEBUG_ENV = "I2I_DEBUG"
#: Exit code of a worker or launcher whose run was stopped by a signal (and saved).
INTERRUPTED = 130
#: Seconds the agent waits for the remaining workers to end on their own once one has ended
#: (a graceful stop saves a checkpoint first) before torchrun signals them.
GRACE_S = 120.0

#: The agent: torchrun's ``run`` with i2i's signal and failure handling (see :func:`agent`).
_AGENT = "import sys; from i2i.parallel.launch import agent; sys.exit(agent(sys.argv[1:]))"


class DistributedRunFailed(I2IError):
    """A process of a distributed run died or could not start; the message says how to continue."""


def launched() -> bool:
    """Whether torchrun (or another launcher with its environment) started this process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def _debug() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def torchrun_command(nproc: int, args: list[str]) -> list[str]:
    """The command line that runs ``i2i ARGS`` on ``nproc`` local processes through torchrun."""
    return [
        sys.executable,
        "-c",
        _AGENT,
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "i2i",
        *args,
    ]


# -- what the workers tell the launcher --------------------------------------------------------------
def _update_status(path: str, changes: dict[str, Any]) -> None:
    target = Path(path)
    try:
        current = json.loads(target.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        current = {}
    if not isinstance(current, dict):
        current = {}
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps({**current, **changes}, default=str), encoding="utf-8")
        os.replace(tmp, target)
    except OSError:  # the launcher is gone (its folder with it): nobody to tell
        tmp.unlink(missing_ok=True)


def write_status(outcome: dict[str, Any]) -> None:
    """Rank 0: tell a launching ``i2i run --nproc`` how the run ended (no-op without one)."""
    path = os.environ.get(STATUS_ENV)
    if path:
        _update_status(path, outcome)


def announce_run_dir(run_dir: Path) -> None:
    """Rank 0: tell a launching ``i2i run --nproc`` which run directory it trains (no-op without
    one), so that a run whose processes die can still be resumed by name."""
    path = os.environ.get(STATUS_ENV)
    if path and launched():
        _update_status(path, {"run_dir": str(run_dir)})


#: What a collective raises when another process is gone (gloo, NCCL), in lower case.
_LOST_PEER = (
    "connection reset by peer",
    "connection closed by peer",
    "broken pipe",
    "socket closed",
    "remote process exited",
    "ncclremoteerror",
)


def lost_peer_message(exc: BaseException) -> str | None:
    """For a worker whose collective failed because another process died: the paragraph to show,
    ``""`` when its launcher will explain (the detail is left for it), or None for any other error."""
    if not launched() or not isinstance(exc, RuntimeError):
        return None
    text = str(exc)
    dist_error = type(exc).__name__ in ("DistBackendError", "DistNetworkError")
    if not dist_error and not any(k in text.lower() for k in _LOST_PEER):
        return None
    detail = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    if detail.startswith("[") and "] " in detail:  # gloo's "[path/pair.cc:545] Read error ..."
        detail = detail.split("] ", 1)[1]
    rank, size = os.environ.get("RANK", "?"), os.environ.get("WORLD_SIZE", "?")
    path = os.environ.get(STATUS_ENV)
    if path:
        try:
            Path(f"{path}.lost{rank}").write_text(detail, encoding="utf-8")
        except OSError:
            pass
        return ""
    return (
        f"Process {rank} of {size} lost contact with the other processes of the run ({detail}): "
        "one of them stopped (killed, crashed or out of memory?), so this one stops too. See the "
        "other processes' output for the cause; continue from the last checkpoint with --resume."
    )


# -- the agent: torchrun in a child process ----------------------------------------------------------
def agent(argv: list[str]) -> int:
    """Run torchrun with ``argv`` in this process: forward stop signals to the workers once each,
    let them end on their own, and record failures for the launcher instead of a traceback."""
    import logging
    import threading

    from torch.distributed.elastic.multiprocessing import api as mp_api
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    debug = _debug()
    if not debug:
        logging.disable(logging.CRITICAL)  # torchrun's log lines ("Sending process ... SIGTERM")
    contexts: list[Any] = []
    stops = [0]

    def workers() -> list[Any]:
        return [h.proc for c in contexts for h in getattr(c, "subprocess_handlers", {}).values()]

    def forward(signum: int, frame: Any) -> None:
        stops[0] += 1
        sig = signal.SIGTERM if stops[0] < 3 else signal.SIGKILL
        for ctx in contexts:
            for pid in ctx.pids().values():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass

    start, close = mp_api.PContext.start, mp_api.PContext.close

    def start_and_track(self: Any) -> None:
        contexts.append(self)
        start(self)
        if stops[0]:  # a stop that came before the workers existed
            forward(signal.SIGTERM, None)

    def close_after_grace(self: Any, *args: Any, **kwargs: Any) -> None:
        deadline = time.monotonic() + GRACE_S
        while time.monotonic() < deadline and any(p.poll() is None for p in workers()):
            time.sleep(0.02)
        close(self, *args, **kwargs)

    # torchrun registers its handler under this name when it starts the workers; it would raise in
    # the agent and signal the workers again on the way out: a second signal, which aborts them.
    mp_api._terminate_process_handler = forward
    mp_api.PContext.start = start_and_track
    mp_api.PContext.close = close_after_grace
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, forward)

    parent = os.getppid()

    def watch_parent() -> None:  # the launcher died (SIGKILL, terminal closed): stop the run
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch_parent, daemon=True).start()
    report = os.environ.get(FAILURES_ENV)
    try:
        run(get_args_parser().parse_args(argv))
        return 0
    except ChildFailedError as exc:
        if debug:
            raise
        failures = [
            {"rank": r, "exitcode": f.exitcode, "pid": f.pid, "signal": f.signal_name(), "time": f.timestamp}
            for r, f in sorted(exc.failures.items())
        ]
        if report:
            Path(report).write_text(json.dumps({"failures": failures, "stops": stops[0]}), encoding="utf-8")
        return 1
    except Exception as exc:
        if debug:
            raise
        if report:
            error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            Path(report).write_text(json.dumps({"agent_error": error, "stops": stops[0]}), encoding="utf-8")
        return 1


# -- the launcher ------------------------------------------------------------------------------------
def launch(nproc: int, args: list[str], console: Console | None = None) -> int:
    """Run ``i2i ARGS`` on ``nproc`` processes and return the exit code: 0 when the run finished,
    130 when it was stopped (rank 0, or this function, printed how to continue).

    A worker that died, and a run whose processes could not start, raise
    :class:`DistributedRunFailed` with one paragraph: what happened, which checkpoint is kept and
    the command that continues the run. An error a worker reported itself (a bad recipe, bad
    data) returns that worker's exit code: its message is already on the screen.
    """
    console = console or Console(stderr=True)
    with tempfile.TemporaryDirectory(prefix="i2i-launch-") as tmp:
        status, report = Path(tmp) / "status.json", Path(tmp) / "failures.json"
        env = {**os.environ, STATUS_ENV: str(status), FAILURES_ENV: str(report)}
        # torchrun would otherwise set 1 thread per process, with a warning; share the cores instead.
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
        # Its own session: a Ctrl-C in the terminal reaches this process only, which passes it on.
        proc = subprocess.Popen(torchrun_command(nproc, args), env=env, start_new_session=True)
        signals = [0]

        def stop(signum: int, frame: Any) -> None:  # the workers say that they are stopping
            signals[0] += 1
            proc.send_signal(signal.SIGTERM)

        previous = {}
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, stop)
        except ValueError:  # not the main thread: no handlers, the agent still stops with its workers
            pass
        try:
            while True:
                try:
                    code = proc.wait()
                    break
                except KeyboardInterrupt:  # a Ctrl-C between handlers: pass it on all the same
                    stop(signal.SIGINT, None)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        outcome = _read_json(status)
        failed = _read_json(report)
        lost = sorted(Path(tmp).glob("status.json.lost*"))
        lost_detail = lost[0].read_text(encoding="utf-8", errors="replace") if lost else ""
    if outcome.get("interrupted") is True:
        return INTERRUPTED  # rank 0 saved and printed the resume command
    if code == 0:
        return 0
    return _explain(nproc, args, outcome, failed, lost_detail, signals[0], code, console)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _option(args: list[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _continue_with(nproc: int, args: list[str], run_dir: str | None) -> str:
    """Which checkpoint is kept and the command that continues (or restarts) the run."""
    run_dir = run_dir or _option(args, "--resume")
    if run_dir:
        step = _checkpoint_step(Path(run_dir) / "checkpoints" / "latest.pt")
        if step is not None:
            again = shlex.join(["i2i", "run", "--resume", run_dir, "--nproc", str(nproc)])
            return f"The last checkpoint, saved at step {step}, is kept in {run_dir}. Continue with: {again}"
    again = shlex.join(["i2i", *args, "--nproc", str(nproc)])
    where = f" in {run_dir}" if run_dir else ""
    return f"No checkpoint was saved yet{where}, so nothing can be resumed. Start the run again: {again}"


def _checkpoint_step(path: Path) -> int | None:
    """The step of a run's latest checkpoint, or None when there is none that loads."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return int(state["step"])
    except Exception:  # missing, damaged: the message then says that none is kept
        return None


def _explain(
    nproc: int,
    args: list[str],
    outcome: dict[str, Any],
    failed: dict[str, Any],
    lost_detail: str,
    signals: int,
    code: int,
    console: Console,
) -> int:
    run_dir = outcome.get("run_dir")
    if failed.get("agent_error"):
        raise DistributedRunFailed(
            f"torchrun could not run the {nproc} processes ({failed['agent_error']}). "
            f"{_continue_with(nproc, args, run_dir)} Add --debug to see torchrun's own messages."
        )
    failures = [f for f in failed.get("failures", []) if isinstance(f, dict)]
    ours = (signal.SIGTERM.name, signal.SIGINT.name)  # what a stop sends; anything else killed it
    killed = [f for f in failures if f.get("exitcode", 0) < 0 and f.get("signal") not in ours]
    if signals or failed.get("stops"):
        # Stopped by a signal, but rank 0 did not report: aborted by a second one, or killed.
        console.print(
            f"[yellow]Stopped before the processes could save (a second Ctrl-C or SIGTERM aborts "
            f"without saving). {escape(_continue_with(nproc, args, run_dir))}[/yellow]",
            soft_wrap=True,
        )
        return INTERRUPTED
    if killed:
        first = min(killed, key=lambda f: f.get("time", 0))
        others = "the other process was" if nproc == 2 else "the other processes were"
        raise DistributedRunFailed(
            f"Process {first['rank']} of {nproc} (pid {first.get('pid')}) was killed by {first['signal']} "
            "(from outside, or by the system when memory ran out?), so the run stopped: "
            f"{others} stopped too. {_continue_with(nproc, args, run_dir)}"
        )
    if lost_detail:
        raise DistributedRunFailed(
            f"The processes of the run lost contact with each other ({lost_detail}): one of them "
            f"stopped without saying why. {_continue_with(nproc, args, run_dir)}"
        )
    exits = [f.get("exitcode") for f in failures if isinstance(f.get("exitcode"), int)]
    # A worker that failed with a message of its own (exit 1 a user error, 3 an internal one).
    return max((c for c in exits if c > 0), default=code or 1)
