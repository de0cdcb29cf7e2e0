"""A trained generator ready to answer one image at a time, the way ``i2i translate`` does.

Loading, fitting the image to the network and restoring its size are :mod:`i2i.inference.translate`'s own
functions, so the page shows exactly the pixels ``i2i translate`` writes for the same input and
settings. Several outputs per input come from the registered samplers (test-time dropout, latent
codes, ...), drawn by the diversity protocol's :func:`~i2i.diversity.protocol.draw`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from i2i.assembly.build import build_dataset
from i2i.assembly.host import PluginHost
from i2i.data.imaging import resize, to_pil, to_pixels, to_signed
from i2i.errors import DataError, I2IError
from i2i.inference.loading import load_trained
from i2i.inference.translate import read_input, translate_tensor
from i2i.inference.translator import PLAIN, Translator
from i2i.sampling import draw

#: Inputs with a longer side are scaled down first (with a note): a phone photo would take
#: seconds on a CPU and gigabytes of activations.
MAX_SIDE = 1024
MAX_SAMPLES = 8


@dataclass
class Answer:
    """The outputs for one input (uint8 arrays (H, W, C)), what was adjusted, and how long G took."""

    outputs: list[np.ndarray]
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


def as_tensor(image: np.ndarray, channels: int) -> torch.Tensor:
    """A picture from the page (uint8 (H, W) or (H, W, 3|4)) as :func:`read_input` would decode it."""
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or image.size == 0:
        raise DataError("The input is not an image (expected height x width x colour channels).")
    if image.ndim == 3 and image.shape[2] not in (1, 3, 4):
        raise DataError(f"The input has {image.shape[2]} channels; a picture has 1, 3 or 4.")
    if image.dtype != np.uint8:
        raise DataError(f"The input has {image.dtype} pixels; the page sends 8-bit images.")
    picture = Image.fromarray(image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image)
    array = np.array(picture.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    array = array[..., None] if array.ndim == 2 else array
    return torch.from_numpy(array).permute(2, 0, 1).expand(channels, -1, -1).contiguous()


def to_array(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [-1, 1] (or uint8 pixels) as the uint8 picture ``i2i translate`` would save."""
    return np.array(to_pil(image))


def to_rgb_array(image: torch.Tensor) -> np.ndarray:
    """An input as :func:`read_input` decodes it (uint8, or float in [0, 1]) as an RGB uint8 array
    (H, W, 3) for the canvas."""
    picture = to_array(image if image.dtype == torch.uint8 else to_signed(image))
    return np.repeat(picture[..., None], 3, axis=2) if picture.ndim == 2 else picture


class ServedModel(Translator):
    """One trained generator, its samplers and its input rules; safe to call from several threads."""

    def __init__(
        self,
        checkpoint: Path,
        host: PluginHost,
        *,
        size: int | None = None,
        device: str | None = None,
        direction: str = "AtoB",
    ) -> None:
        """``size``: the side inputs are resized to for G, as ``i2i translate --size``; by default the
        training crop size (what the network saw), 0 for the input's own size."""
        if size is not None and size < 0:
            raise I2IError(f"--size {size}: give a side length in pixels, or 0 for the input's own size.")
        trained = load_trained(checkpoint, host, device, direction)
        if trained.input_nc not in (1, 3) or trained.output_nc not in (1, 3):
            raise I2IError(
                f"{trained.path}: its generator maps {trained.input_nc} to {trained.output_nc} channels; "
                "the page shows and draws pictures, so it serves generators with 1 or 3 channels in and out."
            )
        crop = trained.recipe["data"].get("crop_size")
        super().__init__(trained, host, size=(int(crop) if crop else None) if size is None else size)
        self._lock = threading.Lock()

    def describe(self, name: str) -> str:
        return f"{name}: {self.samplers[name].describe()}"

    def examples(self, count: int = 3) -> list[torch.Tensor]:
        """Up to ``count`` inputs (uint8 (C, H, W)) from the training recipe's data, test split
        first; none when the data is not where the recipe says."""
        for split in ("test", "train"):
            try:
                dataset = build_dataset(self.recipe, self.host, split)
                items = [dataset[i]["A"] for i in range(min(count, len(dataset)))]
            except Exception:  # noqa: BLE001 - a missing or moved data set only costs the starter image
                continue
            if items:
                return [to_pixels(x) for x in items]
        return []

    def fit(self, image: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
        """Scale an oversized input (uint8 (C, H, W)) down to ``MAX_SIDE``, saying so."""
        _, h, w = image.shape
        if max(h, w) <= MAX_SIDE:
            return image, []
        scale = MAX_SIDE / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        note = f"The input is {w}x{h}; it was scaled down to {nw}x{nh} (at most {MAX_SIDE} px a side)."
        return resize(image, (nh, nw)), [note]

    @torch.no_grad()
    def answer(
        self, image: torch.Tensor, sampler: str = PLAIN, count: int = 1, seed: int | None = None
    ) -> Answer:
        """``count`` outputs for one input (uint8 or float (C, H, W), as :func:`read_input` gives).

        Torch's RNG is seeded with ``seed`` (default: the recipe's, as ``i2i translate`` does)
        before sampling, so a seed always gives the same samples.
        """
        self._sampler_name(sampler)
        if not 1 <= count <= MAX_SAMPLES:
            raise I2IError(f"Samples: {count}; choose 1 to {MAX_SAMPLES}.")
        if image.shape[0] != self.input_nc:
            raise DataError(f"The input has {image.shape[0]} channels; the generator takes {self.input_nc}.")
        image, notes = self.fit(image)
        chosen = self.samplers[sampler]
        with self._lock:  # one image at a time: the CPU is the limit, and the RNG is global
            net = self._net(sampler)
            torch.manual_seed(self.seed if seed is None else int(seed))
            start = time.perf_counter()
            outputs, fit_notes = translate_tensor(
                image, self.multiple, self.size, lambda x: draw(net, chosen, x, count, self.device)
            )
            seconds = time.perf_counter() - start
        if self.size and fit_notes and fit_notes[0].startswith("resized"):
            fit_notes = fit_notes[1:]  # resizing to --size is the setting, not news
        return Answer([to_array(y) for y in outputs], notes + fit_notes, seconds)

    def answer_file(self, path: Path, **kwargs) -> Answer:
        """:meth:`answer` for an image file, decoded as ``i2i translate`` decodes it."""
        return self.answer(read_input(Path(path), self.input_nc), **kwargs)
