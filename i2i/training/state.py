"""What a checkpoint holds of a model in training, and putting it back: networks, the losses' own
networks, optimisers and their schedules, and every random stream (what makes resume exact)."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import torch

from i2i.assembly.build import Model, Optimised

#: Checkpoint key suffix of each optimised part (opt_G, sched_G, opt_D, ..., opt_L for the losses').
OPTIMISED_KEYS = {"G": "G", "D": "D", "losses": "L"}


def capture_rng() -> dict[str, Any]:
    """torch's (CPU and every GPU's) and Python's random state."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
    }


def restore_rng(rng: Mapping[str, Any]) -> None:
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    py = rng["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


def capture_state(model: Model, optimised: Mapping[str, Optimised]) -> dict[str, Any]:
    """The weights of every network, the optimisers and schedules, and the random streams."""
    state: dict[str, Any] = {
        "generator": model.generator.state_dict(),
        "losses": [loss.state_dict() for _, loss in model.losses],
        "rng": capture_rng(),
    }
    if model.discriminator is not None:
        state["discriminator"] = model.discriminator.state_dict()
    for key, part in optimised.items():
        state[f"opt_{OPTIMISED_KEYS[key]}"] = part.optimizer.state_dict()
        state[f"sched_{OPTIMISED_KEYS[key]}"] = part.scheduler.state_dict()
    return state


def restore_state(model: Model, optimised: Mapping[str, Optimised], state: Mapping[str, Any]) -> None:
    """Put :func:`capture_state`'s output back (raises KeyError, RuntimeError... on a mismatch)."""
    model.generator.load_state_dict(state["generator"])
    if model.discriminator is not None:
        model.discriminator.load_state_dict(state["discriminator"])
    loss_states = state.get("losses", [{} for _ in model.losses])
    for (_, loss), loss_state in zip(model.losses, loss_states, strict=True):
        loss.load_state_dict(loss_state)
    for key, part in optimised.items():
        part.optimizer.load_state_dict(state[f"opt_{OPTIMISED_KEYS[key]}"])
        part.scheduler.load_state_dict(state[f"sched_{OPTIMISED_KEYS[key]}"])
