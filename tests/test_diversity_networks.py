"""The diversity plugin's latent U-Nets, encoders and losses, built through the plugin host."""

from __future__ import annotations

import pytest
import torch
from i2i_diversity.encoders import build_encoder
from torch import Tensor, nn

from i2i import StepContext
from i2i.assembly.host import PluginHost
from i2i.errors import I2IError
from i2i.losses import call_frozen
from i2i.nn_init import count_parameters

NZ = 8
SIZE = 32  # 2**5: the smallest image the 5-level U-Nets take


@pytest.fixture(scope="module")
def host() -> PluginHost:
    return PluginHost()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def build_g(host: PluginHost, name: str, **params) -> nn.Module:
    settings = {"input_nc": 3, "output_nc": 3, "num_downs": 5, "ngf": 4, "nz": NZ, **params}
    return host.registry("generator").build(name, **settings)


def build_loss(host: PluginHost, name: str, latent_dim: int = NZ, **params):
    loss = host.registry("loss").build(name, **params)
    loss.setup(input_nc=3, output_nc=3, latent_dim=latent_dim)
    return loss


def draw_z(batch: int) -> Tensor:
    return torch.randn(batch, NZ)


def make_context(G: nn.Module, D: nn.Module | None = None, batch: int = 2) -> StepContext:
    """A training step's context as the loop builds it: one random-code output with gradients."""
    real_A = torch.rand(batch, 3, SIZE, SIZE) * 2 - 1
    real_B = torch.rand(batch, 3, SIZE, SIZE) * 2 - 1
    z = draw_z(batch)
    return StepContext(real_A, real_B, G, D, G(real_A, z), z, draw_z)


def down_convs(net: nn.Module) -> list[nn.Conv2d]:
    """The U-Net's down-sampling convolutions, outermost first (transposed convs are not Conv2d)."""
    return [m for m in net.modules() if isinstance(m, nn.Conv2d)]


def spread(G: nn.Module, A: Tensor, z1: Tensor, z2: Tensor) -> float:
    with torch.no_grad():
        return (G(A, z1) - G(A, z2)).abs().mean().item()


# -- registration --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("generator", "unet_latent"),
        ("generator", "unet_z_input"),
        ("generator", "unet_z_all"),
        ("loss", "mode_seeking"),
        ("loss", "diversity_sensitive"),
        ("loss", "bicyclegan"),
    ],
)
def test_registered_by_the_i2i_distribution(host, kind, name):
    component = host.registry(kind).get(name)
    assert component.provider.distribution == "i2i"
    assert component.description.strip()


# -- latent U-Nets -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["unet_z_input", "unet_z_all"])
def test_latent_unet_maps_image_and_code_to_an_image(host, name):
    G = build_g(host, name)
    assert G.latent_dim == NZ
    out = G(torch.randn(2, 3, SIZE, SIZE), draw_z(2))
    assert out.shape == (2, 3, SIZE, SIZE)
    assert out.abs().max() <= 1


def test_all_injection_adds_the_code_to_every_down_level(host):
    ngf = 4
    convs = down_convs(build_g(host, "unet_z_all", ngf=ngf))
    assert [c.in_channels for c in convs] == [3 + NZ, ngf + NZ, 2 * ngf + NZ, 4 * ngf + NZ, 8 * ngf + NZ]


def test_input_injection_adds_the_code_to_the_image_only(host):
    ngf = 4
    convs = down_convs(build_g(host, "unet_z_input", ngf=ngf, num_downs=6))
    assert [c.in_channels for c in convs] == [3 + NZ, ngf, 2 * ngf, 4 * ngf, 8 * ngf, 8 * ngf]


def test_unet_latent_selects_the_injection(host):
    assert build_g(host, "unet_latent", inject="input").inject == "input"
    assert build_g(host, "unet_latent").inject == "all"
    with pytest.raises(I2IError, match="injection"):
        build_g(host, "unet_latent", inject="middle")


def test_input_injection_has_the_layout_of_a_wider_plain_unet(host):
    latent = build_g(host, "unet_z_input", num_downs=6, norm="instance")
    plain = host.registry("generator").build(
        "unet", input_nc=3 + NZ, output_nc=3, num_downs=6, ngf=4, norm="instance"
    )
    assert count_parameters(latent) == count_parameters(plain)


