"""The optional LPIPS metric, checked with randomly initialised weights written to tmp files.

Real LPIPS weights are never available in the test environment (and i2i never downloads), so
these tests pin down the computation and the error messages; one test compares with the ``lpips``
package and runs only where that package and torchvision's ImageNet AlexNet are both present.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from i2i import I2IError, Metric
from i2i.assembly.host import PluginHost

ALEX_CHANNELS = (64, 192, 384, 256, 256)
VGG_CHANNELS = (64, 128, 256, 512, 512)
ALEX_STAGE_ENDS = (1, 4, 7, 9, 11)


@pytest.fixture(autouse=True)
def _no_weights_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own LPIPS settings must not change what these tests see."""
    monkeypatch.delenv("I2I_LPIPS_BACKBONE", raising=False)
    monkeypatch.delenv("I2I_LPIPS_LINEAR", raising=False)


@pytest.fixture(scope="module")
def host() -> PluginHost:
    return PluginHost()


@pytest.fixture(scope="module")
def alex_state() -> dict[str, torch.Tensor]:
    """A random AlexNet ``features`` state dict, keyed as in the full model ("features.0.weight")."""
    from torchvision.models import alexnet

    torch.manual_seed(0)
    # The classifier (57M parameters) is irrelevant to LPIPS; leaving it out keeps the file small.
    return {f"features.{k}": v for k, v in alexnet(weights=None).features.state_dict().items()}


@pytest.fixture(scope="module")
def backbone_file(tmp_path_factory: pytest.TempPathFactory, alex_state: dict) -> Path:
    path = tmp_path_factory.mktemp("lpips") / "alexnet-random.pth"
    torch.save(alex_state, path)
    return path


def _heads(channels: tuple[int, ...], seed: int = 1) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=generator) for i, c in enumerate(channels)
    }


@pytest.fixture(scope="module")
def linear_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lpips") / "alex-heads.pth"
    torch.save(_heads(ALEX_CHANNELS), path)
    return path


@pytest.fixture(scope="module")
def metric(host: PluginHost, backbone_file: Path, linear_file: Path) -> Metric:
    return host.registry("metric").build(
        "lpips", backbone_weights=str(backbone_file), linear_weights=str(linear_file)
    )


def _images(n: int = 2, channels: int = 3, height: int = 32, width: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, channels, height, width, generator=torch.Generator().manual_seed(seed))


# -- the contract ----------------------------------------------------------------------------------


def test_metric_contract_and_label(metric: Metric) -> None:
    assert metric.higher_is_better is False
    assert metric.per_image is True
    assert metric.diversity == "distance"
    assert metric.label == "LPIPS v0.1 (alex)"
    assert metric.describe() == "LPIPS v0.1 (alex)"


def test_identical_images_score_zero(metric: Metric) -> None:
    image = _images(1)[0]
    assert metric.score(image, image.clone()) == 0.0


def test_different_images_score_positive_and_symmetric(metric: Metric) -> None:
    a, b = _images(2)
    forward, backward = metric.score(a, b), metric.score(b, a)
    assert forward > 0
    assert forward == pytest.approx(backward, abs=1e-6)


def test_batch_update_matches_per_image_scores(metric: Metric) -> None:
    outputs, targets = _images(4, seed=1), _images(4, seed=2)
    singles = [metric.score(o, t) for o, t in zip(outputs, targets, strict=True)]
    metric.reset()
    batch = metric.update(outputs, targets)
    assert batch == pytest.approx(singles, rel=1e-5, abs=1e-7)
    assert metric.values == batch
    assert metric.compute() == pytest.approx(sum(singles) / 4, rel=1e-5)
    metric.reset()


def test_greyscale_is_repeated_to_three_channels(metric: Metric) -> None:
    a, b = _images(2, channels=1, seed=3)
    grey = metric.score(a, b)
    assert grey > 0
    assert grey == pytest.approx(metric.score(a.expand(3, -1, -1), b.expand(3, -1, -1)), rel=1e-6)


@pytest.mark.parametrize(("height", "width"), [(32, 32), (64, 48)])
def test_image_sizes(metric: Metric, height: int, width: int) -> None:
    a, b = _images(2, height=height, width=width, seed=4)
    assert metric.score(a, b) > 0


