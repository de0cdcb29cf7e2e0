"""Samplers: the ways of drawing several outputs for one input from a trained generator.

- ``dropout_train``: the pix2pix paper's test-time noise. Dropout stays on and batch normalisation
  uses the statistics of the test batch (the network in train mode), with a batch of one.
- ``dropout_eval``: dropout on, but batch normalisation with its running statistics, so the only
  randomness is the dropout masks.
- ``latent_eval`` / ``latent_train``: a fresh code z ~ N(0, I) per sample for generators that take
  one (``latent_dim > 0``), with the network in eval mode (dropout off, running statistics; how
  BicycleGAN samples) or in train mode.

- ``deterministic``: no randomness at all (eval mode, dropout off, a zero code for latent
  generators): the usual single output, as a zero-diversity reference row with its quality.

None of them retrains anything; each works on a copy of the generator.
"""

from __future__ import annotations

import copy

from torch import Tensor, nn

from i2i import I2IError, Sampler, check_mode, dropout_layers, hookimpl, latent_dim


def with_zero_code(generator: nn.Module, inputs: Tensor) -> Tensor:
    """G(inputs), with the all-zero code (the prior's mean) for generators that take one."""
    size = latent_dim(generator)
    if size > 0:
        return generator(inputs, inputs.new_zeros(inputs.shape[0], size))
    return generator(inputs)


class DropoutSampler(Sampler):
    """Test-time dropout: the generator's own dropout layers are the source of randomness."""

    def __init__(self, mode: str) -> None:
        self.mode = check_mode(mode)
        # Train-mode batch norm mixes the statistics of a batch: every sample gets its own batch.
        self.batched = mode == "eval"

    def check(self, generator: nn.Module) -> None:
        if not dropout_layers(generator):
            raise I2IError(
                f"The sampler dropout_{self.mode} needs a generator with dropout layers, and "
                f"{type(generator).__name__} has none; train it with dropout = true, or sample it "
                "with a latent sampler if it takes a code."
            )

    def prepare(self, generator: nn.Module) -> nn.Module:
        net = copy.deepcopy(generator)
        if self.mode == "train":
            return net.train()
        net.eval()
        for layer in dropout_layers(net):
            layer.train()
        return net

    def sample(self, generator: nn.Module, inputs: Tensor) -> Tensor:
        # A latent generator with dropout gets one fixed code, so only the dropout varies.
        return with_zero_code(generator, inputs)

    def describe(self) -> str:
        stats = "test-batch statistics" if self.mode == "train" else "running statistics"
        return f"test-time dropout, {stats}"


class LatentSampler(Sampler):
    """A fresh latent code z ~ N(0, I) for every sample."""

    def __init__(self, mode: str) -> None:
        self.mode = check_mode(mode)
        self.batched = mode == "eval"

    def check(self, generator: nn.Module) -> None:
        if latent_dim(generator) <= 0:
            raise I2IError(
                f"The sampler latent_{self.mode} needs a generator that takes a latent code "
                f"(latent_dim > 0, e.g. unet_z_all), and {type(generator).__name__} takes none; "
                "use dropout_train or dropout_eval for a dropout generator."
            )

    def describe(self) -> str:
        return f"random z ~ N(0, I), {self.mode} mode"


class DeterministicSampler(Sampler):
    """The generator's single eval-mode answer, repeated: diversity zero by construction."""

    def sample(self, generator: nn.Module, inputs: Tensor) -> Tensor:
        return with_zero_code(generator, inputs)

    def describe(self) -> str:
        return "no noise: eval mode, dropout off, zero code"


def deterministic() -> Sampler:
    """No noise: the eval-mode output (zero code for latent generators), a quality reference."""
    return DeterministicSampler()


def dropout_train() -> Sampler:
    """Test-time dropout as in the pix2pix paper: train mode, statistics of the test batch."""
    return DropoutSampler("train")


def dropout_eval() -> Sampler:
    """Test-time dropout with running batch-norm statistics (eval mode with dropout kept on)."""
    return DropoutSampler("eval")


def latent_eval() -> Sampler:
    """A random latent code per sample, eval-mode network (how BicycleGAN samples)."""
    return LatentSampler("eval")


def latent_train() -> Sampler:
    """A random latent code per sample, train-mode network (statistics of the test batch)."""
    return LatentSampler("train")


@hookimpl
def i2i_register_samplers(registry):
    for factory in (deterministic, dropout_train, dropout_eval, latent_eval, latent_train):
        registry.add(factory.__name__, factory)
