"""LPIPS, the learned perceptual distance of Zhang et al. (CVPR 2018), as an optional i2i metric.

Why it is here: the diversity experiments of BicycleGAN, MSGAN and DSGAN report the mean LPIPS
between pairs of generated samples, so a comparable number needs the same network. The computation
is our own code on top of torchvision's AlexNet / VGG-16 feature extractors:

1. images (C, H, W) in [0, 1] are mapped to [-1, 1]; greyscale images are repeated to three channels;
2. LPIPS **v0.1** then applies its fixed scaling layer, ``(x - shift) / scale`` with
   shift (-0.030, -0.088, -0.188) and scale (0.458, 0.448, 0.450); **v0.0** skips it (the original
   release never scaled its input, and its linear heads were trained that way);
3. the activations after five ReLU stages are taken (AlexNet: relu1..relu5, i.e. after
   ``features[1], [4], [7], [9], [11]``; VGG-16: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3);
4. each activation is divided by its Euclidean norm along the channels (plus 1e-10), the two images'
   activations are subtracted and squared, weighted per channel by a learned 1x1 layer (no bias),
   averaged over space and summed over the five stages.

Identical images score 0; lower is better. ``diversity = "distance"`` lets the diversity experiment
use it between two generated samples, which is how the papers above use it.

Weights (i2i never downloads them; nothing is fetched at run time):

* the **backbone**, a torchvision ``alexnet`` or ``vgg16`` state dict (the full model's or just its
  ``features``): the ``backbone_weights`` parameter, else ``$I2I_LPIPS_BACKBONE``, else torch hub's
  checkpoint cache, ``torch.hub.get_dir()/checkpoints/alexnet-owt-7be5be79.pth`` or
  ``.../vgg16-397923af.pth`` (where torchvision itself would have stored them);
* the **linear heads**: the ``linear_weights`` parameter, else ``$I2I_LPIPS_LINEAR``, else the file
  ``weights/v{version}/{net}.pth`` inside an installed ``lpips`` pip package (which ships the heads
  but not the backbones). Keys ``linN.model.1.weight`` (as the package stores them),
  ``linN.model.0.weight`` or ``linN.weight`` are accepted, each of shape (1, C, 1, 1).

Record the version with every number: BicycleGAN's published diversity scores use LPIPS v0.0, and
v0.1 gives values about 2.3x larger. The metric's :attr:`LPIPS.label` (also :meth:`LPIPS.describe`)
reads e.g. "LPIPS v0.1 (alex)".

Recipe example::

    eval.metrics = ["l1", { name = "lpips", net = "alex", version = "0.0" }]
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from i2i import I2IError, Metric, hookimpl

BACKBONE_ENV = "I2I_LPIPS_BACKBONE"
LINEAR_ENV = "I2I_LPIPS_LINEAR"

#: torchvision's file names for the ImageNet weights LPIPS was trained on.
HUB_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}
#: Index in ``features`` of the last layer of each of the five LPIPS stages (a ReLU).
STAGE_ENDS = {"alex": (1, 4, 7, 9, 11), "vgg": (3, 8, 15, 22, 29)}
#: Channels at those five stages, i.e. the input width of each linear head.
STAGE_CHANNELS = {"alex": (64, 192, 384, 256, 256), "vgg": (64, 128, 256, 512, 512)}
#: Smallest image side whose activations survive every pooling layer up to the fifth stage.
MIN_SIDE = {"alex": 31, "vgg": 16}
_TORCHVISION_NAMES = {"alex": "alexnet", "vgg": "vgg16"}
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
_EPS = 1e-10


# -- finding the weights ---------------------------------------------------------------------------


def hub_backbone_path(net: str) -> Path:
    """Where torchvision caches the ImageNet weights of ``net`` (not necessarily present)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / HUB_FILES[net]


def lpips_package_dir() -> Path | None:
    """The folder of an installed ``lpips`` package, found without importing it (or None)."""
    try:
        spec = importlib.util.find_spec("lpips")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def backbone_path(net: str, backbone_weights: str = "") -> Path:
    """The backbone file to use: the parameter, then ``$I2I_LPIPS_BACKBONE``, then the hub cache."""
    chosen = backbone_weights or os.environ.get(BACKBONE_ENV, "")
    return Path(chosen).expanduser() if chosen else hub_backbone_path(net)


def linear_path(net: str, version: str, linear_weights: str = "") -> Path | None:
    """The linear-head file: the parameter, then ``$I2I_LPIPS_LINEAR``, then the lpips package.

    None when nothing was named and no ``lpips`` package is installed.
    """
    chosen = linear_weights or os.environ.get(LINEAR_ENV, "")
    if chosen:
        return Path(chosen).expanduser()
    package = lpips_package_dir()
    return None if package is None else package / "weights" / f"v{version}" / f"{net}.pth"


def _advice(net: str, version: str) -> str:
    return (
        f"This metric is LPIPS v{version} with the {net} network. BicycleGAN's published diversity "
        f"numbers use LPIPS v0.0 and v0.1 gives values about 2.3x larger, so record the version with "
        f"every number. i2i never downloads weights at run time."
    )


