"""Turning a resolved recipe into modules, losses and datasets through the registries."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from i2i.assembly.host import PluginHost
from i2i.assembly.recipe import DEFAULT_MODEL, HOST_SETTINGS, Recipe
from i2i.assembly.schedules import make_scheduler
from i2i.data.order import EpochSampler, SeededItems
from i2i.data.scan import check_split
from i2i.errors import DataError, I2IError
from i2i.losses import Loss
from i2i.metrics import Metric
from i2i.models import TrainingModel
from i2i.nn_init import init_weights
from i2i.parallel import distributed
from i2i.sampling import latent_dim
from i2i.speed.device_data import DecodedLoader, supports_decoded_cache
from i2i.speed.options import decide
from i2i.speed.step import StepSpeed, prepare_step

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
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise I2IError(
            f"experiment.device = {name!r} but this machine has {torch.cuda.device_count()} CUDA "
            f"device(s), numbered from 0."
        )
    mps = getattr(torch.backends, "mps", None)
    if device.type == "mps" and not (mps and mps.is_available()):
        raise I2IError(f"experiment.device = {name!r} but Apple MPS is not available here; use auto or cpu.")
    if device.type not in ("cpu", "cuda", "mps"):
        raise I2IError(f"experiment.device = {name!r} cannot train; use auto, cpu, cuda, cuda:N or mps.")
    return device


def _params(table: dict[str, Any], drop: set[str] = frozenset()) -> dict[str, Any]:
    return {k: v for k, v in table.items() if k != "name" and k not in drop}


def build_dataset(recipe: Recipe, host: PluginHost, split: str, **changes: Any):
    """The recipe's dataset for ``split``; ``changes`` override data parameters (e.g. ``root``)."""
    table = {**recipe["data"], **changes}
    return host.registry("dataset").build(table["name"], split=split, **_params(table, DATA_HOST_KEYS))


def describe_split(recipe: Recipe, split: str) -> str:
    """``the 'train' split of ROOT``, for messages about a split's files."""
    root = recipe["data"].get("root")
    return f"the {split!r} split" + (f" of {root}" if root else "")


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
        component = host.registry("loss").get(table["name"])
        loss = component.build(**_params(table))
        if not isinstance(loss, Loss):
            raise I2IError(f"loss {table['name']!r} did not build an i2i.Loss.")
        declared = component.uses_discriminator
        if declared is not None and bool(loss.uses_discriminator) != declared:
            raise I2IError(
                f"The loss {table['name']!r} (from {component.provider}) was registered with "
                f"uses_discriminator = {declared}, but the loss it builds says "
                f"{bool(loss.uses_discriminator)}; the plugin must declare the same in both places."
            )
        losses.append((table["name"], loss))
    return losses


def build_metrics(entries: list[str | dict[str, Any]], host: PluginHost) -> dict[str, Metric]:
    """Metrics from ``eval.metrics`` entries: names, or tables of a name and parameters."""
    metrics = {}
    for entry in entries:
        table = {"name": entry} if isinstance(entry, str) else entry
        metrics[table["name"]] = host.registry("metric").build(table["name"], **_params(table))
    return metrics


