"""The default pix2pix generators: the U-Net and the ResNet encoder/decoder.

Both follow the architectures of the original pix2pix/CycleGAN code, so a recipe with the usual
settings reproduces its networks exactly (``unet_256`` with 64 filters and batch norm has 54,413,955
parameters for RGB to RGB). Outputs are squashed to [-1, 1] by a final ``tanh``; the U-Nets can
instead end without it (``output = "logits"``) and so give unbounded class scores, for segmentation.
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Sequence
from typing import Annotated, Literal

import torch
from torch import Tensor, nn

from i2i import CheckContext, I2IError, Range, hookimpl, recipe_check, suggest

Norm = Literal["batch", "instance", "none"]
Padding = Literal["reflect", "replicate", "zero"]
Output = Literal["tanh", "logits"]
NORMS: tuple[str, ...] = typing.get_args(Norm)
PADDINGS: tuple[str, ...] = typing.get_args(Padding)
OUTPUTS: tuple[str, ...] = typing.get_args(Output)
#: What recipes may ask for: filters of the first layer (pix2pix: 64), U-Net halvings, ResNet blocks.
Filters = Annotated[int, Range(1, 512)]
Depth = Annotated[int, Range(5, 16)]
Blocks = Annotated[int, Range(0, 64)]


# -- shared helpers ------------------------------------------------------------------------------
def check_norm(norm: str) -> str:
    """Return ``norm`` if it is a known normalisation, raise a helpful :class:`I2IError` if not."""
    if norm not in NORMS:
        raise I2IError(f"Unknown normalisation {norm!r}. {suggest(str(norm), NORMS)}")
    return norm


def check_positive(name: str, value: int, minimum: int = 1) -> int:
    """Return ``value`` if it is an integer of at least ``minimum``, raise otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise I2IError(f"{name} must be an integer of at least {minimum}, got {value!r}.")
    return value


def norm_layer(norm: str, channels: int) -> nn.Module:
    """A 2-d normalisation layer over ``channels`` feature maps.

    ``batch`` learns a scale and shift and tracks running statistics; ``instance`` does neither
    (as in pix2pix); ``none`` is the identity.
    """
    check_norm(norm)
    if norm == "batch":
        return nn.BatchNorm2d(channels, affine=True, track_running_stats=True)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    return nn.Identity()


def conv_bias(norm: str) -> bool:
    """Whether a convolution followed by ``norm`` needs its own bias (batch norm has a shift)."""
    return check_norm(norm) != "batch"


def _check_input(x: Tensor, input_nc: int, multiple: int, what: str) -> None:
    """Cheap shape checks that turn PyTorch's opaque size errors into a clear message."""
    if x.dim() != 4:
        raise I2IError(f"The {what} expects a batch of images (N, C, H, W), got shape {tuple(x.shape)}.")
    if x.shape[1] != input_nc:
        raise I2IError(
            f"The {what} was built for {input_nc} input channel(s) but got an image with {x.shape[1]}."
        )
    height, width = x.shape[-2:]
    if height % multiple or width % multiple:
        raise I2IError(
            f"The {what} needs an image size that is a multiple of {multiple}, got "
            f"{height}x{width}. Resize or crop the images (for example with load_size/crop_size)."
        )


def check_unet(input_nc: int, output_nc: int, num_downs: int, ngf: int, norm: str) -> None:
    """The checks every U-Net shares (the latent-code U-Nets of other plugins too)."""
    check_positive("input_nc", input_nc)
    check_positive("output_nc", output_nc)
    check_positive("num_downs", num_downs, minimum=5)
    check_positive("ngf", ngf)
    check_norm(norm)


def unet_fit_problems(num_downs: int, size: int | None, key: str) -> list[str]:
    """Why a U-Net that halves ``num_downs`` times cannot train on ``size`` x ``size`` images."""
    if size is None or size % 2**num_downs == 0:
        return []
    if size % 32:
        return [
            f"{key}: a U-Net halves the image at least 5 times, so the training images must be a "
            f"multiple of 32 on each side; the dataset's crop is {size}x{size}."
        ]
    deepest = max(n for n in range(5, 17) if size % 2**n == 0)
    return [
        f"{key}: this U-Net halves the image {num_downs} times, so the training images must be a "
        f"multiple of {2**num_downs} on each side; the dataset's crop is {size}x{size}: use "
        f"num_downs 5 to {deepest} (unet_128 is 7, unet_256 is 8)."
    ]


def _check_unet(params: dict, context: CheckContext) -> list[str]:
    return unet_fit_problems(params["num_downs"], context.image_size, f"num_downs = {params['num_downs']}")


def _fixed_depth_check(name: str, num_downs: int):
    def check(params: dict, context: CheckContext) -> list[str]:
        return unet_fit_problems(num_downs, context.image_size, f"name = {name!r}")

    return check


