"""Losses that make a generator's latent code matter, so one input gives many plausible outputs.

- ``mode_seeking`` (MSGAN, Mao et al., CVPR 2019) and ``diversity_sensitive`` (Yang et al., ICLR
  2019) reward two outputs for two codes for being far apart, relative to how far apart the codes
  are. Both need a generator with a latent code (``unet_z_all``, ``unet_z_input``, ...).
- ``bicyclegan`` (Zhu et al., NeurIPS 2017) owns an encoder E and ties codes to outputs: the
  cVAE-GAN path reconstructs B from its own encoded code, and the latent regression recovers the
  random code from the output it produced.
"""

from __future__ import annotations

import weakref
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from i2i_pix2pix.generators import Filters, Norm, check_norm
from torch import Tensor

from i2i import (
    CheckContext,
    I2IError,
    Loss,
    Range,
    StepContext,
    call_frozen,
    hookimpl,
    init_weights,
    recipe_check,
    suggest,
)
from i2i_diversity.encoders import ENCODER_KINDS, EncoderKind, LatentEncoder, build_encoder

GanMode = Literal["vanilla", "lsgan"]
#: The recipe's ranges: a term's factor (0 turns the term off), a strictly positive number, and the
#: encoder's halvings (images must be multiples of 2**n_layers).
Factor = Annotated[float, Range(0)]
Positive = Annotated[float, Range(0, low_open=True)]
EncoderLayers = Annotated[int, Range(1, 12)]

#: The key under which BicycleGAN's encoded sample G(A, E(B)) is shared through the StepContext.
ENCODED_SAMPLE = "bicyclegan_encoded"


def _require_latent(loss_name: str, latent_dim: int) -> None:
    if latent_dim <= 0:
        raise I2IError(
            f"The loss {loss_name!r} needs a generator with a latent code, e.g. unet_z_all or "
            "unet_z_input; this recipe's generator takes none (latent_dim = 0)."
        )


def _check_tau(params: dict, context: CheckContext) -> list[str]:
    """DSGAN's clamp: a number above 0, where infinity (no clamp) is allowed, so not a ``Range``."""
    tau = params["tau"]
    if not tau > 0:  # NaN is refused before the check runs
        return [f"tau = {tau!r}: must be greater than 0 (inf turns the clamp off)."]
    return []


# -- mode seeking and diversity-sensitive --------------------------------------------------------
class ModeSeekingLoss(Loss):
    """MSGAN's regulariser: ``1 / (ratio + eps)``, ratio = mean|G(A,z1) - G(A,z2)| / mean|z1 - z2|.

    Both means run over the whole batch, as in the authors' pix2pix code. The second output is the
    step's shared extra sample (``ctx.sample()``), so it costs one more generator pass per step.
    """

    def __init__(self, weight: float = 1.0, eps: float = 1e-5) -> None:
        super().__init__(weight)
        self.eps = float(eps)

    def setup(self, *, input_nc: int, output_nc: int, latent_dim: int) -> None:
        _require_latent("mode_seeking", latent_dim)

    def generator_loss(self, ctx: StepContext) -> Tensor:
        if ctx.z is None:  # setup() catches this in a recipe; a hand-built context may not
            _require_latent("mode_seeking", 0)
        other, other_z = ctx.sample()
        ratio = (ctx.fake_B - other).abs().mean() / (ctx.z - other_z).abs().mean()
        ctx.log("ms_ratio", ratio)
        return 1.0 / (ratio + self.eps)


class DiversitySensitiveLoss(Loss):
    """DSGAN's regulariser: ``-mean_i min(ratio_i, tau)`` with a per-sample ratio.

    ratio_i = mean over channels and pixels of |G(A,z1)_i - G(A,z2)_i|, divided by
    (mean over the code of |z1_i - z2_i| + eps). The clamp at ``tau`` is applied, as the paper
    states (the authors' code never applies it); once a sample's ratio exceeds tau it stops
    contributing a gradient, so the term cannot reward ever larger differences.
    """

    def __init__(self, weight: float = 8.0, tau: float = 1.0, eps: float = 1e-5) -> None:
        super().__init__(weight)
        self.tau = float(tau)
        self.eps = float(eps)

    def setup(self, *, input_nc: int, output_nc: int, latent_dim: int) -> None:
        _require_latent("diversity_sensitive", latent_dim)

    def generator_loss(self, ctx: StepContext) -> Tensor:
        if ctx.z is None:
            _require_latent("diversity_sensitive", 0)
        other, other_z = ctx.sample()
        image_distance = (ctx.fake_B - other).abs().flatten(1).mean(dim=1)
        code_distance = (ctx.z - other_z).abs().flatten(1).mean(dim=1)
        ratio = image_distance / (code_distance + self.eps)
        ctx.log("ds_ratio", ratio.mean())
        return -torch.clamp(ratio, max=self.tau).mean()


