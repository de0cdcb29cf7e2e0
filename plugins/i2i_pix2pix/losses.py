"""Default losses: the conditional adversarial loss of pix2pix, L1/L2 reconstruction, and per-pixel
cross-entropy for segmenters (a generator with ``output = "logits"`` and a palette target)."""

from __future__ import annotations

import math
import warnings
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from i2i import CheckContext, I2IError, Loss, Range, StepContext, hookimpl, recipe_check

GanMode = Literal["vanilla", "lsgan", "hinge", "wgangp"]


class AdversarialLoss(Loss):
    """GAN loss; D sees cat(input, output) when conditional, as in pix2pix.

    D's objective is 0.5·(real term + fake term) (plus a gradient penalty for ``wgangp``); G's is
    the "real" term on its own output, so ``weight`` scales only G's side, like λ for L1.
    """

    uses_discriminator = True

    def __init__(
        self,
        weight: float = 1.0,
        mode: GanMode = "vanilla",
        conditional: bool = True,
        gp_weight: float = 10.0,
    ) -> None:
        super().__init__(weight)
        if mode not in ("vanilla", "lsgan", "hinge", "wgangp"):
            raise I2IError(f"GAN mode {mode!r} is not one of vanilla, lsgan, hinge, wgangp.")
        self.mode = mode
        self.conditional = conditional
        self.gp_weight = float(gp_weight)

    def _term(self, logits: Tensor, real: bool, for_discriminator: bool) -> Tensor:
        if self.mode == "vanilla":
            target = torch.ones_like(logits) if real else torch.zeros_like(logits)
            return F.binary_cross_entropy_with_logits(logits, target)
        if self.mode == "lsgan":
            target = torch.ones_like(logits) if real else torch.zeros_like(logits)
            return F.mse_loss(logits, target)
        if self.mode == "hinge" and for_discriminator:
            return F.relu(1 - logits).mean() if real else F.relu(1 + logits).mean()
        return -logits.mean() if real else logits.mean()  # wgangp, and hinge for G

    def discriminator_loss(self, ctx: StepContext) -> Tensor:
        D = ctx.discriminator
        fake = ctx.fake_B.detach()
        real_in = ctx.discriminator_input(ctx.real_B, self.conditional)
        fake_in = ctx.discriminator_input(fake, self.conditional)
        loss_real = self._term(D(real_in), real=True, for_discriminator=True)
        loss_fake = self._term(D(fake_in), real=False, for_discriminator=True)
        ctx.log("D_real", loss_real)
        ctx.log("D_fake", loss_fake)
        loss = 0.5 * (loss_real + loss_fake)
        if self.mode == "wgangp" and self.gp_weight > 0:
            penalty = gradient_penalty(D, real_in, fake_in)
            ctx.log("D_gp", penalty)
            loss = loss + self.gp_weight * penalty
        return loss

    def generator_loss(self, ctx: StepContext) -> Tensor:
        logits = ctx.discriminator(ctx.discriminator_input(ctx.fake_B, self.conditional))
        return self._term(logits, real=True, for_discriminator=False)


def gradient_penalty(D: torch.nn.Module, real: Tensor, fake: Tensor) -> Tensor:
    """WGAN-GP: mean (‖∇D(x̂)‖₂ − 1)² on random interpolates x̂ of real and fake inputs."""
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    out = D(mixed)
    (grad,) = torch.autograd.grad(out.sum(), mixed, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1) ** 2).mean()


def cgan(
    weight: float = 1.0, mode: GanMode = "vanilla", gp_weight: Annotated[float, Range(0)] = 10.0
) -> AdversarialLoss:
    """Conditional GAN loss (D sees input and output), modes vanilla/lsgan/hinge/wgangp."""
    return AdversarialLoss(weight, mode, conditional=True, gp_weight=gp_weight)


def gan(
    weight: float = 1.0, mode: GanMode = "vanilla", gp_weight: Annotated[float, Range(0)] = 10.0
) -> AdversarialLoss:
    """Unconditional GAN loss (D sees only the output), modes vanilla/lsgan/hinge/wgangp."""
    return AdversarialLoss(weight, mode, conditional=False, gp_weight=gp_weight)


class ReconstructionLoss(Loss):
    """Pixel distance between G's output and the target."""

    def __init__(self, weight: float, distance: Literal["l1", "l2"]) -> None:
        super().__init__(weight)
        self.distance = distance

    def generator_loss(self, ctx: StepContext) -> Tensor:
        if self.distance == "l1":
            return F.l1_loss(ctx.fake_B, ctx.real_B)
        return F.mse_loss(ctx.fake_B, ctx.real_B)


