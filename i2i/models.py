"""The model contract: a model kind owns the training step.

Everything else a run does is the engine's, the same for every model: data order and jitter,
exact resume, the non-finite guard, the graceful stop, several processes, logging, sample grids,
checkpoints, evaluation, translate, export and serve. A model decides

- which networks it has, built in :meth:`TrainingModel.build` from the components the recipe names
  (``[generator]``, ``[discriminator]``, ``[[losses]]``) through the :class:`ModelParts` it is given;
  every network is an attribute (a child module), so checkpoints, devices and DDP see all of them;
- which optimisers it needs (:meth:`TrainingModel.optimiser_groups`; each becomes an Adam with the
  recipe's ``[optim]`` settings and learning-rate schedule, checkpointed as ``opt_NAME``);
- what one step does (:meth:`TrainingModel.train_step`, with the :class:`StepTools` of the engine:
  backward with the ``[speed]`` settings, the guard that skips non-finite updates, the DDP replica of
  a network);
- which network translates A→B, and B→A if it has one (:attr:`TrainingModel.translators`).

Models are registered like every component (``i2i_register_models``); a recipe picks one with
``[model] name = "..."`` (default ``pix2pix``), and the table's other keys are the factory's
parameters. docs/plugins.md "Write a model" walks through one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor, nn

from i2i.errors import I2IError
from i2i.losses import Loss


class ModelParts(Protocol):
    """What :meth:`TrainingModel.build` may use: the recipe's components, built through the registries."""

    recipe: Mapping[str, Any]
    input_nc: int  # the dataset's channels of A
    output_nc: int  # ... and of B

    def generator(self, input_nc: int, output_nc: int) -> nn.Module:
        """The recipe's ``[generator]`` mapping ``input_nc`` to ``output_nc`` channels."""

    def discriminator(self, input_nc: int) -> nn.Module:
        """The recipe's ``[discriminator]`` judging ``input_nc`` channels (an error if it has none)."""

    def losses(self, generator: nn.Module) -> list[tuple[str, Loss]]:
        """The recipe's ``[[losses]]``, each set up for ``generator`` (its channels and latent size)."""

    def initialise(self, *networks: nn.Module | None) -> None:
        """The recipe's ``train.init`` scheme on these networks (a no-op for ``"none"``)."""


@dataclass
class OptimiserGroup:
    """Parameters stepped by one optimiser; ``lr`` names the ``[optim]`` setting of its rate."""

    parameters: list[nn.Parameter]
    lr: str = "lr"  # "lr", or "lr_D" (the discriminators' rate; falls back to lr)
    logged: bool = True  # its learning rate goes to the log as lr_NAME


class StepTools(Protocol):
    """The engine's side of one training step."""

    step: int  # the step being trained, counting from 1
    device: torch.device
    optimisers: Mapping[str, torch.optim.Optimizer]  # by the names of optimiser_groups()

    def inputs(self, x: Tensor) -> Tensor:
        """A batch tensor on the device, in the ``[speed]`` memory format."""

    def backward(self, loss: Tensor) -> None:
        """``loss.backward()`` as ``[speed]`` wants it (outside autocast)."""

    def accept(self, loss: Tensor) -> bool:
        """Whether an update on ``loss`` may be applied: False skips it (``train.skip_nonfinite``)."""

    def replica(self, network: nn.Module) -> nn.Module:
        """The network to call while training it: its DDP replica with several processes, else itself."""

    def sync_gradients(self) -> None:
        """Average the gradients DDP does not see (parameters of losses that own networks)."""

    def sample_z(self, batch: int) -> Tensor | None:
        """A latent code from N(0, I) for the AtoB generator, or None if it takes none."""


class TrainingModel(nn.Module):
    """Base class of a model kind; see the module's description for the contract."""

    #: Direction -> the attribute holding the network that translates it.
    translators: ClassVar[dict[str, str]] = {"AtoB": "generator"}
    #: Whether the recipe's ``[[losses]]`` take part (pix2pix-shaped models), or the model has its own.
    uses_losses: ClassVar[bool] = True
    #: Whether the recipe must have a ``[discriminator]``.
    needs_discriminator: ClassVar[bool] = False

    def build(self, parts: ModelParts) -> None:
        """Create the networks (attributes of ``self``) from ``parts``."""
        raise NotImplementedError

    def optimiser_groups(self) -> dict[str, OptimiserGroup]:
        """The optimisers, by name, in the order they are created and checkpointed."""
        raise NotImplementedError

    def train_step(self, batch: Mapping[str, Any], tools: StepTools) -> dict[str, Tensor]:
        """One training step on ``batch`` (``A``, ``B`` tensors on the CPU); returns the logged scalars."""
        raise NotImplementedError

    def replicated(self) -> list[nn.Module]:
        """The networks DDP wraps with several processes: those whose gradients it must average."""
        return [net for net in self.networks().values() if any(p.requires_grad for p in net.parameters())]

    def networks(self) -> dict[str, nn.Module]:
        """Every network of the model by attribute name (the direct child modules)."""
        return dict(self.named_children())

    def translator(self, direction: str = "AtoB") -> nn.Module:
        """The network that translates ``direction`` ("AtoB" or "BtoA")."""
        name = self.translators.get(direction)
        if name is None:
            raise I2IError(
                f"This {type(self).__name__} translates {', '.join(self.translators)} only, not {direction}."
            )
        return getattr(self, name)

    def io(self, direction: str = "AtoB") -> dict[str, int]:
        """Input and output channels of the translator of ``direction`` (what inference rebuilds)."""
        raise NotImplementedError

    def checkpoint_state(self) -> dict[str, Any]:
        """What a checkpoint stores of the model besides the optimisers (default: every state)."""
        return {"model": self.state_dict()}

    def load_checkpoint_state(self, state: Mapping[str, Any]) -> None:
        """Put back what :meth:`checkpoint_state` stored."""
        self.load_state_dict(state["model"])

    @property
    def latent_dim(self) -> int:
        """The AtoB translator's latent size (0 without a latent code)."""
        return int(getattr(self.translator("AtoB"), "latent_dim", 0) or 0)


def set_requires_grad(net: nn.Module | None, flag: bool) -> None:
    """Freeze (``False``) or unfreeze a network's parameters, e.g. D while G is updated."""
    if net is not None:
        for p in net.parameters():
            p.requires_grad_(flag)
