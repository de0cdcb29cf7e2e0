"""U-Nets that take a latent code z, so one input can map to many outputs (BicycleGAN's generators).

z, of shape (batch, nz), is tiled to the height and width of a feature map and concatenated to it as
nz extra channels, in one of two places:

- ``inject="input"``: to the image only, once, before the first convolution;
- ``inject="all"``: to the input of every down-sampling level, the outermost and innermost included.

The up-sampling path and the skip connections carry features without z in both variants. Apart from
the extra input channels the layers are those of the pix2pix U-Net (``i2i_pix2pix.generators.unet``):
``unet_z_input`` has exactly the parameters of a ``unet`` with ``input_nc + nz`` input channels.

Dropout is off by default, as in BicycleGAN: the latent code is the source of variety, and dropout
noise the generator learns to ignore would only blur the comparison between the two.
"""

from __future__ import annotations

import typing
from typing import Annotated, Literal

import torch
from i2i_pix2pix.generators import (
    Depth,
    Filters,
    Norm,
    UnetBlock,
    _check_input,
    check_positive,
    check_unet,
    unet_fit_problems,
    unet_levels,
)
from torch import Tensor, nn

from i2i import CheckContext, I2IError, Range, hookimpl, recipe_check, suggest

#: Size of the latent code z a recipe may ask for (BicycleGAN: 8).
LatentSize = Annotated[int, Range(1, 1024)]


def _check_depth(params: dict, context: CheckContext) -> list[str]:
    return unet_fit_problems(params["num_downs"], context.image_size, f"num_downs = {params['num_downs']}")


Inject = Literal["input", "all"]
INJECTS: tuple[str, ...] = typing.get_args(Inject)


def tile_code(z: Tensor, like: Tensor) -> Tensor:
    """``z`` (batch, nz) as nz constant feature maps of ``like``'s height and width."""
    return z[:, :, None, None].expand(-1, -1, like.shape[2], like.shape[3])


class LatentUnetBlock(UnetBlock):
    """One U-Net level whose down-sampling convolution may also see the tiled latent code.

    The layers are the pix2pix U-Net level's (:class:`UnetBlock`), with ``nz`` more input channels
    on the down convolution when ``takes_z``. They are kept as ``down``, ``submodule`` and ``up``
    (the state-dict keys of this generator), because the skip connection returns ``cat(x, up(...))``
    with the level's input ``x`` as it came in, without z: only the down-sampling path grows by
    ``nz`` channels.
    """

    def __init__(
        self,
        outer_nc: int,
        inner_nc: int,
        *,
        nz: int,
        takes_z: bool,
        input_nc: int | None = None,
        submodule: LatentUnetBlock | None = None,
        outermost: bool = False,
        innermost: bool = False,
        norm: str = "batch",
        dropout: bool = False,
    ) -> None:
        in_channels = (outer_nc if input_nc is None else input_nc) + (nz if takes_z else 0)
        super().__init__(
            outer_nc,
            inner_nc,
            input_nc=in_channels,
            submodule=submodule,
            outermost=outermost,
            innermost=innermost,
            norm=norm,
            dropout=dropout,
        )
        self.takes_z = takes_z

    def assemble(self, down: list[nn.Module], submodule: nn.Module | None, up: list[nn.Module]) -> None:
        # Registered in this order so that modules() lists the down convolutions outermost first.
        self.down = nn.Sequential(*down)
        self.submodule = submodule
        self.up = nn.Sequential(*up)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:  # type: ignore[override]
        features = self.down(torch.cat([x, tile_code(z, x)], dim=1) if self.takes_z else x)
        if self.submodule is not None:
            features = self.submodule(features, z)
        out = self.up(features)
        return out if self.outermost else torch.cat([x, out], dim=1)


class LatentUnetGenerator(nn.Module):
    """U-Net generator ``G(x, z)`` with a latent code concatenated at the input or at every level.

    Height and width must be multiples of ``2**num_downs``; ``z`` must have shape (batch, nz).
    """

    def __init__(
        self,
        input_nc: int,
        output_nc: int,
        num_downs: int = 8,
        ngf: int = 64,
        norm: str = "batch",
        dropout: bool = False,
        nz: int = 8,
        inject: str = "all",
    ) -> None:
        super().__init__()
        check_unet(input_nc, output_nc, num_downs, ngf, norm)
        check_positive("nz", nz)
        if inject not in INJECTS:
            raise I2IError(f"Unknown latent injection {inject!r}. {suggest(str(inject), INJECTS)}")
        self.input_nc = input_nc
        self.output_nc = output_nc
        self.num_downs = num_downs
        self.latent_dim = nz  # > 0: the training loop draws z ~ N(0, I) and calls forward(x, z)
        self.inject = inject

        def level(outer_nc: int, inner_nc: int, *, outermost: bool = False, **where) -> LatentUnetBlock:
            takes_z = outermost or inject == "all"  # the image always gets z
            return LatentUnetBlock(
                outer_nc, inner_nc, nz=nz, takes_z=takes_z, outermost=outermost, norm=norm, **where
            )

        self.model = unet_levels(level, input_nc, output_nc, num_downs, ngf, dropout)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        what = f"latent U-Net with num_downs={self.num_downs}"
        _check_input(x, self.input_nc, 2**self.num_downs, what)
        if not isinstance(z, Tensor) or z.shape != (x.shape[0], self.latent_dim):
            got = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise I2IError(
                f"The {what} expects a latent code of shape (batch, nz) = "
                f"({x.shape[0]}, {self.latent_dim}), got {got}."
            )
        return self.model(x, z.to(x.dtype))


@recipe_check(_check_depth)
def unet_latent(
    input_nc: int,
    output_nc: int,
    num_downs: Depth = 8,
    ngf: Filters = 64,
    norm: Norm = "batch",
    dropout: bool = False,
    nz: LatentSize = 8,
    inject: Inject = "all",
) -> LatentUnetGenerator:
    """U-Net taking a latent code z of nz values, added at the input or at every down level.

    num_downs: halvings (at least 5); ngf: filters in the first layer; norm: batch, instance or
    none; dropout: 50% dropout in the middle 8*ngf levels (off by default, as in BicycleGAN);
    nz: size of z (BicycleGAN uses 8); inject: "input" (the image only) or "all" (every level).
    """
    return LatentUnetGenerator(input_nc, output_nc, num_downs, ngf, norm, dropout, nz, inject)


@recipe_check(_check_depth)
def unet_z_input(
    input_nc: int,
    output_nc: int,
    num_downs: Depth = 8,
    ngf: Filters = 64,
    norm: Norm = "batch",
    dropout: bool = False,
    nz: LatentSize = 8,
) -> LatentUnetGenerator:
    """U-Net with a latent code z concatenated to the input image only (BicycleGAN's add-to-input)."""
    return LatentUnetGenerator(input_nc, output_nc, num_downs, ngf, norm, dropout, nz, "input")


@recipe_check(_check_depth)
def unet_z_all(
    input_nc: int,
    output_nc: int,
    num_downs: Depth = 8,
    ngf: Filters = 64,
    norm: Norm = "batch",
    dropout: bool = False,
    nz: LatentSize = 8,
) -> LatentUnetGenerator:
    """U-Net with a latent code z concatenated to every down level's input (BicycleGAN's add-to-all)."""
    return LatentUnetGenerator(input_nc, output_nc, num_downs, ngf, norm, dropout, nz, "all")


@hookimpl
def i2i_register_generators(registry):
    for factory in (unet_latent, unet_z_input, unet_z_all):
        registry.add(factory.__name__, factory)
