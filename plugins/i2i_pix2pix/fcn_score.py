"""The FCN-score of the pix2pix paper: can a segmenter recover the input label map from the output?

A segmenter trained on real photos (``recipes/facades_segmenter.toml``, an ordinary i2i run whose
target is the label map through a palette) segments every generated photo, and the result is
compared with the *input* label map, snapped to the same palette. Three numbers, as in the paper's
table, each from the confusion matrix over the whole evaluation set:

- ``fcn_pixel_acc``: the fraction of pixels whose class is recovered;
- ``fcn_class_acc``: the per-class recall, averaged over the classes present in the labels;
- ``fcn_iou``: the intersection over union per class, averaged over the classes that occur.

Unlike L1 or PSNR, the score does not punish a plausible facade for having other colours than the
one target photo, and it needs no downloaded weights: the segmenter is i2i's own. ``weights`` names
the segmenter: a run directory, a checkpoint, or a ``.safetensors`` export (``i2i export RUN
--format safetensors --half``); by default the small facades segmenter shipped with i2i.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from i2i import I2IError, Metric, hookimpl

#: The facades segmenter shipped with i2i (trained by recipes/facades_segmenter.toml).
SHIPPED = Path(__file__).parent / "weights" / "facades_segmenter.safetensors"

_SEGMENTERS: dict[tuple[str, str], Segmenter] = {}


class Segmenter:
    """A trained segmentation generator with its palette and training size."""

    def __init__(self, weights: str, device: str) -> None:
        """``device = "auto"``: loaded on the CPU, then moved where the evaluation runs (:meth:`to`)."""
        import i2i
        from i2i_pix2pix.palettes import get_palette

        path = Path(weights).expanduser() if weights else SHIPPED
        if not path.exists():
            raise I2IError(
                f"fcn score: the segmenter {path} does not exist. Train one with "
                "'i2i run recipes/facades_segmenter.toml' and name it in the recipe: "
                '{ name = "fcn_pixel_acc", weights = "runs/facades_segmenter" } (a run directory, '
                "a checkpoint or a .safetensors export). i2i never downloads it."
            )
        self.auto = device == "auto"
        segmenter = i2i.load(path, device="cpu" if self.auto else device)
        self.device, self.net, recipe = segmenter.device, segmenter.generator, segmenter.recipe
        self.placed = not self.auto
        spec = recipe.get("data", {}).get("target_palette", "")
        if not spec:
            raise I2IError(
                f"fcn score: {path} was not trained as a segmenter (its recipe's data.target_palette "
                "is empty), so its outputs are not classes."
            )
        self.palette = get_palette(spec)
        self.size = int(recipe["data"].get("crop_size", 256))
        self.path = path
        self._last: tuple[Tensor, int | None, Tensor] | None = None

    def to(self, device: torch.device) -> None:
        """With ``device = "auto"``: segment on ``device`` from now on."""
        if self.auto:
            self.device = torch.device(device)
            self.net.to(self.device)
            self.placed = True

    @torch.no_grad()
    def classes(self, photos: Tensor) -> Tensor:
        """Class indices (N, H, W) for photos (N, 3, H, W) in [0, 1], at the photos' size."""
        # The three scores share one pass. The cache holds the photos themselves, so no later tensor
        # can reuse their address; inference tensors (evaluation runs in inference mode) have no
        # version counter, and nothing changes them in place.
        version = None if photos.is_inference() else photos._version
        if self._last is not None and self._last[0] is photos and self._last[1] == version:
            return self._last[2]
        if not self.placed:  # "auto", and no evaluation said where it runs: a GPU if there is one
            self.to(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
        height, width = photos.shape[-2:]
        x = photos.to(self.device) * 2 - 1
        if (height, width) != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True)
        logits = self.net(x).float()
        if logits.shape[-2:] != (height, width):
            logits = F.interpolate(logits, size=(height, width), mode="bilinear")
        result = logits.argmax(1).cpu()
        self._last = (photos, version, result)
        return result


