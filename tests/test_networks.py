"""The default generators and discriminators, reached through the plugin host as a recipe would."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from i2i.assembly.host import get_host
from i2i.errors import I2IError
from i2i.nn_init import count_parameters, init_weights

GENERATORS = ["unet", "unet_128", "unet_256", "resnet", "resnet_6blocks", "resnet_9blocks"]
DISCRIMINATORS = ["patchgan", "pixelgan"]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def build_g(name: str, input_nc: int = 3, output_nc: int = 3, **params) -> nn.Module:
    return get_host().registry("generator").build(name, input_nc=input_nc, output_nc=output_nc, **params)


def build_d(name: str, input_nc: int = 6, **params) -> nn.Module:
    return get_host().registry("discriminator").build(name, input_nc=input_nc, **params)


def count(net: nn.Module, kind: type[nn.Module]) -> int:
    return sum(isinstance(m, kind) for m in net.modules())


@pytest.fixture(scope="module")
def unet256() -> nn.Module:
    torch.manual_seed(0)
    return build_g("unet_256")


# -- registration --------------------------------------------------------------------------------
@pytest.mark.parametrize(("kind", "names"), [("generator", GENERATORS), ("discriminator", DISCRIMINATORS)])
def test_registered_by_the_i2i_distribution(kind, names):
    registry = get_host().registry(kind)
    for name in names:
        component = registry.get(name)
        assert component.provider.distribution == "i2i"
        assert component.description.strip()


def test_generators_have_no_latent_code():
    assert build_g("unet_128", ngf=4).latent_dim == 0
    assert build_g("resnet", n_blocks=1, ngf=4).latent_dim == 0


# -- the reference architectures -----------------------------------------------------------------
def test_unet_256_matches_the_reference_parameter_count(unet256):
    assert count_parameters(unet256) == 54_413_955


def test_patchgan_matches_the_reference_parameter_count():
    d = build_d("patchgan", input_nc=6)
    assert count_parameters(d) == 2_768_705
    assert d.receptive_field == 70


def test_other_reference_parameter_counts():
    assert count_parameters(build_g("unet_128")) == 41_828_995
    # CycleGAN's generator and discriminator (instance norm) are 11.378 M and 2.765 M.
    assert count_parameters(build_g("resnet_9blocks", norm="instance")) == 11_378_179
    assert count_parameters(build_d("patchgan", input_nc=3, norm="instance")) == 2_764_737


def test_unet_256_forward(unet256):
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    with torch.no_grad():
        y = unet256(x)
    assert y.shape == (1, 3, 256, 256)
    assert y.abs().max() <= 1


def test_unet_128_forward_and_range():
    g = build_g("unet_128")
    with torch.no_grad():
        y = g(torch.randn(1, 3, 128, 128) * 10)  # large inputs drive tanh to its limits
    assert y.shape == (1, 3, 128, 128)
    assert y.min() >= -1 and y.max() <= 1
    assert y.std() > 0


def test_resnet_6blocks_forward():
    g = build_g("resnet_6blocks")
    with torch.no_grad():
        y = g(torch.rand(1, 3, 64, 64) * 2 - 1)
    assert y.shape == (1, 3, 64, 64)
    assert y.abs().max() <= 1
    assert count(g, nn.ReflectionPad2d) == 2 + 2 * 6


@pytest.mark.parametrize("padding", ["reflect", "replicate", "zero"])
def test_resnet_paddings(padding):
    g = build_g("resnet", n_blocks=2, ngf=4, padding=padding)
    assert g(torch.rand(1, 3, 16, 16)).shape == (1, 3, 16, 16)
    assert count(g, nn.ReplicationPad2d) == (4 if padding == "replicate" else 0)


def test_every_parameter_gets_a_gradient():
    for g, size in ((build_g("unet_128", ngf=4), 128), (build_g("resnet", n_blocks=2, ngf=4), 32)):
        g(torch.rand(2, 3, size, size)).mean().backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in g.parameters())


# -- discriminators ------------------------------------------------------------------------------
def test_patchgan_output_and_features():
    d = build_d("patchgan", input_nc=6)
    x = torch.randn(1, 6, 256, 256)
    with torch.no_grad():
        logits = d(x)
        feats = d.features(x)
    assert logits.shape == (1, 1, 30, 30)
    assert logits.min() < 0 or logits.max() > 1  # logits, not probabilities
    assert len(feats) == 4
    assert [f.shape[1] for f in feats] == [64, 128, 256, 512]
    assert [f.shape[-1] for f in feats] == [128, 64, 32, 31]
    assert torch.allclose(d.head(feats[-1]), logits)
    assert count(d, nn.Sigmoid) == 0


@pytest.mark.parametrize(("n_layers", "field", "side"), [(1, 16, 30), (2, 34, 14), (4, 142, 2)])
def test_patchgan_depths(n_layers, field, side):
    d = build_d("patchgan", input_nc=3, ndf=8, n_layers=n_layers)
    x = torch.randn(2, 3, 64, 64)
    assert d.receptive_field == field
    assert d(x).shape == (2, 1, side, side)
    assert len(d.features(x)) == n_layers + 1
    # Filters double per layer but stop at 8 * ndf.
    assert d.features(x)[-1].shape[1] == 8 * min(2**n_layers, 8)


def test_patchgan_too_small_input():
    d = build_d("patchgan", input_nc=3)
    with pytest.raises(I2IError, match="at least 24x24"):
        d(torch.randn(1, 3, 16, 16))


def test_pixelgan_is_per_pixel():
    d = build_d("pixelgan", input_nc=6)
    x = torch.randn(2, 6, 32, 48)
    assert d(x).shape == (2, 1, 32, 48)
    feats = d.features(x)
    assert len(feats) == 2
    assert [f.shape[1] for f in feats] == [64, 128]
    assert all(m.kernel_size == (1, 1) for m in d.modules() if isinstance(m, nn.Conv2d))


# -- options -------------------------------------------------------------------------------------
def test_unet_dropout_switch():
    with_dropout = build_g("unet_256", ngf=2)
    without = build_g("unet_256", ngf=2, dropout=False)
    # Only the num_downs - 5 inner 8 * ngf levels carry dropout, as in pix2pix.
    assert count(with_dropout, nn.Dropout) == 3
    assert count(without, nn.Dropout) == 0
    assert count(build_g("unet", num_downs=5, ngf=2), nn.Dropout) == 0
    assert count_parameters(with_dropout) == count_parameters(without)


def test_resnet_dropout_switch():
    assert count(build_g("resnet", n_blocks=3, ngf=4), nn.Dropout) == 0
    assert count(build_g("resnet", n_blocks=3, ngf=4, dropout=True), nn.Dropout) == 3


@pytest.mark.parametrize("name", ["unet_128", "resnet_6blocks"])
def test_norm_variants(name):
    batch = build_g(name, ngf=4)
    instance = build_g(name, ngf=4, norm="instance")
    plain = build_g(name, ngf=4, norm="none")
    assert count(batch, nn.BatchNorm2d) > 0 and count(batch, nn.InstanceNorm2d) == 0
    assert count(instance, nn.BatchNorm2d) == 0 and count(instance, nn.InstanceNorm2d) > 0
    assert all(
        not m.affine and not m.track_running_stats
        for m in instance.modules()
        if isinstance(m, nn.InstanceNorm2d)
    )
    assert count(plain, nn.BatchNorm2d) + count(plain, nn.InstanceNorm2d) == 0
    convs = (nn.Conv2d, nn.ConvTranspose2d)
    # Without batch norm every convolution has a bias; with it, most do not.
    for net in (instance, plain):
        assert all(m.bias is not None for m in net.modules() if isinstance(m, convs))
    assert any(m.bias is None for m in batch.modules() if isinstance(m, convs))
    x = torch.rand(2, 3, 128, 128) if name.startswith("unet") else torch.rand(2, 3, 32, 32)
    for net in (batch, instance, plain):
        assert net(x).shape == x.shape


def test_patchgan_norm_variants():
    assert count(build_d("patchgan", ndf=4, norm="instance"), nn.InstanceNorm2d) == 3
    assert count(build_d("patchgan", ndf=4, norm="none"), nn.BatchNorm2d) == 0
    assert count(build_d("pixelgan", ndf=4, norm="instance"), nn.InstanceNorm2d) == 1


@pytest.mark.parametrize("name", ["unet_128", "resnet"])
def test_grayscale_in_four_channels_out(name):
    g = build_g(name, input_nc=1, output_nc=4, ngf=4)
    size = 128 if name.startswith("unet") else 32
    assert g(torch.rand(2, 1, size, size)).shape == (2, 4, size, size)
    with pytest.raises(I2IError, match="1 input channel"):
        g(torch.rand(2, 3, size, size))


def test_discriminator_channel_mismatch():
    with pytest.raises(I2IError, match="6 input channel"):
        build_d("patchgan", input_nc=6, ndf=4)(torch.rand(1, 3, 64, 64))


# -- errors --------------------------------------------------------------------------------------
def test_bad_image_size_is_explained():
    with pytest.raises(I2IError, match="multiple of 128"):
        build_g("unet_128", ngf=2)(torch.rand(1, 3, 100, 100))
    with pytest.raises(I2IError, match="multiple of 32"):
        build_g("unet", num_downs=5, ngf=2)(torch.rand(1, 3, 64, 48))
    with pytest.raises(I2IError, match="multiple of 4"):
        build_g("resnet", n_blocks=1, ngf=2)(torch.rand(1, 3, 30, 30))


@pytest.mark.parametrize(
    ("kind", "name", "params", "message"),
    [
        ("generator", "unet", {"num_downs": 4}, "num_downs must be an integer of at least 5"),
        ("generator", "unet_256", {"ngf": 0}, "ngf must be"),
        ("generator", "resnet", {"n_blocks": -1}, "n_blocks must be"),
        ("generator", "unet_128", {"norm": "batchnorm"}, "Did you mean 'batch'"),
        ("generator", "resnet", {"padding": "reflection"}, "Did you mean 'reflect'"),
        ("discriminator", "patchgan", {"n_layers": 0}, "n_layers must be"),
        ("discriminator", "pixelgan", {"norm": "instnce"}, "Did you mean 'instance'"),
    ],
)
def test_bad_arguments(kind, name, params, message):
    injected = {"input_nc": 3, "output_nc": 3} if kind == "generator" else {"input_nc": 3}
    with pytest.raises(I2IError, match=message):
        get_host().registry(kind).build(name, **injected, **params)


# -- initialisation ------------------------------------------------------------------------------
def _big_conv_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(64, 128, 4),
        nn.BatchNorm2d(128),
        nn.ConvTranspose2d(128, 64, 4),
        nn.Linear(32, 16),
    )


def test_init_normal():
    net = init_weights(_big_conv_net(), "normal", 0.02)
    conv, bn = net[0], net[1]
    assert conv.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert conv.weight.mean().abs().item() < 0.002
    assert torch.all(conv.bias == 0) and torch.all(net[2].bias == 0) and torch.all(net[3].bias == 0)
    assert bn.weight.mean().item() == pytest.approx(1.0, abs=0.01)
    assert bn.weight.std().item() == pytest.approx(0.02, rel=0.3)
    assert torch.all(bn.bias == 0)


def test_init_xavier_kaiming_orthogonal():
    conv = init_weights(_big_conv_net(), "xavier", 0.02)[0]
    fan_in, fan_out = 64 * 16, 128 * 16
    expected = 0.02 * math.sqrt(2 / (fan_in + fan_out))
    assert conv.weight.std().item() == pytest.approx(expected, rel=0.05)

    conv = init_weights(_big_conv_net(), "kaiming")[0]
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / fan_in), rel=0.05)

    conv = init_weights(_big_conv_net(), "orthogonal", 0.5)[0]
    rows = conv.weight.reshape(128, -1)
    assert torch.allclose(rows @ rows.T, 0.25 * torch.eye(128), atol=1e-4)


def test_init_none_keeps_weights_and_every_type_changes_them():
    net = _big_conv_net()
    before = [p.detach().clone() for p in net.parameters()]
    assert init_weights(net, "none") is net
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
    for init_type in ("normal", "xavier", "kaiming", "orthogonal"):
        init_weights(net, init_type)
        assert not torch.equal(before[0], net[0].weight)


def test_init_a_generator():
    g = init_weights(build_g("unet_128", ngf=8), "normal", 0.02)
    convs = [m for m in g.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    weights = torch.cat([m.weight.flatten() for m in convs])
    assert weights.std().item() == pytest.approx(0.02, rel=0.05)


def test_unknown_init_type_suggests_the_close_match():
    with pytest.raises(I2IError, match="Did you mean 'xavier'"):
        init_weights(_big_conv_net(), "xaviar")


def test_count_parameters():
    net = nn.Linear(10, 5)
    assert count_parameters(net) == 55
    net.bias.requires_grad_(False)
    assert count_parameters(net) == 55
    assert count_parameters(net, trainable_only=True) == 50