class RecipeParts:
    """:class:`i2i.ModelParts`: the recipe's components, built through the registries."""

    def __init__(self, recipe: Recipe, host: PluginHost, input_nc: int, output_nc: int, initialise: bool):
        self.recipe, self.host = recipe, host
        self.input_nc, self.output_nc = input_nc, output_nc
        self._initialise = initialise

    def generator(self, input_nc: int, output_nc: int) -> nn.Module:
        return build_generator(self.recipe, self.host, input_nc, output_nc)

    def discriminator(self, input_nc: int) -> nn.Module:
        table = self.recipe.get("discriminator")
        if table is None:
            raise I2IError(
                "This model trains a discriminator, but the recipe has no [discriminator] section. "
                f"Available: {', '.join(self.host.registry('discriminator').names())}."
            )
        net = self.host.registry("discriminator").build(table["name"], input_nc=input_nc, **_params(table))
        if not isinstance(net, nn.Module):
            raise I2IError(f"discriminator {table['name']!r} did not build a torch.nn.Module.")
        return net

    def losses(self, generator: nn.Module) -> list[tuple[str, Loss]]:
        losses = build_losses(self.recipe, self.host)
        for _, loss in losses:
            loss.setup(input_nc=self.input_nc, output_nc=self.output_nc, latent_dim=latent_dim(generator))
        return losses

    def initialise(self, *networks: nn.Module | None) -> None:
        train = self.recipe["train"]
        if self._initialise and train["init"] != "none":
            for net in networks:
                if net is not None:
                    init_weights(net, train["init"], train["init_gain"])


def model_table(recipe: Recipe) -> dict[str, Any]:
    """The recipe's ``[model]`` table (``name = "pix2pix"`` when it has none)."""
    return recipe.get("model") or {"name": DEFAULT_MODEL}


def build_model(
    recipe: Recipe, host: PluginHost, input_nc: int, output_nc: int, initialise: bool = True
) -> TrainingModel:
    """The recipe's model kind with its networks built (and initialised, unless ``initialise`` is
    False); networks a loss owns are the loss's to initialise (one may hold pretrained weights)."""
    table = model_table(recipe)
    model = host.registry("model").build(table["name"], **_params(table))
    if not isinstance(model, TrainingModel):
        raise I2IError(f"model {table['name']!r} did not build an i2i.TrainingModel.")
    model.build(RecipeParts(recipe, host, input_nc, output_nc, initialise))
    return model


def make_adam(params, optim: dict[str, Any], lr: float, device: torch.device) -> torch.optim.Adam:
    """Adam with the recipe's betas; the fused kernel when ``optim.fused`` and the device has one."""
    kwargs = dict(lr=lr, betas=(optim["beta1"], optim["beta2"]), weight_decay=optim["weight_decay"])
    if optim["fused"]:
        try:
            return torch.optim.Adam(params, fused=True, **kwargs)
        except (RuntimeError, TypeError, ValueError):
            pass  # no fused kernel for this device or torch version: use the multi-tensor one
    return torch.optim.Adam(params, foreach=None if device.type == "mps" else True, **kwargs)


@dataclass
class Optimised:
    """One optimiser and its learning-rate schedule."""

    optimizer: torch.optim.Optimizer
    scheduler: Any
    logged: bool = True  # its learning rate is logged as lr_NAME


@dataclass
class Training:
    """Everything a training run needs, assembled from a recipe: see :func:`build_training`."""

    device: torch.device
    dataset: Any
    items: SeededItems
    sampler: EpochSampler
    loader: DataLoader | DecodedLoader
    steps_per_epoch: int
    model: TrainingModel
    #: One optimiser and schedule per group the model asked for (pix2pix: "G", "D" when there is a
    #: discriminator, "L" when losses own trainable parameters).
    optimised: dict[str, Optimised]
    #: What the data scan found worth saying (skipped files, odd sizes), to show at the start.
    notes: list[str] = field(default_factory=list)
    #: The ``[speed]`` settings in force (see :mod:`i2i.speed`).
    speed: StepSpeed | None = None