def test_dropout_is_off_by_default_and_placed_like_pix2pix(host):
    assert not any(isinstance(m, nn.Dropout) for m in build_g(host, "unet_z_all", num_downs=7).modules())
    with_dropout = build_g(host, "unet_z_all", num_downs=7, dropout=True)
    assert sum(isinstance(m, nn.Dropout) for m in with_dropout.modules()) == 2  # num_downs - 5


@pytest.mark.parametrize("name", ["unet_z_input", "unet_z_all"])
def test_the_code_decides_the_output(host, name):
    G = build_g(host, name).eval()
    A = torch.randn(1, 3, SIZE, SIZE)
    z1, z2 = draw_z(1), draw_z(1)
    with torch.no_grad():
        assert torch.equal(G(A, z1), G(A, z1))
        assert not torch.allclose(G(A, z1), G(A, z2))


@pytest.mark.parametrize("bad_z", [torch.zeros(2, NZ + 1), torch.zeros(1, NZ), torch.zeros(2, NZ, 1)])
def test_a_wrong_code_shape_is_a_clear_error(host, bad_z):
    G = build_g(host, "unet_z_all")
    with pytest.raises(I2IError, match=r"latent code of shape \(batch, nz\) = \(2, 8\)"):
        G(torch.zeros(2, 3, SIZE, SIZE), bad_z)


def test_image_checks_are_those_of_the_unet(host):
    G = build_g(host, "unet_z_all")
    with pytest.raises(I2IError, match="multiple of 32"):
        G(torch.zeros(1, 3, 48, 48), draw_z(1))
    with pytest.raises(I2IError, match="at least 1"):
        build_g(host, "unet_z_all", nz=0)


# -- encoders ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["conv", "resnet"])
@pytest.mark.parametrize("norm", ["instance", "batch", "none"])
def test_encoders_give_a_gaussian_code_per_image(kind, norm):
    encoder = build_encoder(kind, input_nc=3, nz=NZ, nef=4, n_layers=4, norm=norm)
    mu, logvar = encoder(torch.randn(2, 3, SIZE, SIZE))
    assert mu.shape == logvar.shape == (2, NZ)


@pytest.mark.parametrize("kind", ["conv", "resnet"])
def test_encoders_work_at_any_multiple_and_reject_other_sizes(kind):
    encoder = build_encoder(kind, input_nc=3, nz=NZ, nef=4, n_layers=3)
    assert encoder(torch.randn(1, 3, 48, 24))[0].shape == (1, NZ)
    with pytest.raises(I2IError, match="multiples of 8"):
        encoder(torch.randn(1, 3, 36, 32))
    with pytest.raises(I2IError, match=r"\(N, 3, H, W\)"):
        encoder(torch.randn(1, 1, 32, 32))


def test_the_conv_encoder_caps_its_channels_at_four_times_nef():
    encoder = build_encoder("conv", input_nc=3, nz=NZ, nef=4, n_layers=5)
    assert [c.out_channels for c in down_convs(encoder)] == [4, 8, 16, 16, 16]


def test_an_unknown_encoder_kind_suggests_the_right_one():
    with pytest.raises(I2IError, match="resnet"):
        build_encoder("resnt", input_nc=3, nz=NZ)


# -- mode seeking and diversity-sensitive --------------------------------------------------------
@pytest.mark.parametrize(("name", "params"), [("mode_seeking", {}), ("diversity_sensitive", {"tau": 10.0})])
def test_regulariser_gradient_pushes_two_samples_apart(host, name, params):
    G = build_g(host, "unet_z_all", norm="none")
    loss = build_loss(host, name, **params)
    optimiser = torch.optim.SGD(G.parameters(), lr=0.05)
    A = torch.rand(2, 3, SIZE, SIZE) * 2 - 1
    z1, z2 = draw_z(2), draw_z(2)
    before = spread(G, A, z1, z2)
    for _ in range(5):
        optimiser.zero_grad()
        ctx = make_context(G)
        (loss.weight * loss.generator_loss(ctx)).backward()
        optimiser.step()
    assert spread(G, A, z1, z2) > 1.5 * before


def test_mode_seeking_is_one_over_the_batch_ratio(host):
    G = build_g(host, "unet_z_all")
    ctx = make_context(G)
    term = build_loss(host, "mode_seeking", eps=0.5).generator_loss(ctx)
    other, other_z = ctx.sample()
    ratio = (ctx.fake_B - other).abs().mean() / (ctx.z - other_z).abs().mean()
    assert torch.allclose(term, 1 / (ratio + 0.5))
    assert torch.allclose(ctx.logs["ms_ratio"], ratio)