def test_too_small_and_mismatched_images_are_refused(metric: Metric) -> None:
    with pytest.raises(I2IError, match="too small"):
        metric.score(_images(1, height=16, width=16)[0], _images(1, height=16, width=16)[0])
    with pytest.raises(I2IError, match="differ in size"):
        metric.score(_images(1, height=32)[0], _images(1, height=40)[0])


def test_matches_the_formula_on_a_plain_torchvision_alexnet(metric: Metric, alex_state: dict) -> None:
    """The LPIPS v0.1 recipe written out step by step on a normally built AlexNet."""
    from torchvision.models import alexnet

    features = alexnet(weights=None).features.eval()
    features.load_state_dict({k.removeprefix("features."): v for k, v in alex_state.items()})
    heads = list(_heads(ALEX_CHANNELS).values())
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def stages(image: torch.Tensor) -> list[torch.Tensor]:
        x, kept = (image.unsqueeze(0) * 2 - 1 - shift) / scale, []
        for index, layer in enumerate(features[:12]):  # the last pooling is not used
            x = layer(x).clone()
            if index in ALEX_STAGE_ENDS:
                kept.append(x / (x.square().sum(1, keepdim=True).sqrt() + 1e-10))
        return kept

    a, b = _images(2, height=48, width=40, seed=5)
    with torch.no_grad():
        expected = sum(
            float(((fa - fb).square() * w).sum(1).mean())
            for fa, fb, w in zip(stages(a), stages(b), heads, strict=True)
        )
    assert metric.score(a, b) == pytest.approx(expected, rel=1e-5)


def test_version_0_0_skips_the_scaling_layer(
    host: PluginHost, backbone_file: Path, linear_file: Path
) -> None:
    old = host.registry("metric").build(
        "lpips", version="0.0", backbone_weights=str(backbone_file), linear_weights=str(linear_file)
    )
    new = host.registry("metric").build(
        "lpips", version="0.1", backbone_weights=str(backbone_file), linear_weights=str(linear_file)
    )
    assert old.label == "LPIPS v0.0 (alex)"
    a, b = _images(2, seed=6)
    assert old.score(a, b) != pytest.approx(new.score(a, b), rel=1e-3)


# -- finding and checking the weights --------------------------------------------------------------


