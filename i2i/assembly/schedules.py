"""Learning-rate policies, stepped once per epoch (as in the pix2pix reference)."""

from __future__ import annotations

from typing import Any

from torch.optim import Optimizer, lr_scheduler


def linear_factor(epoch: int, epochs: int, epochs_decay: int) -> float:
    """Multiplier after ``epoch`` finished epochs: 1 for ``epochs``, then linearly towards 0.

    Matches the reference: after the last decay epoch the rate is 1/(epochs_decay + 1) of the
    initial one, never exactly zero during training.
    """
    return 1.0 - max(0, epoch + 1 - epochs) / float(epochs_decay + 1)


def make_scheduler(optimizer: Optimizer, optim: dict[str, Any], train: dict[str, Any]):
    policy = optim["policy"]
    epochs, decay = train["epochs"], train["epochs_decay"]
    if policy == "linear":
        return lr_scheduler.LambdaLR(optimizer, lambda e: linear_factor(e, epochs, decay))
    if policy == "step":
        return lr_scheduler.StepLR(optimizer, step_size=optim["step_epochs"], gamma=optim["gamma"])
    if policy == "cosine":
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs + decay), eta_min=0)
    if policy == "plateau":
        return lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=optim["gamma"], patience=optim["patience"]
        )
    raise ValueError(f"unknown learning-rate policy {policy!r}")


def step_scheduler(scheduler, epoch_metric: float) -> None:
    if isinstance(scheduler, lr_scheduler.ReduceLROnPlateau):
        scheduler.step(epoch_metric)
    else:
        scheduler.step()