def segmenter(weights: str = "", device: str = "auto") -> Segmenter:
    """One loaded segmenter per (weights, device), shared by the three scores."""
    key = (weights, device)
    if key not in _SEGMENTERS:
        _SEGMENTERS[key] = Segmenter(weights, device)
    return _SEGMENTERS[key]


def confusion(predicted: Tensor, truth: Tensor, classes: int) -> Tensor:
    """Counts (truth class, predicted class) over all pixels: a (classes, classes) int64 matrix."""
    index = truth.reshape(-1).long() * classes + predicted.reshape(-1).long()
    return torch.bincount(index, minlength=classes * classes).reshape(classes, classes)


def scores(matrix: Tensor) -> dict[str, float]:
    """Pixel accuracy, mean class accuracy and mean IoU of a confusion matrix (rows = truth)."""
    m = matrix.double()
    total = m.sum()
    hits = m.diag()
    truth, predicted = m.sum(1), m.sum(0)
    present = truth > 0
    union = truth + predicted - hits
    occurs = union > 0
    return {
        "pixel_acc": float(hits.sum() / total) if total > 0 else float("nan"),
        "class_acc": float((hits[present] / truth[present]).mean()) if present.any() else float("nan"),
        "iou": float((hits[occurs] / union[occurs]).mean()) if occurs.any() else float("nan"),
    }


class FCNScore(Metric):
    """One of the three FCN-scores, accumulated over the evaluation set."""

    per_image = False
    needs_input = True

    def __init__(self, measure: str, weights: str, device: str) -> None:
        super().__init__()
        self.measure = measure
        self.segmenter = segmenter(weights, device)
        self.matrix = torch.zeros(0)

    def use_device(self, device: torch.device) -> None:
        """With ``device = "auto"`` (the default): segment where the evaluation runs."""
        self.segmenter.to(device)

    def reset(self) -> None:
        super().reset()
        k = len(self.segmenter.palette.class_names)
        self.matrix = torch.zeros(k, k, dtype=torch.int64)

    def labels(self, inputs: Tensor) -> Tensor:
        """The input label maps (N, 3, H, W) in [0, 1] as class indices, by nearest palette colour."""
        if inputs.shape[1] != 3:
            raise I2IError(
                f"fcn score: the network input has {inputs.shape[1]} channels, but the score needs "
                "colour label maps (3 channels) as inputs, e.g. facades with direction = BtoA."
            )
        return torch.stack([self.segmenter.palette.quantise(image) for image in inputs.cpu()])

    def update(self, output: Tensor, target: Tensor, inputs: Tensor | None = None) -> list[float]:
        if inputs is None:
            raise I2IError("fcn score needs the input label maps (the metric sets needs_input).")
        if self.matrix.numel() == 0:
            self.reset()
        if output.shape[1] != 3:
            raise I2IError(f"fcn score segments colour photos; the outputs have {output.shape[1]} channels.")
        predicted = self.segmenter.classes(output)
        truth = self.labels(inputs)
        if truth.shape[-2:] != predicted.shape[-2:]:
            raise I2IError("fcn score: the outputs and the input label maps differ in size.")
        self.matrix += confusion(predicted, truth, self.matrix.shape[0])
        return []

    def compute(self) -> float:
        return scores(self.matrix)[self.measure] if self.matrix.numel() else float("nan")


def fcn_pixel_acc(weights: str = "", device: str = "auto") -> Metric:
    """FCN-score per-pixel accuracy: the segmenter recovers the input label map from the output."""
    return FCNScore("pixel_acc", weights, device)


def fcn_class_acc(weights: str = "", device: str = "auto") -> Metric:
    """FCN-score mean per-class accuracy over the classes of the input label maps."""
    return FCNScore("class_acc", weights, device)


def fcn_iou(weights: str = "", device: str = "auto") -> Metric:
    """FCN-score mean class IoU between the segmented output and the input label map."""
    return FCNScore("iou", weights, device)


@hookimpl
def i2i_register_metrics(registry):
    for factory in (fcn_pixel_acc, fcn_class_acc, fcn_iou):
        registry.add(factory.__name__, factory)