# -- BicycleGAN ----------------------------------------------------------------------------------
def gan_term(logits: Tensor, real: bool, mode: str) -> Tensor:
    """The adversarial term for ``logits`` judged as real or fake (BCE on logits, or least squares)."""
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    if mode == "vanilla":
        return F.binary_cross_entropy_with_logits(logits, target)
    return F.mse_loss(logits, target)


def kl_to_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)), summed over the code and averaged over the batch."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(dim=1).mean()


class BicycleGANLoss(Loss):
    """BicycleGAN's cVAE-GAN path and latent regression, with the encoder E it trains.

    Per step, with z_enc = mu + exp(logvar / 2) * eps drawn from E(B):

    - D: 0.5 * (real term on cat(A, B) + fake term on cat(A, G(A, z_enc))).
    - G and E: gan(G(A, z_enc)) + lambda_l1 * |G(A, z_enc) - B| + lambda_kl * KL(E(B) || N(0, I))
      + lambda_z * |mu(E(G(A, z))) - z| for the step's random z. The latent regression goes through
      a frozen view of E, so it trains G only, as BicycleGAN updates E without it.

    The adversarial term on the random-code output G(A, z) (the cLR-GAN's) is not here: it is the
    recipe's ``cgan`` loss, so a BicycleGAN recipe is ``cgan`` + ``bicyclegan`` (and no ``l1``, whose
    job the encoded reconstruction does). Both share the recipe's one conditional discriminator; the
    paper trains two, one per path. Differences from BicycleGAN's code: both paths use the whole
    batch (it splits each batch in two); the KL is averaged over the batch (it sums, which is the
    same at its batch size of 1); D's two terms are averaged like ``cgan``'s (it adds them).
    """

    uses_discriminator = True
    conditional = True

    def __init__(
        self,
        weight: float = 1.0,
        lambda_l1: float = 10.0,
        lambda_kl: float = 0.01,
        lambda_z: float = 0.5,
        encoder: str = "resnet",
        nef: int = 64,
        n_layers: int = 4,
        encoder_norm: str = "instance",
        gan_mode: str = "lsgan",
    ) -> None:
        super().__init__(weight)
        self.lambda_l1 = float(lambda_l1)
        self.lambda_kl = float(lambda_kl)
        self.lambda_z = float(lambda_z)
        if gan_mode not in ("vanilla", "lsgan"):
            raise I2IError(f"bicyclegan gan_mode must be 'vanilla' or 'lsgan', got {gan_mode!r}.")
        self.gan_mode = gan_mode
        if encoder not in ENCODER_KINDS:
            raise I2IError(f"Unknown bicyclegan encoder {encoder!r}. {suggest(str(encoder), ENCODER_KINDS)}")
        # The kind and norm are checked now so that a recipe fails when it is built, not when the
        # encoder is; the recipe's ranges cover nef and n_layers (build_encoder checks them again).
        self.encoder_settings = {
            "kind": encoder,
            "nef": nef,
            "n_layers": n_layers,
            "norm": check_norm(encoder_norm),
        }
        self.encoder: LatentEncoder | None = None
        # The encoding of one step, computed once (in the D phase) and reused by the G phase; keyed
        # by the step's context so it is dropped together with it.
        self._encodings: weakref.WeakKeyDictionary[StepContext, tuple[Tensor, Tensor, Tensor]] = (
            weakref.WeakKeyDictionary()
        )

    def setup(self, *, input_nc: int, output_nc: int, latent_dim: int) -> None:
        """Build E for the target images (``output_nc`` channels) and the generator's code size."""
        _require_latent("bicyclegan", latent_dim)
        encoder = build_encoder(input_nc=output_nc, nz=latent_dim, **self.encoder_settings)
        self.encoder = init_weights(encoder, "xavier", 0.02)  # BicycleGAN's initialisation

    def _ready_encoder(self) -> LatentEncoder:
        if self.encoder is None:
            raise I2IError("The bicyclegan loss has no encoder yet: call setup() before training with it.")
        return self.encoder

    def encoded_sample(self, ctx: StepContext) -> tuple[Tensor, Tensor, Tensor]:
        """``(G(A, z_enc), mu, logvar)`` for this step, with gradients to G and E."""
        if ctx not in self._encodings:
            mu, logvar = self._ready_encoder()(ctx.real_B)
            z_enc = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
            fake_enc, _ = ctx.sample(ENCODED_SAMPLE, z=z_enc)
            self._encodings[ctx] = (fake_enc, mu, logvar)
        return self._encodings[ctx]

    def latent_regression(self, ctx: StepContext) -> Tensor:
        """mean |mu(E(G(A, z))) - z|: trains G to keep z recoverable, without training E."""
        if ctx.z is None:
            _require_latent("bicyclegan", 0)
        mu, _ = call_frozen(self._ready_encoder(), ctx.fake_B)
        return (mu - ctx.z).abs().mean()

    def discriminator_loss(self, ctx: StepContext) -> Tensor:
        fake_enc, _, _ = self.encoded_sample(ctx)
        D = ctx.discriminator
        loss_real = gan_term(D(ctx.discriminator_input(ctx.real_B, True)), True, self.gan_mode)
        loss_fake = gan_term(D(ctx.discriminator_input(fake_enc.detach(), True)), False, self.gan_mode)
        ctx.log("D_enc_fake", loss_fake)
        return 0.5 * (loss_real + loss_fake)

    def generator_loss(self, ctx: StepContext) -> Tensor:
        fake_enc, mu, logvar = self.encoded_sample(ctx)
        adversarial = gan_term(
            ctx.discriminator(ctx.discriminator_input(fake_enc, True)), True, self.gan_mode
        )
        reconstruction = F.l1_loss(fake_enc, ctx.real_B)
        kl = kl_to_standard_normal(mu, logvar)
        regression = self.latent_regression(ctx)
        for name, value in (("gan", adversarial), ("l1", reconstruction), ("kl", kl), ("z", regression)):
            ctx.log(f"bicycle_{name}", value)
        weighted = self.lambda_l1 * reconstruction + self.lambda_kl * kl + self.lambda_z * regression
        return adversarial + weighted


