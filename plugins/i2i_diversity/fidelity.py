"""Losses that give diversity without fighting the reconstruction term.

pix2pix's L1 pulls every output for an input towards the one target, so a latent code that changes
the output is punished: the generator learns to ignore it. The regularisers in ``losses.py``
(mode seeking, DSGAN) push back with a second term, and the two terms fight. The losses here change
the reconstruction term itself, so that only one of several outputs answers for the target:

- ``min_of_k`` (Chen & Koltun's "best of many" loss, CRN, ICCV 2017) draws K outputs per input,
  shows all of them to the discriminator (so all stay plausible) and pulls only the closest one to
  the target (so the others are free to differ). It replaces both ``cgan`` and ``l1``.
- ``cimle`` (conditional IMLE, Li, Zhang & Malik, ICCV 2019) draws many codes, keeps for each input
  the code whose output is already nearest the target, and reconstructs from that code alone: every
  target is covered by some code, and no code is asked to produce every target.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from i2i import I2IError, Loss, Range, StepContext, hookimpl
from i2i_diversity.losses import Factor, GanMode, _require_latent, gan_term

Distance = Literal["l1", "l2"]


# -- shared helpers ------------------------------------------------------------------------------
def per_item_distance(output: Tensor, target: Tensor, distance: str) -> Tensor:
    """Mean |output - target| (l1) or squared difference (l2) over all but the first dimension.

    ``output`` may carry leading sample dimensions, (..., N, C, H, W) against ``target``'s
    (N, C, H, W); the result has shape (..., N).
    """
    diff = output - target
    diff = diff.abs() if distance == "l1" else diff * diff
    return diff.flatten(-target.dim() + 1).mean(dim=-1)


def _batchnorms(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    # .modules() reaches through a DistributedDataParallel wrapper to the network it holds.
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def mixes_batch(module: nn.Module) -> bool:
    """Whether the items of one batch influence each other's output: batch norm in training mode."""
    return any(m.training for m in _batchnorms(module))


@contextmanager
def batchnorm_statistics_kept(module: nn.Module) -> Iterator[None]:
    """Run the block, then put every batch norm's running statistics back as they were.

    For forward passes that only look (choosing a code) and must not count as training batches.
    The buffers are restored in place, so whatever holds them (an optimiser, DDP) still does.
    """
    saved = []
    for bn in _batchnorms(module):
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            buffer = getattr(bn, name, None)
            if buffer is not None:
                saved.append((buffer, buffer.detach().clone()))
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)


def _judge(discriminator: nn.Module, inputs: Sequence[Tensor]) -> list[Tensor]:
    """D's logits for each input: one batched call, or one call each when D's batch norm would mix
    them (as ``cgan`` calls D once per image set)."""
    if len(inputs) == 1 or mixes_batch(discriminator):
        return [discriminator(x) for x in inputs]
    return list(discriminator(torch.cat(list(inputs))).chunk(len(inputs)))


# -- min of K ------------------------------------------------------------------------------------
def best_of_many(
    samples: Sequence[Tensor], target: Tensor, distance: str, mean_weight: float = 0.0
) -> tuple[Tensor, Tensor]:
    """The min-of-K reconstruction term and the distances it was chosen from.

    Returns ``(term, d)`` with d[b, j] the per-item distance of sample j to the target of item b and
    term = (1 - mean_weight) * mean_b min_j d[b, j] + mean_weight * mean_b mean_j d[b, j]. The
    minimum passes gradient to the chosen sample only.
    """
    d = per_item_distance(torch.stack(list(samples)), target, distance).t()
    best = d.min(dim=1).values.mean()
    if mean_weight == 0:
        return best, d
    return (1 - mean_weight) * best + mean_weight * d.mean(), d


