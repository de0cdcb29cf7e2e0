"""Turning a resolved recipe into modules, losses and datasets through the registries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from i2i.errors import I2IError
from i2i.losses import Loss
from i2i.metrics import Metric
from i2i.nn_init import init_weights
from i2i.plugins import PluginHost
from i2i.recipe import HOST_SETTINGS, Recipe

DATA_HOST_KEYS = set(HOST_SETTINGS["data"])


def pick_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise I2IError(
            f"experiment.device = {name!r} is not a device name (auto, cpu, cuda, cuda:N, mps)."
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise I2IError(
            f'experiment.device = {name!r} but CUDA is not available here; use device = "auto" or "cpu".'
        )
    return device


def _params(table: dict[str, Any], drop: set[str] = frozenset()) -> dict[str, Any]:
    return {k: v for k, v in table.items() if k != "name" and k not in drop}


def build_dataset(recipe: Recipe, host: PluginHost, split: str, **changes: Any):
    """The recipe's dataset for ``split``; ``changes`` override data parameters (e.g. ``root``)."""
    table = {**recipe["data"], **changes}
    return host.registry("dataset").build(table["name"], split=split, **_params(table, DATA_HOST_KEYS))


def build_generator(recipe: Recipe, host: PluginHost, input_nc: int, output_nc: int) -> nn.Module:
    table = recipe["generator"]
    net = host.registry("generator").build(
        table["name"], input_nc=input_nc, output_nc=output_nc, **_params(table)
    )
    if not isinstance(net, nn.Module):
        raise I2IError(f"generator {table['name']!r} did not build a torch.nn.Module.")
    return net


def build_losses(recipe: Recipe, host: PluginHost) -> list[tuple[str, Loss]]:
    losses = []
    for table in recipe["losses"]:
        loss = host.registry("loss").build(table["name"], **_params(table))
        if not isinstance(loss, Loss):
            raise I2IError(f"loss {table['name']!r} did not build an i2i.Loss.")
        losses.append((table["name"], loss))
    return losses


def build_metrics(entries: list[str | dict[str, Any]], host: PluginHost) -> dict[str, Metric]:
    """Metrics from ``eval.metrics`` entries: names, or tables of a name and parameters."""
    metrics = {}
    for entry in entries:
        table = {"name": entry} if isinstance(entry, str) else entry
        metrics[table["name"]] = host.registry("metric").build(table["name"], **_params(table))
    return metrics


def build_discriminator(
    recipe: Recipe, host: PluginHost, losses: list[tuple[str, Loss]], input_nc: int, output_nc: int
) -> nn.Module | None:
    """D, if any loss needs one; its input channels depend on whether a loss conditions it."""
    adversarial = [loss for _, loss in losses if loss.uses_discriminator]
    if not adversarial:
        return None
    if "discriminator" not in recipe:
        names = [n for n, loss in losses if loss.uses_discriminator]
        raise I2IError(
            f"The loss {names[0]!r} trains a discriminator, but the recipe has no "
            f"[discriminator] section. Available: "
            f"{', '.join(host.registry('discriminator').names())}."
        )
    conditional = {loss.conditional for loss in adversarial}
    if len(conditional) > 1:
        raise I2IError(
            "Conditional and unconditional adversarial losses cannot share one "
            "discriminator: use either 'cgan' or 'gan'."
        )
    d_in = output_nc + (input_nc if conditional.pop() else 0)
    table = recipe["discriminator"]
    return host.registry("discriminator").build(table["name"], input_nc=d_in, **_params(table))


@dataclass
class Model:
    """The networks and losses of one experiment."""

    generator: nn.Module
    discriminator: nn.Module | None
    losses: list[tuple[str, Loss]]
    input_nc: int
    output_nc: int

    @property
    def latent_dim(self) -> int:
        return int(getattr(self.generator, "latent_dim", 0) or 0)


def build_model(
    recipe: Recipe, host: PluginHost, input_nc: int, output_nc: int, initialise: bool = True
) -> Model:
    generator = build_generator(recipe, host, input_nc, output_nc)
    losses = build_losses(recipe, host)
    discriminator = build_discriminator(recipe, host, losses, input_nc, output_nc)
    if initialise and recipe["train"]["init"] != "none":
        for net in (generator, discriminator):
            if net is not None:
                init_weights(net, recipe["train"]["init"], recipe["train"]["init_gain"])
    return Model(generator, discriminator, losses, input_nc, output_nc)


def generate(generator: nn.Module, inputs: torch.Tensor, z: torch.Tensor | None = None):
    """Run G, passing a latent code when it declares one (drawn from N(0, I) if not given)."""
    latent_dim = int(getattr(generator, "latent_dim", 0) or 0)
    if latent_dim <= 0:
        return generator(inputs)
    if z is None:
        z = torch.randn(inputs.shape[0], latent_dim, device=inputs.device)
    return generator(inputs, z)