def _check_resnet(params: dict, context: CheckContext) -> list[str]:
    size = context.image_size
    if size is None or size % 4 == 0:
        return []
    return [
        f"name = {params['name']!r}: the ResNet generator halves the image twice, so the training "
        f"images must be a multiple of 4 on each side; the dataset's crop is {size}x{size}."
    ]


# -- U-Net ---------------------------------------------------------------------------------------
class UnetBlock(nn.Module):
    """One level of the U-Net: downsample, the inner levels, upsample, and a skip connection.

    The outermost level maps ``input_nc`` to ``outer_nc`` channels and ends in ``tanh`` (unless
    ``tanh=False``, for raw logits); every other level returns ``cat(x, f(x))``, doubling the
    channels its parent sees.

    The layers are made here once for every U-Net; a subclass may store them differently by
    overriding :meth:`assemble` (the latent U-Nets keep ``down``, ``submodule`` and ``up`` apart, so
    that they can feed the code to the down path only).
    """

    def __init__(
        self,
        outer_nc: int,
        inner_nc: int,
        *,
        input_nc: int | None = None,
        submodule: nn.Module | None = None,
        outermost: bool = False,
        innermost: bool = False,
        norm: str = "batch",
        dropout: bool = False,
        tanh: bool = True,
    ) -> None:
        super().__init__()
        if (submodule is None) != innermost:
            raise ValueError("exactly the innermost U-Net level has no submodule")
        self.outermost = outermost
        bias = conv_bias(norm)
        in_channels = outer_nc if input_nc is None else input_nc
        down_conv = nn.Conv2d(in_channels, inner_nc, kernel_size=4, stride=2, padding=1, bias=bias)
        # Not in place: the input is also carried by the skip connection. (Applying ReLU after the
        # concatenation makes this equivalent to the in-place version of the original code.)
        down_act = nn.LeakyReLU(0.2)
        up_act = nn.ReLU(inplace=True)

        if outermost:
            up_conv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1)
            down: list[nn.Module] = [down_conv]
            # The tanh has no weights, so leaving it out keeps the state-dict keys unchanged.
            up: list[nn.Module] = [up_act, up_conv, *([nn.Tanh()] if tanh else [])]
        elif innermost:
            up_conv = nn.ConvTranspose2d(inner_nc, outer_nc, kernel_size=4, stride=2, padding=1, bias=bias)
            down = [down_act, down_conv]
            up = [up_act, up_conv, norm_layer(norm, outer_nc)]
        else:
            up_conv = nn.ConvTranspose2d(
                inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1, bias=bias
            )
            down = [down_act, down_conv, norm_layer(norm, inner_nc)]
            up = [up_act, up_conv, norm_layer(norm, outer_nc), *([nn.Dropout(0.5)] if dropout else [])]
        self.assemble(down, submodule, up)

    def assemble(self, down: list[nn.Module], submodule: nn.Module | None, up: list[nn.Module]) -> None:
        """Keep the level's layers: pix2pix's layout, one ``model`` sequence (the state-dict keys)."""
        inner = [] if submodule is None else [submodule]
        self.model = nn.Sequential(*down, *inner, *up)

    def forward(self, x: Tensor) -> Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], dim=1)


class UnetLevel(typing.Protocol):
    """What :func:`unet_levels` calls to make one level (a :class:`UnetBlock` with settings bound)."""

    def __call__(
        self,
        outer_nc: int,
        inner_nc: int,
        *,
        input_nc: int | None = None,
        submodule: nn.Module | None = None,
        outermost: bool = False,
        innermost: bool = False,
        dropout: bool = False,
    ) -> nn.Module: ...


def unet_levels(
    level: UnetLevel, input_nc: int, output_nc: int, num_downs: int, ngf: int, dropout: bool
) -> nn.Module:
    """The nested levels of a U-Net that halves the image ``num_downs`` times; returns the outermost.

    Built from the bottleneck outwards, each level wrapping the one below it: ``num_downs - 4``
    levels of ``8 * ngf`` filters (dropout, when on, in all but the innermost), then ``4``, ``2`` and
    ``1 * ngf``, then the outermost from ``input_nc`` to ``output_nc`` channels. Every U-Net has this
    structure; ``level`` decides what one level is made of.
    """
    block = level(ngf * 8, ngf * 8, innermost=True)
    for _ in range(num_downs - 5):
        block = level(ngf * 8, ngf * 8, submodule=block, dropout=dropout)
    block = level(ngf * 4, ngf * 8, submodule=block)
    block = level(ngf * 2, ngf * 4, submodule=block)
    block = level(ngf, ngf * 2, submodule=block)
    return level(output_nc, ngf, input_nc=input_nc, submodule=block, outermost=True)


