"""The loss contract: how a loss plugin takes part in a training step without the loop knowing it.

The loop builds one :class:`StepContext` per step, then

1. asks every loss for ``discriminator_loss(ctx)`` and, if any returned a value, updates D on their sum;
2. asks every loss for ``generator_loss(ctx)`` and updates G on ``sum(weight * value)``.

A loss therefore decides itself whether it trains D, how D is fed (conditioned on the input or not),
whether it needs a second generator sample (``ctx.sample()``, for mode-seeking or diversity losses)
or the discriminator's features (``ctx.discriminator_features()``).

A loss may own trainable networks (BicycleGAN's encoder, a perceptual head being fine-tuned): it
builds them in :meth:`Loss.setup`, once the host knows the channels and the generator's latent size,
and from then on they are ordinary parameters of the loss module. The loop optimises every loss's
parameters with one extra Adam, stepped together with G's (same learning rate, betas and schedule),
on the gradient of the generator objective; checkpoints store each loss's ``state_dict`` and that
optimiser, so such a loss resumes exactly. Parameters a loss wants frozen it marks
``requires_grad=False``; a term that must not train them (a latent regression through the encoder)
can call the network with detached weights, see :func:`call_frozen`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn


class StepContext:
    """Everything a loss may look at during one training step.

    ``fake_B`` is the generator's output for ``real_A`` (with gradients); ``z`` its latent code, or
    ``None`` for generators without one. Extra samples drawn with :meth:`sample` are cached by key,
    so two losses asking for the same key share one forward pass.
    """

    def __init__(
        self,
        real_A: Tensor,
        real_B: Tensor,
        generator: nn.Module,
        discriminator: nn.Module | None,
        fake_B: Tensor,
        z: Tensor | None,
        sample_z: Callable[[int], Tensor | None],
    ) -> None:
        self.real_A = real_A
        self.real_B = real_B
        self.generator = generator
        self.discriminator = discriminator
        self.fake_B = fake_B
        self.z = z
        self._sample_z = sample_z
        self._samples: dict[str, tuple[Tensor, Tensor | None]] = {}
        self.logs: dict[str, Tensor] = {}

    def log(self, name: str, value: Tensor | float) -> None:
        """Record a scalar for the progress bar, the loss log and the curves.

        Values stay on the device; the loop turns them into numbers only when it writes a log line,
        so logging does not force a GPU synchronisation every step.
        """
        self.logs[name] = value.detach() if isinstance(value, Tensor) else torch.tensor(float(value))

    def draw_z(self, batch: int) -> Tensor | None:
        """Fresh codes from the step's code distribution (N(0, I)), or None for a generator without one.

        For a loss that tries codes before it settles on one (conditional IMLE's nearest of m); the
        codes come from the loop's own source, so they follow its device and random streams.
        """
        return self._sample_z(batch)

    def sample(self, key: str = "second", z: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Another generator output for ``real_A``: ``(output, z)``, with gradients.

        The latent code is fresh from N(0, I) unless ``z`` is given (an encoded code, say). The first
        call for a key runs G; later calls (from this or another loss, in the D or the G phase)
        return the same tensors, so a sample drawn while computing D's loss is reused for G's.
        """
        if key not in self._samples:
            if z is None:
                z = self._sample_z(self.real_A.shape[0])
            out = self.generator(self.real_A, z) if z is not None else self.generator(self.real_A)
            self._samples[key] = (out, z)
        return self._samples[key]

    def discriminator_input(self, output: Tensor, conditional: bool) -> Tensor:
        """What D sees for ``output``: ``cat(A, output)`` when conditional, ``output`` otherwise."""
        return torch.cat([self.real_A, output], dim=1) if conditional else output

    def discriminator_features(self, output: Tensor, conditional: bool) -> list[Tensor]:
        """Intermediate D activations for ``output`` (needs a discriminator with ``features``)."""
        if self.discriminator is None or not hasattr(self.discriminator, "features"):
            raise RuntimeError("this loss needs a discriminator that offers features(x)")
        return self.discriminator.features(self.discriminator_input(output, conditional))


class Loss(nn.Module):
    """Base class for loss plugins.

    Subclasses override :meth:`generator_loss` and, if they train the discriminator,
    :meth:`discriminator_loss`. Set ``conditional = True`` when D must see the input too: the host
    then builds D with input channels for both images.
    """

    #: Whether this loss needs a discriminator at all. A plugin declares the same when it registers
    #: a factory (``registry.add(name, factory, uses_discriminator=True)``), so that recipes can be
    #: checked without building the loss; a loss class registered as its own factory is read directly.
    uses_discriminator: bool = False
    #: Whether D is shown the input image concatenated with the real/fake output.
    conditional: bool = False

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = float(weight)

    def setup(self, *, input_nc: int, output_nc: int, latent_dim: int) -> None:
        """Called once by the host after the generator is built and before optimisers exist.

        ``latent_dim`` is the generator's (0 without a latent code). Build owned networks here;
        the default does nothing.
        """

    def discriminator_loss(self, ctx: StepContext) -> Tensor | None:
        """The term this loss adds to D's objective, or ``None`` (the default) if it adds none."""
        return None

    def generator_loss(self, ctx: StepContext) -> Tensor | None:
        """The unweighted term this loss adds to G's objective, or ``None``."""
        return None


def call_frozen(module: nn.Module, *args: Tensor) -> Tensor:
    """``module(*args)`` with gradients flowing to the inputs but not to the module's weights.

    For terms that should train what feeds a network but not the network itself, e.g. BicycleGAN's
    latent regression, which trains G through the encoder while leaving the encoder alone.
    """
    frozen = {name: p.detach() for name, p in module.named_parameters()}
    return torch.func.functional_call(module, frozen, args)