class MinOfKLoss(Loss):
    """CRN's best-of-many loss with a conditional GAN on every sample.

    K outputs per input: s_0 = ctx.fake_B, s_j = ctx.sample("min_of_k_j") (fresh codes, or fresh
    dropout masks for a generator without a code), shared by the D and the G phase.

    - D: 0.5 * (gan(D(A, B), real) + mean_j gan(D(A, s_j), fake)).
    - G: mean_j gan(D(A, s_j), real) + lambda_rec * best_of_many(s, B), see :func:`best_of_many`.

    With K = 1 this is ``cgan`` + lambda_rec * ``l1`` (vanilla mode). Logs D_real and D_fake as
    ``cgan`` does, mok_gan, mok_best (mean min distance) and mok_mean (mean distance of all samples).
    """

    uses_discriminator = True
    conditional = True

    def __init__(
        self,
        weight: float = 1.0,
        k: int = 4,
        lambda_rec: float = 100.0,
        distance: Distance = "l1",
        mean_weight: float = 0.0,
        gan_mode: GanMode = "vanilla",
    ) -> None:
        super().__init__(weight)
        if int(k) < 1:
            raise I2IError(f"min_of_k needs k >= 1 samples, got {k!r}.")
        if distance not in ("l1", "l2"):
            raise I2IError(f"min_of_k distance must be 'l1' or 'l2', got {distance!r}.")
        if gan_mode not in ("vanilla", "lsgan"):
            raise I2IError(f"min_of_k gan_mode must be 'vanilla' or 'lsgan', got {gan_mode!r}.")
        if not 0 <= mean_weight <= 1:
            raise I2IError(f"min_of_k mean_weight must lie in [0, 1], got {mean_weight!r}.")
        self.k = int(k)
        self.lambda_rec = float(lambda_rec)
        self.distance = distance
        self.mean_weight = float(mean_weight)
        self.gan_mode = gan_mode

    def samples(self, ctx: StepContext) -> list[Tensor]:
        """The step's K outputs for ``ctx.real_A``, with gradients (the first is ``ctx.fake_B``)."""
        return [ctx.fake_B] + [ctx.sample(f"min_of_k_{j}")[0] for j in range(1, self.k)]

    def _fakes(self, ctx: StepContext, samples: Sequence[Tensor]) -> list[Tensor]:
        return [ctx.discriminator_input(s, True) for s in samples]

    def discriminator_loss(self, ctx: StepContext) -> Tensor:
        D = ctx.discriminator
        samples = [s.detach() for s in self.samples(ctx)]
        loss_real = gan_term(D(ctx.discriminator_input(ctx.real_B, True)), True, self.gan_mode)
        fake_terms = [gan_term(x, False, self.gan_mode) for x in _judge(D, self._fakes(ctx, samples))]
        loss_fake = torch.stack(fake_terms).mean()
        ctx.log("D_real", loss_real)
        ctx.log("D_fake", loss_fake)
        return 0.5 * (loss_real + loss_fake)

    def generator_loss(self, ctx: StepContext) -> Tensor:
        samples = self.samples(ctx)
        logits = _judge(ctx.discriminator, self._fakes(ctx, samples))
        adversarial = torch.stack([gan_term(x, True, self.gan_mode) for x in logits]).mean()
        reconstruction, d = best_of_many(samples, ctx.real_B, self.distance, self.mean_weight)
        ctx.log("mok_gan", adversarial)
        ctx.log("mok_best", d.min(dim=1).values.mean())
        ctx.log("mok_mean", d.mean())
        return adversarial + self.lambda_rec * reconstruction


# -- conditional IMLE ----------------------------------------------------------------------------
@torch.no_grad()
def nearest_codes(
    generator: nn.Module,
    real_A: Tensor,
    real_B: Tensor,
    codes: Sequence[Tensor],
    distance: str = "l1",
    batched: bool | None = None,
) -> tuple[Tensor, Tensor]:
    """For each item, the candidate code whose output G(A, z) lies nearest its target.

    ``codes`` are m tensors of shape (N, nz). Returns ``(z_star, d)``: z_star (N, nz) the chosen
    codes, d (m, N) every candidate's distance. No gradients, and the generator's batch-norm
    running statistics are left as they were. ``batched`` runs all candidates as one forward pass
    of m * N items; by default only when G's items cannot influence each other (no batch norm in
    training mode), where it gives the per-candidate results, faster.
    """
    if batched is None:
        batched = not mixes_batch(generator)
    m, n = len(codes), real_A.shape[0]
    with batchnorm_statistics_kept(generator):
        if batched and m > 1:
            outputs = generator(real_A.repeat(m, *([1] * (real_A.dim() - 1))), torch.cat(list(codes)))
            outputs = outputs.view(m, n, *outputs.shape[1:])
        else:
            outputs = torch.stack([generator(real_A, z) for z in codes])
    d = per_item_distance(outputs, real_B, distance)
    chosen = d.argmin(dim=0)
    z_star = torch.stack(list(codes))[chosen, torch.arange(n, device=chosen.device)]
    return z_star, d