def mode_seeking(weight: float = 1.0, eps: Positive = 1e-5) -> Loss:
    """Mode seeking (MSGAN): 1 / (mean|G(A,z1) - G(A,z2)| / mean|z1 - z2| + eps); needs a latent G.

    weight: MSGAN uses 1; eps: keeps the term finite when the two outputs coincide.
    """
    return ModeSeekingLoss(weight, eps)


@recipe_check(_check_tau)
def diversity_sensitive(weight: float = 8.0, tau: float = 1.0, eps: Factor = 1e-5) -> Loss:
    """Diversity-sensitive (DSGAN): -mean min(|G1 - G2| / |z1 - z2|, tau) per sample; needs a latent G.

    weight: DSGAN uses 8 for facades and maps. tau: the clamp, > 0. Images lie in [-1, 1] and
    |z1 - z2| averages 2/sqrt(pi) ~ 1.13 for z ~ N(0, I), so ratios are typically well below 1;
    tau = 1 stops pushing a pair apart once its images differ on average by as much as its codes,
    a guard against the term growing without bound rather than a routine limit (inf turns it off).
    eps: keeps the ratio finite for equal codes.
    """
    return DiversitySensitiveLoss(weight, tau, eps)


def bicyclegan(
    weight: float = 1.0,
    lambda_l1: Factor = 10.0,
    lambda_kl: Factor = 0.01,
    lambda_z: Factor = 0.5,
    encoder: EncoderKind = "resnet",
    nef: Filters = 64,
    n_layers: EncoderLayers = 4,
    encoder_norm: Norm = "instance",
    gan_mode: GanMode = "lsgan",
) -> BicycleGANLoss:
    """BicycleGAN's encoder, cVAE-GAN and latent regression; pair it with cgan (and no l1).

    lambda_l1/lambda_kl/lambda_z: weights of the reconstruction, KL and latent regression (the
    paper's 10, 0.01, 0.5); encoder: resnet or conv; nef, n_layers, encoder_norm: its filters,
    halvings (image sizes must be multiples of 2**n_layers) and normalisation; gan_mode: vanilla or
    lsgan (BicycleGAN's default) for the encoded path's adversarial terms.
    """
    return BicycleGANLoss(
        weight, lambda_l1, lambda_kl, lambda_z, encoder, nef, n_layers, encoder_norm, gan_mode
    )


@hookimpl
def i2i_register_losses(registry):
    registry.add("mode_seeking", mode_seeking, uses_discriminator=False)
    registry.add("diversity_sensitive", diversity_sensitive, uses_discriminator=False)
    registry.add("bicyclegan", bicyclegan, uses_discriminator=True)