def _missing_backbone_message(path: Path, net: str, version: str) -> str:
    return (
        f"lpips: the {net} backbone weights file {path} does not exist. LPIPS needs torchvision's "
        f"ImageNet {_TORCHVISION_NAMES[net]} state dict ({HUB_FILES[net]}). Copy it to "
        f"{hub_backbone_path(net)}, set {BACKBONE_ENV}=/path/to/{HUB_FILES[net]}, or name it in the "
        f'recipe: {{ name = "lpips", net = "{net}", backbone_weights = "/path/to/file.pth" }}. '
        + _advice(net, version)
    )


def _missing_linear_message(path: Path | None, net: str, version: str) -> str:
    where = (
        f"the linear-head file {path} does not exist"
        if path is not None
        else f"no linear-head file was named (linear_weights, ${LINEAR_ENV}) and no lpips package is "
        f"installed"
    )
    return (
        f"lpips: {where}. LPIPS needs its learned 1x1 heads, the file weights/v{version}/{net}.pth of "
        f"the lpips package (PerceptualSimilarity). Install that package (`pip install lpips`; its "
        f"heads ship inside it), or copy the file somewhere and set {LINEAR_ENV}=/path/to/{net}.pth "
        f'or name it in the recipe: {{ name = "lpips", linear_weights = "/path/to/{net}.pth" }}. '
        + _advice(net, version)
    )