def test_diversity_sensitive_clamp_stops_the_gradient(host):
    G = build_g(host, "unet_z_all")
    ctx = make_context(G)
    tau = 1e-6
    term = build_loss(host, "diversity_sensitive", tau=tau).generator_loss(ctx)
    assert term.item() == pytest.approx(-tau, rel=1e-6)
    grads = torch.autograd.grad(term, list(G.parameters()), allow_unused=True)
    assert all(g is None or not g.any() for g in grads)
    assert ctx.logs["ds_ratio"] > tau


@pytest.mark.parametrize("name", ["mode_seeking", "diversity_sensitive", "bicyclegan"])
def test_latent_losses_need_a_generator_with_a_code(host, name):
    with pytest.raises(I2IError, match="needs a generator with a latent code, e.g. unet_z_all"):
        build_loss(host, name, latent_dim=0)


# -- BicycleGAN ----------------------------------------------------------------------------------
@pytest.fixture
def bicycle_parts(host):
    G = build_g(host, "unet_z_all", norm="instance")
    D = host.registry("discriminator").build("patchgan", input_nc=6, ndf=4, n_layers=2)
    loss = build_loss(host, "bicyclegan", nef=4, n_layers=3)
    return G, D, loss


def nonzero_grads(module: nn.Module) -> bool:
    return any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def test_bicyclegan_owns_an_encoder_of_the_generators_code(bicycle_parts):
    _, _, loss = bicycle_parts
    assert loss.uses_discriminator and loss.conditional
    assert list(loss.parameters())
    mu, logvar = loss.encoder(torch.randn(1, 3, SIZE, SIZE))
    assert mu.shape == logvar.shape == (1, NZ)


def test_bicyclegan_trains_d_then_g_and_e_on_one_encoded_sample(bicycle_parts):
    G, D, loss = bicycle_parts
    ctx = make_context(G, D)
    loss_D = loss.discriminator_loss(ctx)
    loss_D.backward()
    assert nonzero_grads(D) and not nonzero_grads(loss) and not nonzero_grads(G)
    assert "D_enc_fake" in ctx.logs

    D.zero_grad()
    D.requires_grad_(False)
    term = loss.generator_loss(ctx)
    assert set(ctx.logs) >= {"bicycle_gan", "bicycle_l1", "bicycle_kl", "bicycle_z"}
    (loss.weight * term).backward()
    assert nonzero_grads(loss.encoder) and nonzero_grads(G)
    # The encoded sample drawn for D was reused, not drawn again.
    assert loss.encoded_sample(ctx)[0] is ctx.sample("bicyclegan_encoded")[0]


def test_bicyclegan_latent_regression_trains_g_but_not_e(bicycle_parts):
    G, D, loss = bicycle_parts
    ctx = make_context(G, D)
    loss.latent_regression(ctx).backward()
    assert nonzero_grads(G)
    assert all(p.grad is None for p in loss.parameters())
    # The same regression through the encoder itself would have trained it.
    mu, _ = loss.encoder(ctx.fake_B.detach())
    (mu - ctx.z).abs().mean().backward()
    assert nonzero_grads(loss.encoder)
    assert torch.equal(call_frozen(loss.encoder, ctx.fake_B)[0], loss.encoder(ctx.fake_B)[0])


@pytest.mark.parametrize("encoder", ["conv", "resnet"])
def test_bicyclegan_builds_either_encoder_for_the_target_channels(host, encoder):
    loss = host.registry("loss").build("bicyclegan", encoder=encoder, nef=4, n_layers=3)
    loss.setup(input_nc=1, output_nc=3, latent_dim=4)
    mu, logvar = loss.encoder(torch.randn(2, 3, SIZE, SIZE))
    assert mu.shape == logvar.shape == (2, 4)


def test_bicyclegan_checks_its_encoder_kind_when_built(host):
    """The ranges of its numbers are the recipe's (tests/test_plugin_ranges.py); the encoder's
    settings are checked again when setup() builds it."""
    with pytest.raises(I2IError, match="resnet"):
        host.registry("loss").build("bicyclegan", encoder="resnt")
    loss = host.registry("loss").build("bicyclegan", nef=0)
    with pytest.raises(I2IError, match="nef must be an integer of at least 1"):
        loss.setup(input_nc=3, output_nc=3, latent_dim=NZ)


def test_bicyclegan_without_setup_says_so(host):
    G = build_g(host, "unet_z_all")
    loss = host.registry("loss").build("bicyclegan")
    with pytest.raises(I2IError, match="setup"):
        loss.latent_regression(make_context(G))
