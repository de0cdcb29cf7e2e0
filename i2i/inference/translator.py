"""A trained generator as a Python callable: ``i2i.load(run)(image)``.

It feeds the network exactly what ``i2i translate`` feeds it (the same decoding, resizing, padding
and seeding: :func:`~i2i.inference.translate.translate_tensor`), so a picture translated here has
the pixels ``i2i translate`` writes for the same file and settings.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from i2i.assembly.host import PluginHost, get_host
from i2i.data.imaging import to_pil, to_pixels
from i2i.errors import DataError, I2IError
from i2i.inference.loading import TrainedGenerator, load_trained
from i2i.inference.translate import decode_image, input_half, read_input, size_multiple, translate_tensor
from i2i.sampling import Sampler, check_mode, draw, generate

#: The plain samplers: the network in eval mode (``i2i translate``) or in train mode (``--mode train``).
PLAIN = "translate"


class _Plain(Sampler):
    """What ``i2i translate --mode MODE`` does: the network in that mode, a random code if it takes one."""

    def __init__(self, mode: str) -> None:
        self.mode = check_mode(mode)
        self.batched = mode == "eval"  # train-mode batch norm: each sample is its own batch of one

    def describe(self) -> str:
        return f"as i2i translate --mode {self.mode}"


class Translator:
    """A trained generator with the input rules of ``i2i translate``; call it on images.

    Accepts a PIL image, a NumPy array (uint8, or float in [0, 1]; H x W or H x W x C), a torch
    tensor (uint8, or float in [0, 1]; C x H x W, or N x C x H x W), a file path, or a list of
    these, and answers in the same kind (a list for a list). Outputs keep each input's size.
    """

    def __init__(self, trained: TrainedGenerator, host: PluginHost, *, size: int | None = None) -> None:
        if size is not None and size < 0:
            raise I2IError(f"size={size}: give a side length in pixels, or 0 for the input's own size.")
        self.trained = trained
        self.host = host
        self.generator: nn.Module = trained.generator
        self.recipe = trained.recipe
        self.device = trained.device
        self.input_nc, self.output_nc = trained.input_nc, trained.output_nc
        self.path = str(trained.path)
        #: The side inputs are resized to first (``i2i translate --size``); None: their own size.
        self.size: int | None = size or None
        self.multiple = size_multiple(self.generator)
        self.seed = int(self.recipe["experiment"]["seed"])
        self._prepared: dict[str, nn.Module] = {}

    @classmethod
    def load(
        cls,
        path: str | Path,
        device: str | None = "auto",
        *,
        size: int | None = None,
        direction: str = "AtoB",
        host: PluginHost | None = None,
    ) -> Translator:
        """A trained generator ready to call: ``i2i.load("runs/facades_quick")(image)``.

        ``path``: a run directory, a checkpoint file or an ``i2i export --format safetensors`` file.
        ``device``: "auto" (a GPU when there is one), "cpu", "cuda", ... or None for the recipe's.
        ``direction``: "BtoA" for the reverse generator of a model that has one (CycleGAN).
        """
        host = host or get_host()
        trained = load_trained(path, host, None if device in (None, "recipe") else device, direction)
        return cls(trained, host, size=size)

    @functools.cached_property
    def samplers(self) -> dict[str, Sampler]:
        """``i2i translate``'s two modes, then every registered sampler that can diversify G.

        Found on first use: building and checking every sampler is work a plain translation (or
        a metric that loads a segmenter) does not need."""
        found: dict[str, Sampler] = {PLAIN: _Plain("eval"), f"{PLAIN}_train": _Plain("train")}
        generator = self.generator
        for component in self.host.registry("sampler"):
            try:
                sampler = component.build()
                sampler.check(generator)
            except (I2IError, TypeError):  # does not apply to this G, or needs parameters
                continue
            found[component.name] = sampler
        return found

    def _net(self, name: str) -> nn.Module:
        if name not in self._prepared:
            self._prepared[name] = self.samplers[name].prepare(self.generator).to(self.device)
        return self._prepared[name]

    def _sampler_name(self, sampler: str) -> str:
        if sampler not in self.samplers:
            names = ", ".join(self.samplers)
            raise I2IError(f"Unknown sampler {sampler!r}; this generator offers {names}.")
        return sampler

    @torch.no_grad()
    def __call__(
        self,
        images: Any,
        *,
        mode: str = "eval",
        size: int | None = None,
        seed: int | None = None,
        aligned: bool = False,
    ) -> Any:
        """Translate one image or a list, as ``i2i translate`` would (``aligned``: inputs are A|B
        pairs and the recipe's direction picks the input half; ``size``: as ``--size``)."""
        if mode not in ("eval", "train"):
            raise I2IError(f"mode={mode!r}: use eval or train.")
        many, items = _as_list(images)
        net = self.generator if mode == "eval" else self._net(f"{PLAIN}_train")
        side = self.size if size is None else (size or None)
        direction = self.recipe["data"].get("direction", "AtoB")
        torch.manual_seed(self.seed if seed is None else int(seed))  # as i2i translate seeds
        outputs = []
        for item in items:
            x, kind = self._decode(item)
            if aligned:
                x = input_half(x, direction, self.trained.direction)
            ys, _ = translate_tensor(x, self.multiple, side, lambda f: generate(net, f[None].to(self.device)))
            outputs.append(_encode(ys[0], kind))
        return _regroup(outputs, many, images)

    @torch.no_grad()
    def sample(self, image: Any, k: int, *, sampler: str = PLAIN, seed: int | None = None) -> list[Any]:
        """``k`` outputs for one input from a sampler (``translator.samplers`` lists them: test-time
        dropout, latent codes, ...), drawn as the diversity experiment draws them."""
        if k < 1:
            raise I2IError(f"k={k}: ask for at least one sample.")
        name = self._sampler_name(sampler)
        x, kind = self._decode(image)
        net, chosen = self._net(name), self.samplers[name]
        torch.manual_seed(self.seed if seed is None else int(seed))
        ys, _ = translate_tensor(x, self.multiple, self.size, lambda f: draw(net, chosen, f, k, self.device))
        return [_encode(y, kind) for y in ys]

    def _decode(self, item: Any) -> tuple[torch.Tensor, str]:
        """(C, H, W) uint8 or float in [0, 1], as :func:`read_input` decodes a file; and the kind."""
        channels = self.input_nc
        if isinstance(item, (str, Path)):
            return read_input(Path(item), channels), "pil"
        if isinstance(item, Image.Image):
            return decode_image(item, channels, "the image"), "pil"
        if isinstance(item, np.ndarray):
            if item.dtype == np.uint8:
                array = item[..., 0] if item.ndim == 3 and item.shape[2] == 1 else item
                return decode_image(Image.fromarray(array), channels, "the array"), "numpy"
            if item.ndim == 2:
                item = item[..., None]
            x = torch.from_numpy(np.ascontiguousarray(item, np.float32)).permute(2, 0, 1)
            return _float_tensor(x, channels), "numpy"
        if isinstance(item, torch.Tensor):
            x = item.detach().cpu()
            if x.ndim == 2:
                x = x[None]
            if x.dtype == torch.uint8:
                return _channels(x, channels), "tensor"
            return _float_tensor(x.float(), channels), "tensor"
        raise I2IError(
            f"Cannot translate a {type(item).__name__}: give a PIL image, a NumPy array, a torch tensor, "
            "a file path, or a list of them."
        )

    def __repr__(self) -> str:
        return f"Translator({self.path!r}, device={self.device}, {self.input_nc}->{self.output_nc} channels)"


def _channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    if x.ndim != 3:
        raise DataError(f"An image tensor is C x H x W; this one has shape {tuple(x.shape)}.")
    if x.shape[0] == channels:
        return x.contiguous()
    if x.shape[0] == 1:
        return x.expand(channels, -1, -1).contiguous()
    raise DataError(f"The input has {x.shape[0]} channels; the generator takes {channels}.")


def _float_tensor(x: torch.Tensor, channels: int) -> torch.Tensor:
    x = _channels(x, channels)
    if x.numel() and (x.min() < 0 or x.max() > 1):
        raise DataError(
            "A float image must hold values in [0, 1] (as torchvision's to_tensor gives); "
            f"this one spans [{x.min():.3g}, {x.max():.3g}]."
        )
    return x


def _encode(y: torch.Tensor, kind: str) -> Any:
    """One output (C, H, W) in [-1, 1] as the PNG ``i2i translate`` writes would hold it."""
    if kind == "pil":
        return to_pil(y)
    pixels = to_pixels(y)
    if kind == "numpy":
        array = pixels.permute(1, 2, 0).numpy()
        return array[..., 0] if array.shape[2] == 1 else array
    return pixels.float() / 255.0


def _as_list(images: Any) -> tuple[bool, list[Any]]:
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        return True, list(images)
    if isinstance(images, Sequence) and not isinstance(images, (str, bytes)):
        return True, list(images)
    return False, [images]


def _regroup(outputs: list[Any], many: bool, images: Any) -> Any:
    if not many:
        return outputs[0]
    if isinstance(images, torch.Tensor):
        return torch.stack(outputs)
    return outputs


#: ``i2i.load(path, device="auto", *, size=None, direction="AtoB")``: see :meth:`Translator.load`.
load = Translator.load
