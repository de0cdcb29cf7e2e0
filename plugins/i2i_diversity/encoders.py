"""Encoders E(B) -> (mu, logvar) for BicycleGAN: they map a target image to the latent code that
should reproduce it, as a diagonal Gaussian over z.

Two kinds, after BicycleGAN's ``E_NLayers`` and ``E_ResNet``:

- ``conv``: ``n_layers`` strided 4x4 convolutions with LeakyReLU (normalised after the first);
- ``resnet``: a strided 4x4 convolution, then ``n_layers - 1`` residual blocks that each end in a
  2x2 average pool.

Both halve the image ``n_layers`` times, average the feature map over all positions and read mu and
logvar with two linear heads. BicycleGAN pools a fixed 8x8 window instead, which ties an encoder to
one image size; the global mean lets one encoder serve any size that is a multiple of
``2**n_layers``. Channels grow up to 4x ``nef`` and stay there, as in BicycleGAN (doubling in
``conv``, by one ``nef`` per block in ``resnet``).

Encoders are not a registry kind: the ``bicyclegan`` loss builds and owns one (see ``losses``).
"""

from __future__ import annotations

import typing
from typing import Literal

from i2i_pix2pix.generators import Norm, check_norm, check_positive, conv_bias, norm_layer
from torch import Tensor, nn

from i2i import I2IError, suggest

EncoderKind = Literal["resnet", "conv"]
ENCODER_KINDS: tuple[str, ...] = typing.get_args(EncoderKind)
#: Channels stop growing at this multiple of ``nef`` (BicycleGAN's cap).
MAX_CHANNEL_MULTIPLE = 4


class LatentEncoder(nn.Module):
    """Shared tail of the encoders: global average pool, then linear heads for mu and logvar.

    Subclasses fill ``features`` (a network that halves the image ``n_layers`` times and ends with
    ``channels`` maps) and set ``min_size``.
    """

    def __init__(self, input_nc: int, nz: int, n_layers: int, channels: int, features: nn.Module) -> None:
        super().__init__()
        self.input_nc = input_nc
        self.nz = nz
        self.n_layers = n_layers
        self.min_size = 2**n_layers
        self.features = features
        self.mu = nn.Linear(channels, nz)
        self.logvar = nn.Linear(channels, nz)

    def _check_input(self, x: Tensor) -> None:
        name = type(self).__name__
        if x.dim() != 4 or x.shape[1] != self.input_nc:
            raise I2IError(
                f"The {name} expects images of shape (N, {self.input_nc}, H, W), got {tuple(x.shape)}."
            )
        multiple = 2**self.n_layers
        height, width = x.shape[-2:]
        if height % multiple or width % multiple or min(height, width) < self.min_size:
            raise I2IError(
                f"The {name} with n_layers={self.n_layers} needs a height and width that are "
                f"multiples of {multiple} and at least {self.min_size}, got {height}x{width}. Use "
                "fewer layers for small images."
            )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self._check_input(x)
        pooled = self.features(x).mean(dim=(2, 3))
        return self.mu(pooled), self.logvar(pooled)


class ConvEncoder(LatentEncoder):
    """``n_layers`` strided 4x4 convolutions (after BicycleGAN's ``E_NLayers``)."""

    def __init__(self, input_nc: int, nz: int, nef: int, n_layers: int, norm: str) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(input_nc, nef, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        channels = nef
        for level in range(1, n_layers):
            out = nef * min(2**level, MAX_CHANNEL_MULTIPLE)
            layers += [
                nn.Conv2d(channels, out, kernel_size=4, stride=2, padding=1, bias=conv_bias(norm)),
                norm_layer(norm, out),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            channels = out
        super().__init__(input_nc, nz, n_layers, channels, nn.Sequential(*layers))
        if norm != "none" and n_layers > 1:
            # The last normalisation sees a map of side size / 2**n_layers; instance norm (and batch
            # norm at batch size 1) cannot normalise a single position.
            self.min_size = 2 ** (n_layers + 1)


class DownResidualBlock(nn.Module):
    """Residual block that also halves the resolution: ``main(x) + shortcut(x)``, both pooled.

    main: norm, LeakyReLU, 3x3 conv, norm, LeakyReLU, 3x3 conv to ``out_channels``, 2x2 mean pool;
    shortcut: 2x2 mean pool, 1x1 conv to ``out_channels``.
    """

    def __init__(self, in_channels: int, out_channels: int, norm: str) -> None:
        super().__init__()
        self.main = nn.Sequential(
            norm_layer(norm, in_channels),
            nn.LeakyReLU(0.2),
            nn.Conv2d(in_channels, in_channels, kernel_size=3, padding=1, bias=conv_bias(norm)),
            norm_layer(norm, in_channels),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
            nn.AvgPool2d(2),
        )
        self.shortcut = nn.Sequential(
            nn.AvgPool2d(2), nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x) + self.shortcut(x)


class ResnetEncoder(LatentEncoder):
    """A strided conv stem and ``n_layers - 1`` down-sampling residual blocks (BicycleGAN's ``E_ResNet``)."""

    def __init__(self, input_nc: int, nz: int, nef: int, n_layers: int, norm: str) -> None:
        layers: list[nn.Module] = [nn.Conv2d(input_nc, nef, kernel_size=4, stride=2, padding=1)]
        channels = nef
        for level in range(1, n_layers):
            out = nef * min(level + 1, MAX_CHANNEL_MULTIPLE)
            layers.append(DownResidualBlock(channels, out, norm))
            channels = out
        layers.append(nn.LeakyReLU(0.2, inplace=True))
        # Every normalisation sees at least a 2x2 map, so 2**n_layers is also the smallest size.
        super().__init__(input_nc, nz, n_layers, channels, nn.Sequential(*layers))


def build_encoder(
    kind: EncoderKind, input_nc: int, nz: int, nef: int = 64, n_layers: int = 4, norm: Norm = "instance"
) -> LatentEncoder:
    """An encoder of ``input_nc``-channel images to (mu, logvar), each of shape (batch, nz).

    kind: "resnet" or "conv"; nef: filters of the first layer; n_layers: halvings of the image
    (sizes must be multiples of 2**n_layers); norm: instance, batch or none.
    """
    if kind not in ENCODER_KINDS:
        raise I2IError(f"Unknown encoder kind {kind!r}. {suggest(str(kind), ENCODER_KINDS)}")
    check_positive("input_nc", input_nc)
    check_positive("nz", nz)
    check_positive("nef", nef)
    check_positive("n_layers", n_layers)
    check_norm(norm)
    cls = ResnetEncoder if kind == "resnet" else ConvEncoder
    return cls(input_nc, nz, nef, n_layers, norm)