class CIMLELoss(Loss):
    """Conditional IMLE: reconstruct B from the nearest of ``candidates`` random codes.

    Per step and item: draw m codes, run G(A, z_c) for each without gradients, keep the code z*
    whose output is nearest B, and return distance(G(A, z*), B) with gradients (the step's shared
    sample "cimle"). With candidates = 1 this is plain ``l1`` on a random code. Logs
    cimle_chosen_dist (distance of the chosen candidates) and cimle_first_dist (of candidate 0, what
    one random code would give): their gap is what the selection gains.
    """

    def __init__(self, weight: float = 100.0, candidates: int = 8, distance: Distance = "l1") -> None:
        super().__init__(weight)
        if int(candidates) < 1:
            raise I2IError(f"cimle needs candidates >= 1, got {candidates!r}.")
        if distance not in ("l1", "l2"):
            raise I2IError(f"cimle distance must be 'l1' or 'l2', got {distance!r}.")
        self.candidates = int(candidates)
        self.distance = distance

    def setup(self, *, input_nc: int, output_nc: int, latent_dim: int) -> None:
        _require_latent("cimle", latent_dim)

    def generator_loss(self, ctx: StepContext) -> Tensor:
        batch = ctx.real_A.shape[0]
        codes = []
        for _ in range(self.candidates):
            z = ctx.draw_z(batch)
            if z is None:  # setup() catches this in a recipe; a hand-built context may not
                _require_latent("cimle", 0)
            codes.append(z)
        z_star, d = nearest_codes(ctx.generator, ctx.real_A, ctx.real_B, codes, self.distance)
        ctx.log("cimle_chosen_dist", d.min(dim=0).values.mean())
        ctx.log("cimle_first_dist", d[0].mean())
        out, _ = ctx.sample("cimle", z=z_star)
        if self.distance == "l1":
            return F.l1_loss(out, ctx.real_B)
        return F.mse_loss(out, ctx.real_B)


# -- factories -----------------------------------------------------------------------------------
def min_of_k(
    weight: float = 1.0,
    k: Annotated[int, Range(1, 64)] = 4,
    lambda_rec: Factor = 100.0,
    distance: Distance = "l1",
    mean_weight: Annotated[float, Range(0, 1)] = 0.0,
    gan_mode: GanMode = "vanilla",
) -> MinOfKLoss:
    """Min of K (CRN): mean_j gan(D(A, s_j)) + lambda_rec * mean_b min_j |s_j - B| over K samples.

    Replaces both cgan and l1: all K outputs per input face the conditional discriminator, only the
    nearest to the target is pulled to it, so the others may differ. k: samples per input (k = 1
    is cgan + lambda_rec * l1; each extra sample costs one more generator pass); lambda_rec: the
    reconstruction's weight (pix2pix's 100); distance: l1 or l2 per item; mean_weight: share of the
    plain mean over samples mixed into the minimum (0: pure min, 1: every sample pulled);
    gan_mode: vanilla or lsgan.
    """
    return MinOfKLoss(weight, k, lambda_rec, distance, mean_weight, gan_mode)


def cimle(
    weight: float = 100.0,
    candidates: Annotated[int, Range(1, 256)] = 8,
    distance: Distance = "l1",
) -> CIMLELoss:
    """Conditional IMLE: |G(A, z*) - B| with z* the nearest of m random codes per item; needs a latent G.

    A reconstruction term in place of l1: alone (no discriminator) or with cgan, which judges the
    step's random-code output. weight: like l1's lambda (100); candidates: codes tried per item
    (m; their forward passes run without gradients, batched unless G has batch norm in training
    mode); distance: l1 or l2, used both to choose and as the loss.
    """
    return CIMLELoss(weight, candidates, distance)


@hookimpl
def i2i_register_losses(registry):
    registry.add("min_of_k", min_of_k, uses_discriminator=True)
    registry.add("cimle", cimle, uses_discriminator=False)