class UnetGenerator(nn.Module):
    """U-Net generator: an encoder/decoder with skip connections between mirrored levels.

    The image is halved ``num_downs`` times (to 1x1 for a ``2**num_downs`` input), so its height and
    width must be multiples of ``2**num_downs``. ``output="logits"`` drops the final ``tanh``.
    """

    latent_dim = 0

    def __init__(
        self,
        input_nc: int,
        output_nc: int,
        num_downs: int = 8,
        ngf: int = 64,
        norm: str = "batch",
        dropout: bool = True,
        output: str = "tanh",
    ) -> None:
        super().__init__()
        check_unet(input_nc, output_nc, num_downs, ngf, norm)
        if output not in OUTPUTS:
            raise I2IError(f"Unknown U-Net output {output!r}. {suggest(str(output), OUTPUTS)}")
        self.input_nc = input_nc
        self.output_nc = output_nc
        self.num_downs = num_downs
        self.output = output
        level = functools.partial(UnetBlock, norm=norm, tanh=output == "tanh")
        self.model = unet_levels(level, input_nc, output_nc, num_downs, ngf, dropout)

    def forward(self, x: Tensor) -> Tensor:
        _check_input(x, self.input_nc, 2**self.num_downs, f"U-Net with num_downs={self.num_downs}")
        return self.model(x)


@recipe_check(_check_unet)
def unet(
    input_nc: int,
    output_nc: int,
    num_downs: Depth = 8,
    ngf: Filters = 64,
    norm: Norm = "batch",
    dropout: bool = True,
    output: Output = "tanh",
) -> UnetGenerator:
    """U-Net with skip connections; the image size must be a multiple of 2**num_downs.

    num_downs: number of halvings (at least 5); ngf: filters in the first layer; norm: batch,
    instance or none; dropout: 50% dropout in the innermost 512-filter levels (pix2pix's noise);
    output: "tanh" squashes to [-1, 1] (images), "logits" leaves the scores unbounded (one channel
    per class, for a segmenter trained with the cross_entropy loss).
    """
    return UnetGenerator(input_nc, output_nc, num_downs, ngf, norm, dropout, output)


@recipe_check(_fixed_depth_check("unet_128", 7))
def unet_128(
    input_nc: int,
    output_nc: int,
    ngf: Filters = 64,
    norm: Norm = "batch",
    dropout: bool = True,
    output: Output = "tanh",
) -> UnetGenerator:
    """U-Net with 7 downsamplings, for 128x128 images (sizes must be multiples of 128).

    output: "tanh" for images in [-1, 1], "logits" for unbounded class scores (segmentation).
    """
    return UnetGenerator(input_nc, output_nc, 7, ngf, norm, dropout, output)


@recipe_check(_fixed_depth_check("unet_256", 8))
def unet_256(
    input_nc: int,
    output_nc: int,
    ngf: Filters = 64,
    norm: Norm = "batch",
    dropout: bool = True,
    output: Output = "tanh",
) -> UnetGenerator:
    """U-Net with 8 downsamplings, for 256x256 images: the pix2pix default generator.

    output: "tanh" for images in [-1, 1], "logits" for unbounded class scores (segmentation).
    """
    return UnetGenerator(input_nc, output_nc, 8, ngf, norm, dropout, output)


# -- ResNet --------------------------------------------------------------------------------------
def _padded_conv3x3(dim: int, padding: str, bias: bool) -> list[nn.Module]:
    if padding == "reflect":
        return [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, kernel_size=3, bias=bias)]
    if padding == "replicate":
        return [nn.ReplicationPad2d(1), nn.Conv2d(dim, dim, kernel_size=3, bias=bias)]
    return [nn.Conv2d(dim, dim, kernel_size=3, padding=1, bias=bias)]


class ResnetBlock(nn.Module):
    """A residual block: ``x + norm(conv(relu(norm(conv(x)))))``, optionally with dropout."""

    def __init__(self, dim: int, padding: str, norm: str, dropout: bool) -> None:
        super().__init__()
        bias = conv_bias(norm)
        layers: list[nn.Module] = [
            *_padded_conv3x3(dim, padding, bias),
            norm_layer(norm, dim),
            nn.ReLU(inplace=True),
        ]
        if dropout:
            layers.append(nn.Dropout(0.5))
        layers += [*_padded_conv3x3(dim, padding, bias), norm_layer(norm, dim)]
        self.block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


