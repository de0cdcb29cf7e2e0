"""Unpaired translation as model kinds: CycleGAN (Zhu et al., ICCV 2017) and CUT / FastCUT (Park et
al., ECCV 2020). Their steps follow the authors' code (see docs/unpaired.md for what is taken from
where); the networks come from the recipe's [generator] and [discriminator] like pix2pix's.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from i2i import (
    I2IError,
    ModelParts,
    OptimiserGroup,
    Range,
    StepTools,
    TrainingModel,
    hookimpl,
    set_requires_grad,
)
from i2i_unpaired.patchnce import (
    NUM_PATCHES,
    TAU,
    PatchSampleMLP,
    encoder_channels,
    nce_layers,
    patch_nce_loss,
)
from i2i_unpaired.pool import ImagePool

GanMode = Literal["lsgan", "vanilla"]
Weight = Annotated[float, Range(0, 1e4)]


def gan_loss(logits: Tensor, real: bool, mode: str) -> Tensor:
    """The adversarial loss of D's output against "real" or "fake": least squares (CycleGAN's and
    CUT's choice) or the original cross-entropy."""
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    if mode == "lsgan":
        return F.mse_loss(logits, target)
    return F.binary_cross_entropy_with_logits(logits, target)


def _frozen(*nets: nn.Module) -> None:
    for net in nets:
        set_requires_grad(net, False)


def _trainable(*nets: nn.Module) -> None:
    for net in nets:
        set_requires_grad(net, True)


class CycleGAN(TrainingModel):
    """CycleGAN (Zhu et al. 2017): G_A: A→B and G_B: B→A, two single-image discriminators.

    Trained with LSGAN, cycle-consistency and identity losses, the discriminators on a history of
    fakes (an image pool each)."""

    translators = {"AtoB": "G_A", "BtoA": "G_B"}
    uses_losses = False
    needs_discriminator = True

    def __init__(
        self,
        lambda_A: Weight = 10.0,
        lambda_B: Weight = 10.0,
        lambda_identity: Annotated[float, Range(0, 100)] = 0.5,
        pool_size: Annotated[int, Range(0, 10_000)] = 50,
        gan_mode: GanMode = "lsgan",
    ) -> None:
        """``lambda_A``/``lambda_B``: the cycle losses' weights (A→B→A, B→A→B); ``lambda_identity``:
        the identity losses' weight relative to them (0 turns them off); ``pool_size``: past fakes
        kept per discriminator (0: none)."""
        super().__init__()
        self.lambda_A, self.lambda_B, self.lambda_identity = lambda_A, lambda_B, lambda_identity
        self.gan_mode = gan_mode
        self.pool_A, self.pool_B = ImagePool(pool_size), ImagePool(pool_size)  # fakes of B, fakes of A

    def build(self, parts: ModelParts) -> None:
        a, b = parts.input_nc, parts.output_nc
        if self.lambda_identity > 0 and a != b:
            raise I2IError(
                f"model.lambda_identity = {self.lambda_identity}: the identity losses feed B images to "
                f"G_A (A→B), which needs as many channels in A ({a}) as in B ({b}); set "
                "model.lambda_identity = 0 for this data."
            )
        self.channels = (a, b)
        self.G_A = parts.generator(a, b)
        self.G_B = parts.generator(b, a)
        self.D_A = parts.discriminator(b)  # tells real B from G_A's fakes
        self.D_B = parts.discriminator(a)  # tells real A from G_B's fakes
        parts.initialise(self.G_A, self.G_B, self.D_A, self.D_B)

    def io(self, direction: str = "AtoB") -> dict[str, int]:
        a, b = self.channels
        return {"input_nc": a, "output_nc": b} if direction == "AtoB" else {"input_nc": b, "output_nc": a}

    def optimiser_groups(self) -> dict[str, OptimiserGroup]:
        return {
            "G": OptimiserGroup([*self.G_A.parameters(), *self.G_B.parameters()]),
            "D": OptimiserGroup([*self.D_A.parameters(), *self.D_B.parameters()], lr="lr_D"),
        }

    def checkpoint_state(self) -> dict[str, Any]:
        return {
            "discriminators": {"D_A": self.D_A.state_dict(), "D_B": self.D_B.state_dict()},
            "pools": {"A": self.pool_A.state_dict(), "B": self.pool_B.state_dict()},
        }

    def load_checkpoint_state(self, state: Mapping[str, Any]) -> None:
        self.D_A.load_state_dict(state["discriminators"]["D_A"])
        self.D_B.load_state_dict(state["discriminators"]["D_B"])
        self.pool_A.load_state_dict(state["pools"]["A"])
        self.pool_B.load_state_dict(state["pools"]["B"])

    def train_step(self, batch: Mapping[str, Any], tools: StepTools) -> dict[str, Tensor]:
        real_A, real_B = tools.inputs(batch["A"]), tools.inputs(batch["B"])
        G_A, G_B = tools.replica(self.G_A), tools.replica(self.G_B)
        opt_G, opt_D = tools.optimisers["G"], tools.optimisers["D"]
        mode = self.gan_mode
        logs: dict[str, Tensor] = {}

        # The generators first, the discriminators frozen (called unwrapped: they are not trained here).
        fake_B = G_A(real_A)
        rec_A = G_B(fake_B)
        fake_A = G_B(real_B)
        rec_B = G_A(fake_A)
        _frozen(self.D_A, self.D_B)
        opt_G.zero_grad(set_to_none=True)
        logs["G_A"] = gan_loss(self.D_A(fake_B), True, mode)
        logs["G_B"] = gan_loss(self.D_B(fake_A), True, mode)
        logs["cycle_A"] = F.l1_loss(rec_A, real_A) * self.lambda_A
        logs["cycle_B"] = F.l1_loss(rec_B, real_B) * self.lambda_B
        total = logs["G_A"] + logs["G_B"] + logs["cycle_A"] + logs["cycle_B"]
        if self.lambda_identity > 0:  # G_A should leave a B image as it is, G_B an A image
            logs["idt_A"] = F.l1_loss(G_A(real_B), real_B) * self.lambda_B * self.lambda_identity
            logs["idt_B"] = F.l1_loss(G_B(real_A), real_A) * self.lambda_A * self.lambda_identity
            total = total + logs["idt_A"] + logs["idt_B"]
        tools.backward(total)
        if tools.accept(total):
            opt_G.step()
        logs["G_total"] = total

        # Then both discriminators, each on a real image and a fake from its history (factor 0.5).
        _trainable(self.D_A, self.D_B)
        opt_D.zero_grad(set_to_none=True)
        D_A, D_B = tools.replica(self.D_A), tools.replica(self.D_B)
        old_B, old_A = self.pool_A.query(fake_B), self.pool_B.query(fake_A)
        logs["D_A"] = (gan_loss(D_A(real_B), True, mode) + gan_loss(D_A(old_B), False, mode)) * 0.5
        logs["D_B"] = (gan_loss(D_B(real_A), True, mode) + gan_loss(D_B(old_A), False, mode)) * 0.5
        loss_D = logs["D_A"] + logs["D_B"]
        tools.backward(loss_D)
        if tools.accept(loss_D):
            opt_D.step()
        return {name: value.detach() for name, value in logs.items()}


