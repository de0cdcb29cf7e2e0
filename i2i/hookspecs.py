"""The hooks a plugin can implement: the public contract for third-party packages.

Every hook receives a :class:`~i2i.registry.Registry` and calls ``registry.add(name, factory)``
for each component it provides. Implementations may omit arguments they do not use, so new
arguments can be added to a hook without breaking existing plugins.
"""

from __future__ import annotations

import pluggy

from i2i.registry import Registry

PROJECT = "i2i"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def i2i_register_models(registry: Registry) -> None:
    """Register model kinds: ``factory(**params) -> i2i.TrainingModel`` (usually the class itself).

    A model owns the training step: its networks, its optimisers, what one step does and which
    network translates A→B (and B→A). See :mod:`i2i.models`; a recipe picks one with
    ``[model] name = "..."`` (default ``pix2pix``), its other keys being the factory's parameters.
    """


@hookspec
def i2i_register_generators(registry: Registry) -> None:
    """Register generator factories: ``factory(input_nc, output_nc, **params) -> nn.Module``.

    The module maps an input batch in [-1, 1] to an output batch in [-1, 1]. A generator that takes a
    latent code sets ``latent_dim > 0`` and accepts ``forward(x, z)`` with ``z`` of shape
    ``(batch, latent_dim)``; the training loop then samples ``z ~ N(0, I)`` itself.
    """


@hookspec
def i2i_register_discriminators(registry: Registry) -> None:
    """Register discriminator factories: ``factory(input_nc, **params) -> nn.Module``.

    ``input_nc`` is supplied by the host: the output channels, plus the input channels when an
    adversarial loss conditions the discriminator on the input. The module returns logits (any
    shape). It may offer ``features(x) -> list[Tensor]`` for feature-matching losses.
    """


@hookspec
def i2i_register_losses(registry: Registry) -> None:
    """Register loss factories: ``factory(weight, **params) -> i2i.Loss``.

    See :class:`i2i.losses.Loss` for how a loss takes part in the discriminator and generator updates.
    """


@hookspec
def i2i_register_datasets(registry: Registry) -> None:
    """Register dataset factories: ``factory(split, **params) -> torch.utils.data.Dataset``.

    Items are dicts with ``"A"`` (the network input, a float tensor in [-1, 1]), ``"B"`` (the target,
    absent for inference-only datasets) and ``"name"`` (a file stem used to name outputs). The dataset
    exposes ``input_nc`` and ``output_nc``.
    """


@hookspec
def i2i_register_metrics(registry: Registry) -> None:
    """Register evaluation metric factories: ``factory(**params) -> i2i.metrics.Metric``."""


@hookspec
def i2i_register_samplers(registry: Registry) -> None:
    """Register sampler factories for the diversity experiment: ``factory(**params) -> i2i.Sampler``.

    See :class:`i2i.sampling.Sampler`: a sampler draws several outputs for one input from a trained
    generator (test-time dropout, a random latent code, ...).
    """


@hookspec
def i2i_register_palettes(registry: Registry) -> None:
    """Register label palettes: ``factory() -> i2i.palette.Palette``.

    A palette names the classes of a colour-coded label map and their colours; ``i2i serve`` offers
    them as the brush colours of its drawing canvas and snaps drawn pixels to them.
    """
