"""Default evaluation metrics: L1, PSNR, SSIM per image, and FID over a whole evaluation set.

Every metric receives float tensors (C, H, W) in [0, 1] (batches (N, C, H, W) in ``update``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
from torch import Tensor

from i2i import I2IError, Metric, Range, hookimpl

# -- per-image metrics -----------------------------------------------------------------------------


def _to_numpy(image: Tensor) -> np.ndarray:
    """(C, H, W) tensor → float64 array (H, W) for one channel, (H, W, C) otherwise."""
    if image.dim() == 2:
        image = image.unsqueeze(0)
    if image.dim() != 3:
        raise ValueError(f"expected an image of shape (C, H, W), got {tuple(image.shape)}")
    array = image.detach().to("cpu", torch.float64).numpy()
    return array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1)


class L1(Metric):
    """Mean absolute error."""

    higher_is_better = False
    diversity = "distance"

    def score(self, output: Tensor, target: Tensor) -> float:
        return float((output.double() - target.double()).abs().mean())


class PSNR(Metric):
    """Peak signal-to-noise ratio in dB (data range 1); identical images score inf."""

    def score(self, output: Tensor, target: Tensor) -> float:
        from skimage.metrics import peak_signal_noise_ratio

        with np.errstate(divide="ignore"):  # zero error → inf, which is the right answer
            return float(peak_signal_noise_ratio(_to_numpy(target), _to_numpy(output), data_range=1.0))


def _odd_window(requested: int, height: int, width: int) -> int:
    """The largest odd window ≤ ``requested`` that fits in the image."""
    side = min(requested, height, width)
    return side if side % 2 == 1 else side - 1


class SSIM(Metric):
    """Structural similarity (data range 1); identical images score 1."""

    diversity = "similarity"

    def __init__(self, win_size: int = 7) -> None:
        super().__init__()
        if win_size < 3 or win_size % 2 == 0:
            raise I2IError(f"ssim: win_size must be an odd number ≥ 3, got {win_size}.")
        self.win_size = win_size

    def score(self, output: Tensor, target: Tensor) -> float:
        from skimage.metrics import structural_similarity

        out, tgt = _to_numpy(output), _to_numpy(target)
        win = _odd_window(self.win_size, out.shape[0], out.shape[1])
        kwargs: dict = {"data_range": 1.0, "win_size": max(win, 1)}
        if out.ndim == 3:
            kwargs["channel_axis"] = -1
        if win < 3:  # a 1- or 2-pixel side: a 1x1 window, population statistics
            kwargs["use_sample_covariance"] = False
        return float(structural_similarity(tgt, out, **kwargs))


def l1() -> Metric:
    """Mean absolute error between output and target (lower is better)."""
    return L1()


def psnr() -> Metric:
    """Peak signal-to-noise ratio in dB, data range 1 (higher is better; identical → inf)."""
    return PSNR()


def ssim(win_size: Annotated[int, Range(3)] = 7) -> Metric:
    """Structural similarity index, data range 1 (higher is better; identical → 1)."""
    return SSIM(win_size)


# -- FID -------------------------------------------------------------------------------------------

FID_WEIGHTS_ENV = "I2I_FID_WEIGHTS"
DEFAULT_FID_WEIGHTS = Path("~/.cache/i2i/inception_v3.pth")
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def fid_weights_path(weights: str = "") -> Path:
    """Where the Inception weights are looked for: the parameter, $I2I_FID_WEIGHTS, the cache."""
    chosen = weights or os.environ.get(FID_WEIGHTS_ENV, "") or str(DEFAULT_FID_WEIGHTS)
    return Path(chosen).expanduser()


def _missing_weights_message(path: Path) -> str:
    return (
        f"fid: the Inception-v3 weights file {path} does not exist. FID needs a torchvision "
        f"inception_v3 state dict (for example the official inception_v3_google-0cc3c7bd.pth). "
        f"Copy it to {DEFAULT_FID_WEIGHTS}, set {FID_WEIGHTS_ENV}=/path/to/file.pth, or name it in the "
        f'recipe: eval.metrics = [..., {{ name = "fid", weights = "/path/to/file.pth" }}]. '
        f"i2i never downloads it at run time."
    )


def load_inception(path: Path, device: torch.device | str = "cpu") -> torch.nn.Module:
    """torchvision's Inception-v3 with the given weights, returning 2048-d pool features."""
    from torchvision.models import inception_v3

    if not path.is_file():
        raise I2IError(_missing_weights_message(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, pickle refused by weights_only, ...
        raise I2IError(f"fid: could not load the Inception-v3 weights {path}: {exc}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise I2IError(f"fid: {path} does not hold a state dict (got {type(state).__name__}).")
    # transform_input=True, as torchvision sets for its pretrained weights: ImageNet-normalised
    # input is mapped to the (x - 0.5) / 0.5 range the Google weights were trained on.
    model = inception_v3(weights=None, aux_logits=False, init_weights=False, transform_input=True)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise I2IError(f"fid: {path} is not an inception_v3 state dict: {exc}") from None
    unexpected = [k for k in result.unexpected_keys if not k.startswith("AuxLogits.")]
    if result.missing_keys or unexpected:
        problems = result.missing_keys[:3] + unexpected[:3]
        raise I2IError(
            f"fid: {path} is not a torchvision inception_v3 state dict "
            f"({len(result.missing_keys)} missing and {len(unexpected)} unexpected keys, "
            f"e.g. {', '.join(problems)})."
        )
    model.fc = torch.nn.Identity()
    return model.eval().requires_grad_(False).to(device)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2 (Σ₁Σ₂)^½), with scipy's matrix square root."""
    from scipy import linalg

    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():  # singular product: nudge both covariances
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = np.real(covmean)
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean)
    return max(0.0, float(value))


def frechet_distance_from_features(f1: np.ndarray, f2: np.ndarray) -> float:
    """The Fréchet distance between Gaussians fitted to two feature sets (rows are samples).

    With fewer samples than feature dimensions (the usual case: test sets of a few hundred images
    against 2048-d features) the covariances are low-rank, Σ₁ = AᵀA and Σ₂ = BᵀB with A, B the
    centred features scaled by 1/√(n−1). Then tr (Σ₁Σ₂)^½ is exactly the sum of the singular values
    of ABᵀ (an n₁×n₂ matrix), which is far faster and better conditioned than a 2048×2048
    ``sqrtm`` of a singular product. Larger sets use :func:`frechet_distance`.
    """
    n1, n2 = len(f1), len(f2)
    if n1 < 2 or n2 < 2:
        return float("nan")
    f1, f2 = f1.astype(np.float64), f2.astype(np.float64)
    mu1, mu2 = f1.mean(axis=0), f2.mean(axis=0)
    if max(n1, n2) > f1.shape[1]:
        return frechet_distance(mu1, np.cov(f1, rowvar=False), mu2, np.cov(f2, rowvar=False))
    a = (f1 - mu1) / np.sqrt(n1 - 1)
    b = (f2 - mu2) / np.sqrt(n2 - 1)
    diff = mu1 - mu2
    trace_sqrt = np.linalg.svd(a @ b.T, compute_uv=False).sum()
    value = diff @ diff + (a * a).sum() + (b * b).sum() - 2.0 * trace_sqrt
    return max(0.0, float(value))


class FID(Metric):
    """Fréchet Inception Distance between the outputs and the targets of a whole evaluation set.

    Uses torchvision's Inception-v3 architecture with a weights file the user provides, so values
    are comparable between i2i runs but not necessarily with numbers from other FID tools (which
    use a differently trained Inception). Fewer than two images give NaN.
    """

    higher_is_better = False
    per_image = False
    #: Side of the square the images are resized to (Inception-v3's native input; tests shrink it).
    image_size = 299

    def __init__(self, weights: str = "", batch_size: int = 16, device: str = "auto") -> None:
        super().__init__()
        # Declared on fid() too; kept here for [diversity] metric tables, which are not range-checked.
        if batch_size < 1:
            raise I2IError(f"fid: batch_size must be ≥ 1, got {batch_size}.")
        #: "auto": follow the evaluation (use_device); until told, the Inception waits on the CPU.
        self.auto = device == "auto"
        self._placed = not self.auto
        try:
            self.device = torch.device("cpu" if self.auto else device)
        except RuntimeError as exc:
            raise I2IError(f"fid: device {device!r} is not a device name: {exc}") from None
        self.path = fid_weights_path(weights)
        self.batch_size = batch_size
        self.model = load_inception(self.path, self.device)
        self._to(self.device)
        self.output_features: list[np.ndarray] = []
        self.target_features: list[np.ndarray] = []

    def _to(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self.model.to(self.device)
        self._mean = torch.tensor(_IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(_IMAGENET_STD, device=self.device).view(1, 3, 1, 1)

    def use_device(self, device: torch.device) -> None:
        """With ``device = "auto"``: run the Inception where the evaluation runs."""
        if self.auto:
            self._to(device)
            self._placed = True

    def reset(self) -> None:
        super().reset()
        self.output_features = []
        self.target_features = []

    def _prepare(self, images: Tensor) -> Tensor:
        if not self._placed:  # "auto", and no evaluation said where it runs: a GPU if there is one
            self.use_device(auto_device())
        images = images.to(self.device, torch.float32)
        if images.dim() == 3:
            images = images.unsqueeze(0)
        channels = images.shape[1]
        if channels < 3:
            images = images[:, :1].expand(-1, 3, -1, -1)
        elif channels > 3:
            images = images[:, :3]
        images = torch.nn.functional.interpolate(
            images.clamp(0, 1), size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
        )
        return (images - self._mean) / self._std

    @torch.inference_mode()
    def features(self, images: Tensor) -> np.ndarray:
        """2048-d pool features of a batch (N, C, H, W) in [0, 1] (resized, ImageNet-normalised)."""
        chunks = [
            self.model(self._prepare(images[i : i + self.batch_size])).double().cpu().numpy()
            for i in range(0, len(images), self.batch_size)
        ]
        return np.concatenate(chunks) if chunks else np.zeros((0, 2048))

    def update(self, output: Tensor, target: Tensor) -> list[float]:
        if output.dim() == 3:
            output, target = output.unsqueeze(0), target.unsqueeze(0)
        feats = self.features(output)
        same = output.shape == target.shape and torch.equal(output, target)
        self.output_features.append(feats)
        self.target_features.append(feats if same else self.features(target))
        return []

    def compute(self) -> float:
        if not self.output_features:
            return float("nan")
        return frechet_distance_from_features(
            np.concatenate(self.output_features), np.concatenate(self.target_features)
        )


def fid(weights: str = "", batch_size: Annotated[int, Range(1)] = 16, device: str = "auto") -> Metric:
    """Fréchet Inception Distance over the whole set (lower is better; needs Inception weights).
    ``device = "auto"`` runs the Inception on the device the evaluation runs on."""
    return FID(weights=weights, batch_size=batch_size, device=device)


def auto_device() -> torch.device:
    """Where an "auto" metric runs when no evaluation told it: the GPU if there is one."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@hookimpl
def i2i_register_metrics(registry):
    registry.add("l1", l1)
    registry.add("psnr", psnr)
    registry.add("ssim", ssim)
    registry.add("fid", fid)