class ResnetGenerator(nn.Module):
    """ResNet generator: two downsamplings, ``n_blocks`` residual blocks, two upsamplings.

    Height and width must be multiples of 4 so that the output has the input's size.
    """

    latent_dim = 0

    def __init__(
        self,
        input_nc: int,
        output_nc: int,
        n_blocks: int = 9,
        ngf: int = 64,
        norm: str = "batch",
        dropout: bool = False,
        padding: str = "reflect",
    ) -> None:
        super().__init__()
        check_positive("input_nc", input_nc)
        check_positive("output_nc", output_nc)
        check_positive("n_blocks", n_blocks, minimum=0)
        check_positive("ngf", ngf)
        check_norm(norm)
        if padding not in PADDINGS:
            raise I2IError(f"Unknown padding {padding!r}. {suggest(str(padding), PADDINGS)}")
        self.input_nc = input_nc
        self.output_nc = output_nc
        bias = conv_bias(norm)

        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(input_nc, ngf, kernel_size=7, bias=bias),
            norm_layer(norm, ngf),
            nn.ReLU(inplace=True),
        ]
        channels = ngf
        for _ in range(2):
            layers += [
                nn.Conv2d(channels, channels * 2, kernel_size=3, stride=2, padding=1, bias=bias),
                norm_layer(norm, channels * 2),
                nn.ReLU(inplace=True),
            ]
            channels *= 2
        layers += [ResnetBlock(channels, padding, norm, dropout) for _ in range(n_blocks)]
        for _ in range(2):
            layers += [
                nn.ConvTranspose2d(
                    channels,
                    channels // 2,
                    kernel_size=3,
                    stride=2,
                    padding=1,
                    output_padding=1,
                    bias=bias,
                ),
                norm_layer(norm, channels // 2),
                nn.ReLU(inplace=True),
            ]
            channels //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(channels, output_nc, kernel_size=7), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        _check_input(x, self.input_nc, 4, "ResNet generator")
        return self.model(x)

    def encode(self, x: Tensor, layers: Sequence[int]) -> list[Tensor]:
        """The activations after the given layers of ``self.model``, in the order asked for.

        For feature losses on the encoder, such as CUT's PatchNCE. Index ``i`` is the output of
        ``self.model[i]``: 0 the reflection padding (the padded input image), 1 the 7x7 conv, 4 and
        7 the two stride-2 convs (before their norm), 10 the first residual block, 10 + k block k.
        The layers after the highest index are not run. In-place ReLUs run out of place here, so
        a returned activation is never overwritten; the outputs equal the forward pass's, and
        nothing about the generator (parameters, ``forward``) changes.
        """
        _check_input(x, self.input_nc, 4, "ResNet generator")
        wanted = list(layers)
        count = len(self.model)
        bad = [i for i in wanted if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < count]
        if bad or not wanted:
            raise I2IError(
                f"The ResNet generator's encode() takes layer indices from 0 to {count - 1}, got "
                f"{wanted!r}."
            )
        kept: dict[int, Tensor] = {}
        last = max(wanted)
        feat = x
        for index, layer in enumerate(self.model):
            feat = torch.relu(feat) if isinstance(layer, nn.ReLU) else layer(feat)
            if index in wanted:
                kept[index] = feat
            if index == last:
                break
        return [kept[i] for i in wanted]


@recipe_check(_check_resnet)
def resnet(
    input_nc: int,
    output_nc: int,
    n_blocks: Blocks = 9,
    ngf: Filters = 64,
    norm: Norm = "batch",
    dropout: bool = False,
    padding: Padding = "reflect",
) -> ResnetGenerator:
    """ResNet encoder/decoder with n_blocks residual blocks; sizes must be multiples of 4.

    n_blocks: residual blocks at 1/4 resolution; ngf: filters in the first layer; norm: batch,
    instance or none; dropout: 50% dropout inside each block; padding: reflect, replicate or zero.
    """
    return ResnetGenerator(input_nc, output_nc, n_blocks, ngf, norm, dropout, padding)


@recipe_check(_check_resnet)
def resnet_6blocks(
    input_nc: int,
    output_nc: int,
    ngf: Filters = 64,
    norm: Norm = "batch",
    dropout: bool = False,
    padding: Padding = "reflect",
) -> ResnetGenerator:
    """ResNet generator with 6 residual blocks (CycleGAN's choice for 128x128 images)."""
    return ResnetGenerator(input_nc, output_nc, 6, ngf, norm, dropout, padding)


@recipe_check(_check_resnet)
def resnet_9blocks(
    input_nc: int,
    output_nc: int,
    ngf: Filters = 64,
    norm: Norm = "batch",
    dropout: bool = False,
    padding: Padding = "reflect",
) -> ResnetGenerator:
    """ResNet generator with 9 residual blocks (CycleGAN's choice for 256x256 images)."""
    return ResnetGenerator(input_nc, output_nc, 9, ngf, norm, dropout, padding)


@hookimpl
def i2i_register_generators(registry):
    for factory in (unet, unet_128, unet_256, resnet, resnet_6blocks, resnet_9blocks):
        registry.add(factory.__name__, factory)