def l1(weight: float = 100.0) -> Loss:
    """L1 distance to the target (pix2pix uses weight λ = 100)."""
    return ReconstructionLoss(weight, "l1")


def l2(weight: float = 100.0) -> Loss:
    """Mean squared distance to the target."""
    return ReconstructionLoss(weight, "l2")


class CrossEntropyLoss(Loss):
    """Per-pixel cross-entropy of G's class scores against a one-hot target.

    Segmentation as translation: the dataset's ``target_palette`` makes ``real_B`` one-hot (K, H, W)
    in -1/+1, G (with ``output = "logits"``) gives K unbounded scores per pixel, and the class of a
    pixel is ``real_B.argmax(1)``. With class weights the mean is weighted as in
    :func:`torch.nn.functional.cross_entropy` (divided by the summed weights of the pixels' classes).
    """

    def __init__(self, weight: float = 1.0, class_weights: tuple[float, ...] | list[float] = ()) -> None:
        super().__init__(weight)
        values = [float(w) for w in class_weights or ()]
        weights = torch.tensor(values, dtype=torch.float32) if values else None
        self.register_buffer("class_weights", weights, persistent=False)
        self._checked = False

    def _check_classes(self, classes: int) -> None:
        if self.class_weights is not None and len(self.class_weights) != classes:
            raise I2IError(
                f"losses.cross_entropy.class_weights has {len(self.class_weights)} values, but the "
                f"target has {classes} classes (data.target_palette): give one weight per class, in "
                "palette order, or leave class_weights out."
            )

    def setup(self, *, input_nc: int, output_nc: int, latent_dim: int) -> None:
        self._check_classes(output_nc)

    def _check_first_batch(self, ctx: StepContext) -> None:
        """Clear errors for the usual set-up mistakes, once (the checks synchronise the device)."""
        logits, target = ctx.fake_B, ctx.real_B
        if logits.dim() != 4 or logits.shape != target.shape:
            raise I2IError(
                f"cross_entropy compares class scores (N, K, H, W) with a one-hot target of the same "
                f"shape, but the generator gave {tuple(logits.shape)} and the target is "
                f"{tuple(target.shape)}."
            )
        self._check_classes(logits.shape[1])
        if not bool(((target == 1).sum(1) == 1).all()):
            raise I2IError(
                "cross_entropy needs one-hot class targets, but real_B is an image: set "
                'data.target_palette (e.g. "cmp_facades" or a palette JSON file) so that the '
                "dataset turns the label maps into classes."
            )
        if getattr(ctx.generator, "output", None) == "tanh":
            warnings.warn(
                "cross_entropy is training a generator whose output ends in tanh, which bounds the "
                'class scores to [-1, 1]; set generator.output = "logits".',
                stacklevel=2,
            )
        self._checked = True

    def generator_loss(self, ctx: StepContext) -> Tensor:
        if not self._checked:
            self._check_first_batch(ctx)
        logits = ctx.fake_B.float()  # log-softmax in full precision whatever G computes in
        classes = ctx.real_B.argmax(1)
        loss = F.cross_entropy(logits, classes, weight=self.class_weights)
        ctx.log("ce_pixel_acc", (logits.detach().argmax(1) == classes).float().mean())
        return loss


def _check_class_weights(params: dict, context: CheckContext) -> list[str]:
    """Each class weight a finite number >= 0, and not all 0 (a range bounds a list's length only)."""
    values = list(params["class_weights"])
    if any(not math.isfinite(w) or w < 0 for w in values) or (values and sum(values) == 0):
        return [f"class_weights = {values!r}: must be finite numbers >= 0, not all 0."]
    return []


@recipe_check(_check_class_weights)
def cross_entropy(weight: float = 1.0, class_weights: tuple[float, ...] = ()) -> Loss:
    """Per-pixel cross-entropy for segmenters: G's logits against the target's classes.

    Needs data.target_palette (one-hot targets) and generator output = "logits". class_weights: one
    weight per class in palette order (empty: all 1), e.g. to count rare classes more. Logs the
    batch's per-pixel accuracy as ce_pixel_acc.
    """
    return CrossEntropyLoss(weight, class_weights)


@hookimpl
def i2i_register_losses(registry):
    registry.add("cgan", cgan, uses_discriminator=True)
    registry.add("gan", gan, uses_discriminator=True)
    registry.add("l1", l1, uses_discriminator=False)
    registry.add("l2", l2, uses_discriminator=False)
    registry.add("cross_entropy", cross_entropy, uses_discriminator=False)
