"""The default pix2pix discriminators: the PatchGAN and the 1x1 PixelGAN.

Both return logits (no sigmoid): one per overlapping patch for the PatchGAN, one per pixel for
the PixelGAN. ``features(x)`` gives the activations after each hidden block, for feature-matching
losses; ``forward(x)`` is the final 1-channel convolution applied to the last of them.
"""

from __future__ import annotations

from typing import Annotated

from torch import Tensor, nn

from i2i import CheckContext, I2IError, Range, hookimpl, recipe_check
from i2i_pix2pix.generators import Filters, Norm, check_norm, check_positive, conv_bias, norm_layer

#: PatchGAN depth a recipe may ask for (pix2pix: 3, a 70x70 receptive field).
Layers = Annotated[int, Range(1, 12)]


def patch_fit_problems(n_layers: int, size: int | None, key: str) -> list[str]:
    """Why a PatchGAN with ``n_layers`` cannot judge ``size`` x ``size`` images (its smallest input)."""
    if size is None or size >= 3 * 2**n_layers:
        return []
    fits = [n for n in range(1, 13) if size >= 3 * 2**n]
    advice = f"use n_layers at most {fits[-1]}" if fits else "no PatchGAN fits: use pixelgan or larger images"
    return [
        f"{key}: a PatchGAN with n_layers = {n_layers} needs images of at least "
        f"{3 * 2**n_layers}x{3 * 2**n_layers}, the dataset's crop is {size}x{size}; {advice}."
    ]


def _check_patchgan(params: dict, context: CheckContext) -> list[str]:
    n = params["n_layers"]
    return patch_fit_problems(n, context.image_size, f"n_layers = {n}")


def _check_input(x: Tensor, input_nc: int, what: str) -> None:
    if x.dim() != 4:
        raise I2IError(f"The {what} expects a batch of images (N, C, H, W), got shape {tuple(x.shape)}.")
    if x.shape[1] != input_nc:
        raise I2IError(f"The {what} was built for {input_nc} input channel(s) but got {x.shape[1]}.")


class _BlockDiscriminator(nn.Module):
    """Hidden ``blocks`` followed by a 1-channel ``head``; subclasses fill both."""

    input_nc: int
    blocks: nn.ModuleList
    head: nn.Module

    def _check(self, x: Tensor) -> None:
        _check_input(x, self.input_nc, type(self).__name__)

    def features(self, x: Tensor) -> list[Tensor]:
        """The activations after each hidden block (the logits are ``forward(x)``)."""
        self._check(x)
        feats = []
        for block in self.blocks:
            x = block(x)
            feats.append(x)
        return feats

    def forward(self, x: Tensor) -> Tensor:
        self._check(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


class PatchDiscriminator(_BlockDiscriminator):
    """PatchGAN: a fully convolutional net that classifies overlapping patches as real or fake.

    ``n_layers`` stride-2 convolutions (filters doubling, capped at 8 * ndf) are followed by a
    stride-1 convolution and the 1-channel output convolution, all 4x4 with padding 1. Each output
    logit sees a ``receptive_field`` square of the input: 70 pixels for ``n_layers=3``.
    """

    def __init__(self, input_nc: int, ndf: int = 64, n_layers: int = 3, norm: str = "batch") -> None:
        super().__init__()
        check_positive("input_nc", input_nc)
        check_positive("ndf", ndf)
        check_positive("n_layers", n_layers)
        bias = conv_bias(norm)
        self.input_nc = input_nc
        self.n_layers = n_layers

        def conv(c_in: int, c_out: int, stride: int, use_bias: bool) -> nn.Conv2d:
            return nn.Conv2d(c_in, c_out, kernel_size=4, stride=stride, padding=1, bias=use_bias)

        # The first block has no normalisation, hence a bias whatever the norm.
        blocks: list[nn.Module] = [nn.Sequential(conv(input_nc, ndf, 2, True), nn.LeakyReLU(0.2))]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            blocks.append(
                nn.Sequential(
                    conv(ndf * prev, ndf * mult, stride, bias),
                    norm_layer(norm, ndf * mult),
                    nn.LeakyReLU(0.2),
                )
            )
        self.blocks = nn.ModuleList(blocks)
        self.head = conv(ndf * mult, 1, 1, True)
        # Backwards from one output pixel: two stride-1 4x4 convs, then n_layers stride-2 ones.
        field = 7
        for _ in range(n_layers):
            field = 2 * field + 2
        self.receptive_field = field

    def _check(self, x: Tensor) -> None:
        super()._check(x)
        # Each stride-2 conv floors the size by 2; the last two convs remove one pixel each.
        smallest = 3 * 2**self.n_layers
        if min(x.shape[-2:]) < smallest:
            raise I2IError(
                f"The PatchGAN with n_layers={self.n_layers} needs images of at least "
                f"{smallest}x{smallest}, got {x.shape[-2]}x{x.shape[-1]}. Use fewer layers or "
                f"larger images."
            )


class PixelDiscriminator(_BlockDiscriminator):
    """PixelGAN: 1x1 convolutions only, so each logit judges a single pixel's colour."""

    def __init__(self, input_nc: int, ndf: int = 64, norm: str = "batch") -> None:
        super().__init__()
        check_positive("input_nc", input_nc)
        check_positive("ndf", ndf)
        bias = conv_bias(norm)
        self.input_nc = input_nc
        self.receptive_field = 1
        self.blocks = nn.ModuleList(
            [
                nn.Sequential(nn.Conv2d(input_nc, ndf, kernel_size=1), nn.LeakyReLU(0.2)),
                nn.Sequential(
                    nn.Conv2d(ndf, ndf * 2, kernel_size=1, bias=bias),
                    norm_layer(norm, ndf * 2),
                    nn.LeakyReLU(0.2),
                ),
            ]
        )
        self.head = nn.Conv2d(ndf * 2, 1, kernel_size=1, bias=bias)


@recipe_check(_check_patchgan)
def patchgan(input_nc: int, ndf: Filters = 64, n_layers: Layers = 3, norm: Norm = "batch") -> nn.Module:
    """PatchGAN discriminator; n_layers=3 judges 70x70 patches (the pix2pix default).

    ndf: filters in the first layer; n_layers: stride-2 convolutions (1 gives 16x16 patches, 3 gives
    70x70); norm: batch, instance or none.
    """
    check_norm(norm)
    return PatchDiscriminator(input_nc, ndf, n_layers, norm)


def pixelgan(input_nc: int, ndf: Filters = 64, norm: Norm = "batch") -> nn.Module:
    """1x1 PixelGAN discriminator: judges each pixel on its own (colour only, no texture).

    ndf: filters in the first layer; norm: batch, instance or none.
    """
    check_norm(norm)
    return PixelDiscriminator(input_nc, ndf, norm)


@hookimpl
def i2i_register_discriminators(registry):
    registry.add("patchgan", patchgan)
    registry.add("pixelgan", pixelgan)