def test_environment_variables_and_plain_head_keys(
    host: PluginHost, metric: Metric, backbone_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = tmp_path / "plain-heads.pth"
    torch.save({k.replace(".model.1", ""): v for k, v in _heads(ALEX_CHANNELS).items()}, plain)
    monkeypatch.setenv("I2I_LPIPS_BACKBONE", str(backbone_file))
    monkeypatch.setenv("I2I_LPIPS_LINEAR", str(plain))
    from_env = host.registry("metric").build("lpips")
    a, b = _images(2, seed=7)
    assert from_env.score(a, b) == pytest.approx(metric.score(a, b), rel=1e-6)


def test_heads_found_in_an_installed_lpips_package(
    host: PluginHost, backbone_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from i2i_diversity import metrics as lpips_module

    package = tmp_path / "site-packages" / "lpips"
    (package / "weights" / "v0.0").mkdir(parents=True)
    torch.save(_heads(ALEX_CHANNELS), package / "weights" / "v0.0" / "alex.pth")
    monkeypatch.setattr(lpips_module, "lpips_package_dir", lambda: package)
    built = host.registry("metric").build("lpips", version="0.0", backbone_weights=str(backbone_file))
    assert built.linear_path == package / "weights" / "v0.0" / "alex.pth"


def test_missing_backbone_says_where_and_which_version(
    host: PluginHost, linear_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "nowhere" / "alexnet.pth"
    with pytest.raises(I2IError) as info:
        host.registry("metric").build("lpips", backbone_weights=str(missing), linear_weights=str(linear_file))
    message = str(info.value)
    assert str(missing) in message
    assert "never downloads" in message
    assert "v0.1" in message and "v0.0" in message and "2.3x" in message

    # Nothing named: torch hub's checkpoint cache is where it looks.
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(I2IError, match="alexnet-owt-7be5be79.pth") as info:
        host.registry("metric").build("lpips", linear_weights=str(linear_file))
    assert str(tmp_path / "hub" / "checkpoints") in str(info.value)


def test_missing_linear_heads_without_the_lpips_package(
    host: PluginHost, backbone_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from i2i_diversity import metrics as lpips_module

    monkeypatch.setattr(lpips_module, "lpips_package_dir", lambda: None)
    with pytest.raises(I2IError, match="no lpips package is installed") as info:
        host.registry("metric").build("lpips", version="0.0", backbone_weights=str(backbone_file))
    assert "weights/v0.0/alex.pth" in str(info.value)
    assert "never downloads" in str(info.value)

    missing = tmp_path / "heads.pth"
    with pytest.raises(I2IError, match="does not exist"):
        host.registry("metric").build(
            "lpips", backbone_weights=str(backbone_file), linear_weights=str(missing)
        )


@pytest.mark.parametrize("which", ["backbone_weights", "linear_weights"])
def test_corrupt_file_is_named(
    host: PluginHost, backbone_file: Path, linear_file: Path, tmp_path: Path, which: str
) -> None:
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"this is not a torch checkpoint")
    files = {"backbone_weights": str(backbone_file), "linear_weights": str(linear_file), which: str(corrupt)}
    with pytest.raises(I2IError, match="could not load") as info:
        host.registry("metric").build("lpips", **files)
    assert str(corrupt) in str(info.value)


def test_wrong_network_is_refused(
    host: PluginHost, backbone_file: Path, linear_file: Path, tmp_path: Path
) -> None:
    from torchvision.models import vgg16

    # The first VGG-16 blocks are enough to be unmistakably not AlexNet (and keep the file small).
    with torch.device("meta"):
        vgg_features = vgg16(weights=None).features[:10]
    vgg_file = tmp_path / "vgg16.pth"
    torch.save(
        {f"features.{k}": torch.zeros(v.shape) for k, v in vgg_features.state_dict().items()}, vgg_file
    )
    with pytest.raises(I2IError, match="not a torchvision alexnet state dict") as info:
        host.registry("metric").build(
            "lpips", backbone_weights=str(vgg_file), linear_weights=str(linear_file)
        )
    assert str(vgg_file) in str(info.value)

    vgg_heads = tmp_path / "vgg-heads.pth"
    torch.save(_heads(VGG_CHANNELS), vgg_heads)
    with pytest.raises(I2IError, match="not a torchvision vgg16 state dict"):
        host.registry("metric").build(
            "lpips", net="vgg", backbone_weights=str(backbone_file), linear_weights=str(vgg_heads)
        )
    with pytest.raises(I2IError, match=r"needs \(1, 128, 1, 1\)"):
        host.registry("metric").build(
            "lpips", net="vgg", backbone_weights=str(backbone_file), linear_weights=str(linear_file)
        )


def test_foreign_state_dicts_are_refused(host: PluginHost, linear_file: Path, tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.pth"
    torch.save({"weight": torch.zeros(3)}, foreign)
    with pytest.raises(I2IError, match="not a torchvision alexnet state dict"):
        host.registry("metric").build("lpips", backbone_weights=str(foreign), linear_weights=str(linear_file))
    with pytest.raises(I2IError, match="no weight for linear head 0"):
        host.registry("metric").build("lpips", backbone_weights=str(foreign), linear_weights=str(foreign))
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(I2IError, match="state dict of tensors"):
        host.registry("metric").build("lpips", backbone_weights=str(foreign), linear_weights=str(listed))


def test_bad_choices_are_refused(host: PluginHost) -> None:
    with pytest.raises(I2IError, match="net must be"):
        host.registry("metric").build("lpips", net="squeeze")
    with pytest.raises(I2IError, match="version must be"):
        host.registry("metric").build("lpips", version="0.2")


# -- against the reference implementation, where it and real weights exist locally -----------------


@pytest.mark.parametrize("version", ["0.0", "0.1"])
def test_agrees_with_the_lpips_package(host: PluginHost, version: str) -> None:
    lpips_package = pytest.importorskip("lpips")
    hub_file = Path(torch.hub.get_dir()) / "checkpoints" / "alexnet-owt-7be5be79.pth"
    if not hub_file.is_file():
        pytest.skip(f"torchvision's ImageNet AlexNet is not in the hub cache ({hub_file})")
    ours = host.registry("metric").build("lpips", version=version)  # hub backbone, package heads
    reference = lpips_package.LPIPS(net="alex", version=version, verbose=False).eval()
    a, b = _images(2, height=64, width=64, seed=8)
    with torch.no_grad():
        expected = float(reference(a.unsqueeze(0), b.unsqueeze(0), normalize=True))
    assert ours.score(a, b) == pytest.approx(expected, rel=1e-4, abs=1e-6)
