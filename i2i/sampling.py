"""The sampler contract: how the diversity experiment draws several outputs for one input.

A sampler turns a trained generator into a stochastic one without retraining it: test-time dropout
(the pix2pix paper's only source of noise), a latent code drawn from N(0, I), or anything a plugin
invents. Samplers are registered through ``i2i_register_samplers`` like every other component.

The protocol (see :mod:`i2i.diversity`) calls :meth:`Sampler.check`, then :meth:`Sampler.prepare`
once per generator, then :meth:`Sampler.sample` repeatedly; torch's global RNG is seeded by the
protocol, so a sampler draws its randomness from it and stays reproducible.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from i2i.errors import I2IError


def latent_dim(generator: nn.Module) -> int:
    """The generator's latent size (0 for generators that take no code)."""
    return int(getattr(generator, "latent_dim", 0) or 0)


def generate(generator: nn.Module, inputs: Tensor, z: Tensor | None = None) -> Tensor:
    """Run G, passing a latent code when it declares one (drawn from N(0, I) if not given)."""
    size = latent_dim(generator)
    if size <= 0:
        return generator(inputs)
    if z is None:
        z = torch.randn(inputs.shape[0], size, device=inputs.device)
    return generator(inputs, z)


def dropout_layers(generator: nn.Module) -> list[nn.Module]:
    """Every dropout module in ``generator`` (any of torch's dropout variants)."""
    return [m for m in generator.modules() if isinstance(m, nn.modules.dropout._DropoutNd)]


class Sampler:
    """Draws outputs of a trained generator for the diversity experiment.

    ``mode`` is the network mode the samples come from: ``"eval"`` (running statistics) or
    ``"train"`` (statistics of the test batch, as the pix2pix paper ran its tests). ``batched``
    says whether several samples of one input may share a batch: only when they cannot influence
    each other, which rules out train-mode batch normalisation; otherwise the protocol runs every
    sample as its own batch of one.
    """

    mode: str = "eval"
    batched: bool = True

    def check(self, generator: nn.Module) -> None:
        """Raise :class:`~i2i.errors.I2IError` if this sampler cannot diversify ``generator``."""

    def prepare(self, generator: nn.Module) -> nn.Module:
        """A copy of ``generator`` set up for sampling; the trained model itself is never changed."""
        net = copy.deepcopy(generator)
        return net.train() if self.mode == "train" else net.eval()

    def sample(self, generator: nn.Module, inputs: Tensor) -> Tensor:
        """One output per row of ``inputs`` from a prepared generator."""
        return generate(generator, inputs)

    def describe(self) -> str:
        return type(self).__name__


@torch.no_grad()
def draw(generator: nn.Module, sampler: Sampler, image: Tensor, count: int, device: torch.device) -> Tensor:
    """``count`` samples (K, C, H, W) of one input image (C, H, W) from a prepared generator."""
    if sampler.batched:
        batch = image.unsqueeze(0).expand(count, *image.shape).contiguous().to(device)
        out = sampler.sample(generator, batch)
    else:
        single = image.unsqueeze(0).to(device)
        out = torch.cat([sampler.sample(generator, single) for _ in range(count)])
    return out.float().cpu()


def check_mode(mode: str) -> str:
    if mode not in ("eval", "train"):
        raise I2IError(f"A sampler's mode must be 'eval' or 'train', got {mode!r}.")
    return mode