class CUT(TrainingModel):
    """CUT (Park et al. 2020): one generator, one single-image discriminator, PatchNCE.

    PatchNCE matches the input's and the output's encoder features at the same places, through an
    MLP head trained with the generator."""

    translators = {"AtoB": "generator"}
    uses_losses = False
    needs_discriminator = True

    def __init__(
        self,
        lambda_gan: Weight = 1.0,
        lambda_nce: Weight = 1.0,
        nce_idt: bool = True,
        flip_equivariance: bool = False,
        num_patches: Annotated[int, Range(1, 4096)] = NUM_PATCHES,
        nce_tau: Annotated[float, Range(1e-4, 10)] = TAU,
        gan_mode: GanMode = "lsgan",
    ) -> None:
        """CUT's defaults (FastCUT is ``cut`` with ``lambda_nce = 10``, ``nce_idt = false`` and
        ``flip_equivariance = true``, registered as ``fastcut``). ``nce_idt`` adds PatchNCE on
        (B, G(B)), which keeps G from changing what is already in B's domain."""
        super().__init__()
        self.lambda_gan, self.lambda_nce, self.nce_idt = lambda_gan, lambda_nce, nce_idt
        self.flip_equivariance, self.nce_tau, self.gan_mode = flip_equivariance, nce_tau, gan_mode
        self.num_patches = num_patches

    def build(self, parts: ModelParts) -> None:
        a, b = parts.input_nc, parts.output_nc
        if self.nce_idt and a != b:
            raise I2IError(
                f"model.nce_idt: the identity term feeds B images to G, which needs as many channels in "
                f"A ({a}) as in B ({b}); set model.nce_idt = false for this data."
            )
        self.channels = (a, b)
        self.generator = parts.generator(a, b)
        self.discriminator = parts.discriminator(b)
        parts.initialise(self.generator, self.discriminator)
        self.layers = nce_layers(self.generator)  # also refuses a generator without encode()
        channels = encoder_channels(self.generator, self.layers, a)
        self.head = PatchSampleMLP(self.num_patches, channels=channels)

    def io(self, direction: str = "AtoB") -> dict[str, int]:
        self.translator(direction)
        a, b = self.channels
        return {"input_nc": a, "output_nc": b}

    def optimiser_groups(self) -> dict[str, OptimiserGroup]:
        return {
            "G": OptimiserGroup(list(self.generator.parameters())),
            "D": OptimiserGroup(list(self.discriminator.parameters()), lr="lr_D"),
            "F": OptimiserGroup(list(self.head.parameters()), logged=False),  # stepped with G
        }

    def replicated(self) -> list[nn.Module]:
        return [self.generator, self.discriminator]

    def checkpoint_state(self) -> dict[str, Any]:
        return {"discriminator": self.discriminator.state_dict(), "head": self.head.state_dict()}

    def load_checkpoint_state(self, state: Mapping[str, Any]) -> None:
        self.discriminator.load_state_dict(state["discriminator"])
        self.head.load_state_dict(state["head"])

    def _nce(self, source: Tensor, output: Tensor, flipped: bool) -> Tensor:
        """PatchNCE between ``source`` and G's ``output`` for it, averaged over the layers."""
        queries = self.generator.encode(output, self.layers)
        if flipped:  # the output was made from a flipped input: compare it at the same places
            queries = [torch.flip(q, [3]) for q in queries]
        keys, ids = self.head(self.generator.encode(source, self.layers))
        projected, _ = self.head(queries, ids)
        losses = [patch_nce_loss(q, k, self.nce_tau) for q, k in zip(projected, keys, strict=True)]
        return torch.stack(losses).mean() * self.lambda_nce

    def train_step(self, batch: Mapping[str, Any], tools: StepTools) -> dict[str, Tensor]:
        real_A, real_B = tools.inputs(batch["A"]), tools.inputs(batch["B"])
        G = tools.replica(self.generator)
        opt_D = tools.optimisers["D"]
        mode = self.gan_mode
        n = real_A.shape[0]
        real = torch.cat([real_A, real_B]) if self.nce_idt else real_A
        flipped = self.flip_equivariance and bool(torch.rand(()) < 0.5)
        if flipped:  # FastCUT: the output of a flipped input must be the flipped output
            real = torch.flip(real, [3])
        fake = G(real)
        fake_B = fake[:n]
        logs: dict[str, Tensor] = {}

        _trainable(self.discriminator)
        opt_D.zero_grad(set_to_none=True)
        D = tools.replica(self.discriminator)
        logs["D_real"] = gan_loss(D(real_B), True, mode)
        logs["D_fake"] = gan_loss(D(fake_B.detach()), False, mode)
        loss_D = (logs["D_real"] + logs["D_fake"]) * 0.5
        tools.backward(loss_D)
        if tools.accept(loss_D):
            opt_D.step()
        logs["D_total"] = loss_D

        _frozen(self.discriminator)
        generator_side = [tools.optimisers["G"], tools.optimisers["F"]]
        for optimiser in generator_side:
            optimiser.zero_grad(set_to_none=True)
        logs["G_gan"] = gan_loss(self.discriminator(fake_B), True, mode) * self.lambda_gan
        source_A = torch.flip(real_A, [3]) if flipped else real_A
        logs["G_nce"] = self._nce(source_A, fake_B, flipped)
        nce = logs["G_nce"]
        if self.nce_idt:
            source_B = torch.flip(real_B, [3]) if flipped else real_B
            logs["G_nce_idt"] = self._nce(source_B, fake[n:], flipped)
            nce = (nce + logs["G_nce_idt"]) * 0.5
        total = logs["G_gan"] + nce
        tools.backward(total)
        tools.sync_gradients()
        if tools.accept(total):
            for optimiser in generator_side:
                optimiser.step()
        logs["G_total"] = total
        return {name: value.detach() for name, value in logs.items()}


FASTCUT = "FastCUT: CUT with lambda_nce = 10, no identity term and flip-equivariance (faster)."
#: FastCUT: CUT with lambda_nce = 10, no identity term and flip-equivariance (one G pass per step).
fastcut = functools.partial(CUT, lambda_nce=10.0, nce_idt=False, flip_equivariance=True)


@hookimpl
def i2i_register_models(registry) -> None:
    registry.add("cyclegan", CycleGAN)
    registry.add("cut", CUT)
    registry.add("fastcut", fastcut, description=FASTCUT)