def build_training(recipe: Recipe, host: PluginHost) -> Training:
    """Data, networks, optimisers and schedules of a run, all on the recipe's device.

    Seeds torch and Python first, so the same recipe builds the same initial weights.
    """
    import random

    device = distributed.place(pick_device(recipe["experiment"]["device"]))
    seed = recipe["experiment"]["seed"]
    torch.manual_seed(seed)
    random.seed(seed)
    dataset = build_dataset(recipe, host, "train")
    if len(dataset) == 0:
        raise DataError(f"The training split of {recipe['data'].get('root', 'the dataset')} holds no images.")
    dataset, notes = check_split(dataset, describe_split(recipe, "train"), recipe["data"]["skip_bad"])
    items = SeededItems(dataset, seed)
    sampler = distributed.make_sampler(len(dataset), seed)  # this rank's share when distributed
    data = recipe["data"]
    loader = DataLoader(
        items,
        batch_size=data["batch_size"],
        sampler=sampler,
        num_workers=data["num_workers"],
        persistent_workers=data["num_workers"] > 0,  # no re-forking every epoch
        pin_memory=device.type == "cuda",
    )
    if data["cache"] == "decoded":
        problem = supports_decoded_cache(dataset)
        if problem is None:
            loader = DecodedLoader(dataset, seed, sampler, data["batch_size"], device)
        else:
            notes.append(f"data.cache: {problem}; loading with the DataLoader.")
    model = build_model(recipe, host, dataset.input_nc, dataset.output_nc)
    sync_bn = recipe["train"]["sync_batchnorm"]
    networks = model.networks()
    if distributed.sync_batchnorm_wanted(sync_bn, *networks.values()):
        for name, net in networks.items():
            setattr(model, name, distributed.convert_batchnorm(net, device))
    model.to(device)
    speed = prepare_step(decide(recipe.get("speed"), device), device, list(model.networks().values()))
    notes += speed.notes

    optim, train = recipe["optim"], recipe["train"]
    rates = {"lr": optim["lr"], "lr_D": optim["lr"] if optim["lr_D"] is None else optim["lr_D"]}
    parts = {}
    for name, group in model.optimiser_groups().items():
        opt = make_adam(group.parameters, optim, rates[group.lr], device)
        parts[name] = Optimised(opt, make_scheduler(opt, optim, train), group.logged)
    return Training(
        device=device,
        dataset=dataset,
        items=items,
        sampler=sampler,
        loader=loader,
        steps_per_epoch=distributed.steps_per_epoch(len(dataset), data["batch_size"]),
        model=model,
        optimised=parts,
        notes=notes,
        speed=speed,
    )


def describe_plan(recipe: Recipe, host: PluginHost) -> list[str]:
    """What a run of ``recipe`` will do, in numbers: training steps and the evaluation's size.

    Builds the datasets (which lists their files) but no network; a split that cannot be built
    is described by its error instead.
    """
    train, data, evaluation = recipe["train"], recipe["data"], recipe["eval"]
    lines = []
    try:
        items = len(build_dataset(recipe, host, "train"))
    except DataError as exc:
        return [f"Training data: {exc}"]
    per_epoch = math.ceil(items / data["batch_size"])
    epochs = train["epochs"] + train["epochs_decay"]
    steps = epochs * per_epoch
    capped = ""
    if 0 < train["max_steps"] < steps:
        capped = f", capped at train.max_steps: {train['max_steps']:,} steps in all"
    lines.append(
        f"Training: {items:,} items, batch {data['batch_size']}, {per_epoch:,} steps per epoch x {epochs} "
        f"epochs = {steps:,} steps{capped}."
    )
    if train["evaluate"]:
        try:
            n = len(build_dataset(recipe, host, evaluation["split"]))
        except DataError:
            n = None
        lines.append(describe_evaluation(recipe, n))
    return lines


def describe_evaluation(recipe: Recipe, items: int | None) -> str:
    """The evaluation's size for a split of ``items`` images (``None``: the split is missing)."""
    evaluation = recipe["eval"]
    split, modes = evaluation["split"], evaluation["modes"]
    if items is None:
        return f"Evaluation: no {split!r} split found; the run will end without one."
    n = min(items, evaluation["max_items"]) if evaluation["max_items"] > 0 else items
    return (
        f"Evaluation: {n:,} images of {split!r} in {len(modes)} mode(s) ({', '.join(modes)}), "
        f"{n * len(modes):,} translations."
    )