def _load_state_dict(path: Path, what: str) -> dict[str, Tensor]:
    """A tensor dict from ``path``; any failure becomes an I2IError that names the file."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, a pickle weights_only refuses, a directory, ...
        raise I2IError(f"lpips: could not load the {what} {path}: {exc}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise I2IError(f"lpips: {path} does not hold a state dict of tensors (the {what}).")
    return state


# -- building the network --------------------------------------------------------------------------


def _layer_index(key: str) -> int:
    """The ``features`` layer a state-dict key belongs to ("3.weight" → 3); -1 if it names none."""
    head = key.split(".", 1)[0]
    return int(head) if head.isdigit() else -1


def load_backbone(path: Path, net: str, version: str = "0.1") -> nn.Sequential:
    """torchvision's ``features`` of ``net`` cut after the fifth LPIPS stage, with the file's weights."""
    from torchvision.models import alexnet, vgg16

    if not path.is_file():
        raise I2IError(_missing_backbone_message(path, net, version))
    state = _load_state_dict(path, f"{net} backbone weights")
    features = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
    if not features:  # a bare ``model.features.state_dict()``
        features = {k: v for k, v in state.items() if _layer_index(k) >= 0}
    # Built on the meta device: the unused classifier (up to 120M parameters) is never initialised.
    with torch.device("meta"):
        model = (alexnet if net == "alex" else vgg16)(weights=None)
    body = model.features[: STAGE_ENDS[net][-1] + 1].to_empty(device="cpu")
    # Layers past the fifth stage (VGG's last pooling, nothing with weights) are not needed.
    features = {k: v for k, v in features.items() if _layer_index(k) < len(body)}
    try:
        result = body.load_state_dict(features, strict=False)
    except RuntimeError as exc:  # shape mismatches: another network's weights
        first = str(exc).strip().splitlines()[-1].strip()
        raise I2IError(
            f"lpips: {path} is not a torchvision {_TORCHVISION_NAMES[net]} state dict ({first}). "
            f"Check that net = {net!r} matches the file."
        ) from None
    if result.missing_keys or result.unexpected_keys:
        problems = (result.missing_keys + result.unexpected_keys)[:3]
        raise I2IError(
            f"lpips: {path} is not a torchvision {_TORCHVISION_NAMES[net]} state dict "
            f"({len(result.missing_keys)} missing and {len(result.unexpected_keys)} unexpected feature "
            f"keys, e.g. {', '.join(problems) or 'none'}). Check that net = {net!r} matches the file."
        )
    for module in body:
        if isinstance(module, nn.ReLU):
            module.inplace = False  # stage outputs are kept, so no layer may overwrite them
    return body.eval().requires_grad_(False)


def load_linear_heads(path: Path | None, net: str, version: str) -> list[Tensor]:
    """The five 1x1 head weights, each (1, C, 1, 1), from an lpips-style state dict."""
    if path is None or not path.is_file():
        raise I2IError(_missing_linear_message(path, net, version))
    state = _load_state_dict(path, f"LPIPS v{version} {net} linear heads")
    heads = []
    for index, channels in enumerate(STAGE_CHANNELS[net]):
        names = [f"lin{index}.model.1.weight", f"lin{index}.model.0.weight", f"lin{index}.weight"]
        found = [state[n] for n in names if n in state]
        if not found:
            raise I2IError(
                f"lpips: {path} has no weight for linear head {index} (looked for {', '.join(names)}); "
                f"it is not an LPIPS {net} linear-head file."
            )
        weight = found[0]
        if tuple(weight.shape) != (1, channels, 1, 1):
            raise I2IError(
                f"lpips: in {path} the linear head {index} has shape {tuple(weight.shape)}, but LPIPS "
                f"with {net} needs (1, {channels}, 1, 1); is the file for another network?"
            )
        heads.append(weight.float())
    return heads


# -- the metric ------------------------------------------------------------------------------------


class LPIPS(Metric):
    """Learned perceptual distance between two images (lower is better; identical → 0)."""

    higher_is_better = False
    per_image = True
    diversity = "distance"

    def __init__(
        self,
        net: str = "alex",
        version: str = "0.1",
        backbone_weights: str = "",
        linear_weights: str = "",
        device: str = "cpu",
    ) -> None:
        super().__init__()
        if net not in STAGE_ENDS:
            raise I2IError(f"lpips: net must be 'alex' or 'vgg', got {net!r}.")
        if version not in ("0.0", "0.1"):
            raise I2IError(f"lpips: version must be '0.0' or '0.1', got {version!r}.")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            self.device = torch.device(device)
        except RuntimeError as exc:
            raise I2IError(f"lpips: device {device!r} is not a device name: {exc}") from None
        self.net, self.version = net, version
        #: How reports name the number; the version must travel with it.
        self.label = f"LPIPS v{version} ({net})"
        self.backbone_path = backbone_path(net, backbone_weights)
        self.linear_path = linear_path(net, version, linear_weights)
        # Heads first: their absence is the more common problem and its message the more useful.
        heads = load_linear_heads(self.linear_path, net, version)
        self.body = load_backbone(self.backbone_path, net, version).to(self.device)
        self.heads = [h.to(self.device) for h in heads]
        self._stage_ends = set(STAGE_ENDS[net])
        self._shift = torch.tensor(_SHIFT, device=self.device).view(1, 3, 1, 1)
        self._scale = torch.tensor(_SCALE, device=self.device).view(1, 3, 1, 1)

    def describe(self) -> str:
        return self.label

    def __repr__(self) -> str:
        return f"<{self.label}>"

    def _prepare(self, images: Tensor) -> Tensor:
        """(N, C, H, W) in [0, 1] → the network's input: three channels, [-1, 1], v0.1 scaling."""
        if images.dim() == 3:
            images = images.unsqueeze(0)
        if images.dim() != 4 or images.shape[1] not in (1, 3):
            raise I2IError(
                f"lpips: expected RGB or greyscale images (C, H, W) or (N, C, H, W), got "
                f"{tuple(images.shape)}."
            )
        side = MIN_SIDE[self.net]
        if min(images.shape[-2:]) < side:
            raise I2IError(
                f"lpips: images of {images.shape[-2]}x{images.shape[-1]} are too small for the {self.net} "
                f"network, which needs at least {side} pixels on each side."
            )
        images = images.to(self.device, torch.float32).expand(-1, 3, -1, -1) * 2.0 - 1.0
        if self.version == "0.1":
            images = (images - self._shift) / self._scale
        return images

    def _stages(self, x: Tensor) -> list[Tensor]:
        """Channel-normalised activations at the five stages."""
        outputs = []
        for index, layer in enumerate(self.body):
            x = layer(x)
            if index in self._stage_ends:
                outputs.append(x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + _EPS))
        return outputs

    @torch.inference_mode()
    def distances(self, output: Tensor, target: Tensor) -> Tensor:
        """LPIPS of each pair in two batches (N, C, H, W), as a float64 tensor (N,) on the CPU."""
        if output.shape[-2:] != target.shape[-2:] or output.shape[:-3] != target.shape[:-3]:
            raise I2IError(
                f"lpips: output {tuple(output.shape)} and target {tuple(target.shape)} differ in size."
            )
        a, b = self._prepare(output), self._prepare(target)
        both = self._stages(torch.cat([a, b]))
        total = torch.zeros(len(a), dtype=torch.float64, device=self.device)
        for feats, weight in zip(both, self.heads, strict=True):
            diff = (feats[: len(a)] - feats[len(a) :]).pow(2)
            total += nn.functional.conv2d(diff, weight).mean(dim=(1, 2, 3)).double()
        return total.cpu()

    def score(self, output: Tensor, target: Tensor) -> float:
        return float(self.distances(output, target)[0])

    def update(self, output: Tensor, target: Tensor) -> list[float]:
        """The whole batch in one pass (faster than image by image); same values as :meth:`score`."""
        batch = self.distances(output, target).tolist()
        self.values.extend(batch)
        return batch


def lpips(
    net: Literal["alex", "vgg"] = "alex",
    version: Literal["0.0", "0.1"] = "0.1",
    backbone_weights: str = "",
    linear_weights: str = "",
    device: str = "cpu",
) -> Metric:
    """LPIPS perceptual distance (lower is better); needs local backbone and linear-head weights."""
    return LPIPS(
        net=net,
        version=version,
        backbone_weights=backbone_weights,
        linear_weights=linear_weights,
        device=device,
    )


@hookimpl
def i2i_register_metrics(registry) -> None:
    registry.add("lpips", lpips)
