"""What a checkpoint holds of a model in training, and putting it back: networks, the losses' own
networks, optimisers and their schedules, and every random stream (what makes resume exact)."""

from __future__ import annotations

import random
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch.optim import lr_scheduler

from i2i.assembly.build import Optimised
from i2i.models import TrainingModel
from i2i.runs.checkpoint import is_snapshot


def capture_rng() -> dict[str, Any]:
    """torch's (CPU and every GPU's) and Python's random state."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
    }


def restore_rng(rng: Mapping[str, Any]) -> str | None:
    """Put :func:`capture_rng`'s output back; returns a note when the GPUs differ from the saver's.

    A checkpoint holds one generator state per GPU of the machine that wrote it. Here GPU ``i``
    gets state ``i`` for as many GPUs as both machines have; states of GPUs this machine lacks are
    left unused (resuming on fewer GPUs, or on the CPU, must work), and GPUs the saver did not have
    keep their own seeding. The note says which.
    """
    torch.set_rng_state(rng["torch"])
    saved = list(rng.get("cuda") or [])
    here = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for index, state in enumerate(saved[:here]):
        torch.cuda.set_rng_state(state, index)
    py = rng["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    if len(saved) <= here or not saved:
        return None
    if here == 0:
        used = "they are not used"
    else:
        gpus = "GPU 0's was" if here == 1 else f"those of GPUs 0-{here - 1} were"
        used = f"{gpus} restored and the other {len(saved) - here} are not used"
    return (
        f"the checkpoint holds the random state of {len(saved)} GPUs and this machine has "
        f"{here or 'none'}: {used} (they only matter to random numbers drawn on those GPUs)."
    )


def capture_state(model: TrainingModel, optimised: Mapping[str, Optimised]) -> dict[str, Any]:
    """The weights of every network, the optimisers and schedules, and the random streams.

    The A→B translator is stored as ``generator`` (and a B→A one as ``generator_BtoA``) whatever
    the model, so inference rebuilds only what it translates with; the rest is the model's own.
    """
    state: dict[str, Any] = {"generator": model.translator("AtoB").state_dict()}
    if "BtoA" in model.translators:
        state["generator_BtoA"] = model.translator("BtoA").state_dict()
    state.update(model.checkpoint_state())
    state["rng"] = capture_rng()
    for name, part in optimised.items():
        state[f"opt_{name}"] = part.optimizer.state_dict()
        state[f"sched_{name}"] = part.scheduler.state_dict()
    return state


def restore_state(
    model: TrainingModel, optimised: Mapping[str, Optimised], state: Mapping[str, Any]
) -> str | None:
    """Put :func:`capture_state`'s output back (raises KeyError, RuntimeError... on a mismatch).

    An epoch snapshot (:func:`i2i.runs.checkpoint.is_snapshot`) has no optimiser or schedule
    state: the optimisers start afresh and each schedule is stepped to the snapshot's epoch (a
    "plateau" schedule, which depends on the losses it saw, starts afresh too). Returns a note
    saying so, since the run then continues but no longer repeats an uninterrupted one.
    """
    model.translator("AtoB").load_state_dict(state["generator"])
    if "BtoA" in model.translators:
        model.translator("BtoA").load_state_dict(state["generator_BtoA"])
    model.load_checkpoint_state(state)
    if not is_snapshot(dict(state)):
        for name, part in optimised.items():
            part.optimizer.load_state_dict(state[f"opt_{name}"])
            part.scheduler.load_state_dict(state[f"sched_{name}"])
        return None
    epoch = int(state.get("epoch", 0))
    restarted = []
    for name, part in optimised.items():
        if isinstance(part.scheduler, lr_scheduler.ReduceLROnPlateau):
            restarted.append(name)
            continue
        with warnings.catch_warnings():  # "scheduler stepped before the optimiser": on purpose
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(epoch):
                part.scheduler.step()
    schedule = f"the learning-rate schedules are set to epoch {epoch}"
    if restarted:
        schedule += f" (the 'plateau' schedule of {', '.join(restarted)} starts afresh)"
    return (
        f"{Path(str(state.get('path', 'the checkpoint'))).name} is an epoch snapshot, which holds the "
        f"networks but not the optimisers' state: training continues from its weights with fresh "
        f"optimisers (Adam's moment estimates rebuild over the next steps) and {schedule}, so it does "
        "not repeat an uninterrupted run step for step. Only latest.pt resumes exactly."
    )
