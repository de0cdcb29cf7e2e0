"""The diversity plugin's fidelity losses: min_of_k (CRN's best of many) and cimle (conditional IMLE).

Their formulas against hand computations, which sample or code each one chooses, that choosing
leaves batch-norm statistics alone, and short training runs through the public API.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import toy_recipe
from i2i_diversity.fidelity import nearest_codes
from torch import Tensor, nn
from typer.testing import CliRunner

import i2i
from i2i import I2IError, PluginHost, RecipeError, StepContext
from i2i.cli import app

NZ = 4
SIZE = 32  # 2**5: the smallest image a 5-level U-Net takes


@pytest.fixture(scope="module")
def host() -> PluginHost:
    return PluginHost()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def build_g(host: PluginHost, norm: str = "instance") -> nn.Module:
    settings = {"input_nc": 3, "output_nc": 3, "num_downs": 5, "ngf": 4, "nz": NZ, "norm": norm}
    return host.registry("generator").build("unet_z_all", **settings)


def build_d(host: PluginHost, norm: str = "batch") -> nn.Module:
    return host.registry("discriminator").build("patchgan", input_nc=6, ndf=4, n_layers=2, norm=norm)


def build_loss(host: PluginHost, name: str, latent_dim: int = NZ, **params):
    loss = host.registry("loss").build(name, **params)
    loss.setup(input_nc=3, output_nc=3, latent_dim=latent_dim)
    return loss


def images(batch: int = 2) -> tuple[Tensor, Tensor]:
    return torch.rand(batch, 3, SIZE, SIZE) * 2 - 1, torch.rand(batch, 3, SIZE, SIZE) * 2 - 1


def codes_from(codes: list[Tensor]) -> Callable[[int], Tensor]:
    """A ``sample_z`` that hands out ``codes`` in order, so a test knows every code a loss draws."""
    remaining = list(codes)

    def sample_z(batch: int) -> Tensor:
        z = remaining.pop(0)
        assert z.shape[0] == batch
        return z

    return sample_z


def random_codes(batch: int) -> Tensor:
    return torch.randn(batch, NZ)


def make_context(G: nn.Module, D: nn.Module | None, A: Tensor, B: Tensor, sample_z=random_codes):
    """A step's context as the loop builds it: one random-code output with gradients."""
    z = torch.randn(A.shape[0], NZ)
    return StepContext(A, B, G, D, G(A, z), z, sample_z)


def batchnorm_buffers(net: nn.Module) -> dict[str, Tensor]:
    return {
        name: buffer.clone()
        for name, buffer in net.named_buffers()
        if name.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked")
    }


# -- min_of_k ------------------------------------------------------------------------------------
def test_min_of_k_with_one_sample_is_cgan_plus_100_l1(host):
    G, D = build_g(host, norm="batch"), build_d(host)
    ctx = make_context(G, D, *images())
    mok = build_loss(host, "min_of_k", k=1)
    cgan, l1 = host.registry("loss").build("cgan", mode="vanilla"), host.registry("loss").build("l1")

    assert torch.equal(mok.discriminator_loss(ctx), cgan.discriminator_loss(ctx))
    g_mok = mok.weight * mok.generator_loss(ctx)
    g_ref = cgan.weight * cgan.generator_loss(ctx) + l1.weight * l1.generator_loss(ctx)
    assert l1.weight == 100.0
    assert torch.allclose(g_mok, g_ref, rtol=1e-6, atol=0)
    grads_mok = torch.autograd.grad(g_mok, list(G.parameters()), retain_graph=True)
    grads_ref = torch.autograd.grad(g_ref, list(G.parameters()))
    for a, b in zip(grads_mok, grads_ref, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("d_norm", ["batch", "instance"])  # one D call per sample, or one batched call
def test_min_of_k_judges_every_sample(host, d_norm):
    G, D = build_g(host), build_d(host, d_norm)
    A, B = images()
    ctx = make_context(G, D, A, B)
    loss = build_loss(host, "min_of_k", k=3, gan_mode="lsgan")
    loss_D = loss.discriminator_loss(ctx)
    samples = [ctx.fake_B] + [ctx.sample(f"min_of_k_{j}")[0] for j in (1, 2)]
    assert not torch.equal(samples[1], samples[2])  # fresh codes, different outputs

    def judged(x: Tensor, real: bool) -> Tensor:
        logits = D(torch.cat([A, x], dim=1))
        return F.mse_loss(logits, torch.full_like(logits, float(real)))

    fake = sum(judged(s.detach(), False) for s in samples) / 3
    assert torch.allclose(loss_D, 0.5 * (judged(B, True) + fake), rtol=1e-5)
    assert torch.allclose(ctx.logs["D_fake"], fake, rtol=1e-5)

    term = loss.generator_loss(ctx)
    adversarial = sum(judged(s, True) for s in samples) / 3
    d = torch.stack([(s - B).abs().mean(dim=(1, 2, 3)) for s in samples], dim=1)
    assert torch.allclose(term, adversarial + 100 * d.min(dim=1).values.mean(), rtol=1e-5)
    assert torch.allclose(ctx.logs["mok_best"], d.min(dim=1).values.mean())
    assert torch.allclose(ctx.logs["mok_mean"], d.mean())


class CodeImage(nn.Module):
    """A generator whose output is a flat image of value z[:, 0]: each code gives a known sample."""

    latent_dim = 1

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.calls = 0

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        self.calls += 1
        return (self.scale * z[:, :1]).view(-1, 1, 1, 1).expand_as(x)


class ConstantD(nn.Module):
    """A discriminator that ignores its input, so G's adversarial term gives the samples no gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.logit = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        return self.logit.expand(x.shape[0], 1, 2, 2)


#: Three codes for a batch of two whose targets are the flat images 0.5 and -1: item 0 is nearest
#: sample 2, item 1 nearest sample 0.
CODES = [torch.tensor([[0.0], [-0.9]]), torch.tensor([[0.2], [0.5]]), torch.tensor([[0.45], [2.0]])]
CHOSEN = {0: 2, 1: 0}


def code_image_context() -> tuple[StepContext, CodeImage]:
    G = CodeImage()
    A = torch.zeros(2, 3, 4, 4)
    B = torch.stack([torch.full((3, 4, 4), 0.5), torch.full((3, 4, 4), -1.0)])
    ctx = StepContext(A, B, G, ConstantD(), G(A, CODES[0]), CODES[0], codes_from(CODES[1:]))
    return ctx, G


def min_of_k_loss(**params):
    return PluginHost().registry("loss").build("min_of_k", **params)


def sample_distances(power: int) -> Tensor:
    """d[b, j] for CODES against the targets 0.5 and -1 (flat images: one number per pair)."""
    values = torch.stack([z[:, 0] for z in CODES], dim=1)
    return (values - torch.tensor([[0.5], [-1.0]])).abs() ** power


@pytest.mark.parametrize(("distance", "power"), [("l1", 1), ("l2", 2)])
def test_min_of_k_pulls_only_the_nearest_sample_of_each_item(distance, power):
    ctx, _ = code_image_context()
    loss = min_of_k_loss(k=3, distance=distance)
    term = loss.generator_loss(ctx)
    samples = [ctx.fake_B, ctx.sample("min_of_k_1")[0], ctx.sample("min_of_k_2")[0]]
    grads = torch.autograd.grad(term, samples)
    for j, grad in enumerate(grads):
        for b in (0, 1):
            if CHOSEN[b] == j:
                assert grad[b].abs().sum() > 0, (j, b)
            else:
                assert torch.equal(grad[b], torch.zeros_like(grad[b])), (j, b)
    d = sample_distances(power)
    assert term.item() == pytest.approx(math.log(2) + 100 * d.min(dim=1).values.mean().item(), rel=1e-5)


def test_min_of_k_with_mean_weight_one_pulls_the_mean_of_all_samples():
    ctx, _ = code_image_context()
    term = min_of_k_loss(k=3, mean_weight=1.0).generator_loss(ctx)
    assert term.item() == pytest.approx(math.log(2) + 100 * sample_distances(1).mean().item(), rel=1e-5)
    samples = [ctx.fake_B, ctx.sample("min_of_k_1")[0], ctx.sample("min_of_k_2")[0]]
    assert all(g.abs().sum(dim=(1, 2, 3)).all() for g in torch.autograd.grad(term, samples))


def test_min_of_k_draws_its_samples_once_for_both_phases():
    ctx, G = code_image_context()
    loss = min_of_k_loss(k=3)
    loss.discriminator_loss(ctx)
    assert G.calls == 3  # fake_B, then two more
    loss.generator_loss(ctx)
    assert G.calls == 3


# -- cimle ---------------------------------------------------------------------------------------
def test_cimle_with_one_candidate_is_l1_on_the_drawn_code(host):
    G = build_g(host)
    A, B = images()
    code = torch.randn(2, NZ)
    ctx = make_context(G, None, A, B, sample_z=codes_from([code]))
    term = build_loss(host, "cimle", candidates=1).generator_loss(ctx)
    assert torch.equal(ctx.sample("cimle")[1], code)
    assert torch.allclose(term, F.l1_loss(G(A, code), B), rtol=1e-6)


def by_hand(G: nn.Module, A: Tensor, B: Tensor, codes: list[Tensor], power: int) -> tuple[Tensor, Tensor]:
    """Each candidate's output alone (a copy of G, so its statistics stay put): (chosen index, d)."""
    G = copy.deepcopy(G)
    with torch.no_grad():
        d = torch.stack([((G(A, z) - B).abs() ** power).mean(dim=(1, 2, 3)) for z in codes])
    return d.argmin(dim=0), d


@pytest.mark.parametrize(("norm", "distance", "power"), [("instance", "l1", 1), ("batch", "l2", 2)])
def test_cimle_reconstructs_from_the_nearest_candidate(host, norm, distance, power):
    G = build_g(host, norm)
    A, B = images(batch=3)
    codes = [torch.randn(3, NZ) for _ in range(6)]
    ctx = make_context(G, None, A, B, sample_z=codes_from(codes))
    chosen, d = by_hand(G, A, B, codes, power)
    assert chosen.tolist() != [0, 0, 0]  # the choice is not simply the first code
    expected_z = torch.stack([codes[c][b] for b, c in enumerate(chosen.tolist())])
    G_after = copy.deepcopy(G)

    term = build_loss(host, "cimle", candidates=6, distance=distance).generator_loss(ctx)
    out, z = ctx.sample("cimle")
    assert torch.equal(z, expected_z)
    reference = G_after(A, expected_z)
    assert torch.allclose(out, reference, atol=1e-6)
    assert torch.allclose(term, ((reference - B).abs() ** power).mean(), rtol=1e-5)
    assert torch.allclose(ctx.logs["cimle_chosen_dist"], d.min(dim=0).values.mean(), rtol=1e-5)
    assert torch.allclose(ctx.logs["cimle_first_dist"], d[0].mean(), rtol=1e-5)
    assert ctx.logs["cimle_chosen_dist"] < ctx.logs["cimle_first_dist"]


def test_cimle_choosing_leaves_the_batchnorm_statistics_alone(host):
    G = build_g(host, norm="batch")
    A, B = images()
    ctx = make_context(G, None, A, B)
    before = copy.deepcopy(G)
    build_loss(host, "cimle", candidates=5).generator_loss(ctx)
    before(A, ctx.sample("cimle")[1])  # the one training forward the loss makes
    after, expected = batchnorm_buffers(G), batchnorm_buffers(before)
    assert expected and after.keys() == expected.keys()
    for name, value in expected.items():
        assert torch.equal(after[name], value), name


def test_cimle_batched_choice_equals_one_pass_per_candidate(host):
    G = build_g(host, norm="instance")
    A, B = images(batch=3)
    codes = [torch.randn(3, NZ) for _ in range(5)]
    z_batched, d_batched = nearest_codes(G, A, B, codes, "l1", batched=True)
    z_looped, d_looped = nearest_codes(G, A, B, codes, "l1", batched=False)
    assert d_batched.shape == (5, 3)
    assert torch.allclose(d_batched, d_looped, atol=1e-6)
    assert torch.equal(z_batched, z_looped)


def test_cimle_needs_a_generator_with_a_code(host):
    with pytest.raises(I2IError, match="needs a generator with a latent code"):
        build_loss(host, "cimle", latent_dim=0)
    G = host.registry("generator").build("unet", input_nc=3, output_nc=3, num_downs=5, ngf=4)
    A, B = images()
    ctx = StepContext(A, B, G, None, G(A), None, lambda batch: None)
    loss = host.registry("loss").build("cimle")
    with pytest.raises(I2IError, match="needs a generator with a latent code"):
        loss.generator_loss(ctx)


# -- registration, recipe checks and runs --------------------------------------------------------
def test_list_plugins_shows_both_losses():
    result = CliRunner().invoke(app, ["list-plugins", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    by_name = {c["name"]: c for c in payload["components"] if c["kind"] == "loss"}
    for name in ("min_of_k", "cimle"):
        assert by_name[name]["plugin"] == "diversity-fidelity"
    assert "min_j" in by_name["min_of_k"]["description"]
    losses = PluginHost().registry("loss")
    assert losses.get("min_of_k").uses_discriminator is True
    assert losses.get("cimle").uses_discriminator is False


LATENT_G = {"name": "unet_z_all", "ngf": 4, "norm": "instance", "nz": NZ}


def recipe_with(tmp_path: Path, losses: list[dict], **sections) -> Path:
    return toy_recipe(
        tmp_path / "recipe.toml",
        tmp_path / "runs",
        generator=LATENT_G,
        losses=losses,
        train={"max_steps": 2, "evaluate": False, "sample_every": 0},
        **sections,
    )


@pytest.mark.parametrize(
    ("loss", "key", "value", "problem"),
    [
        ("min_of_k", "k", 0, "allowed range [1, 64]"),
        ("min_of_k", "k", 65, "allowed range [1, 64]"),
        ("min_of_k", "mean_weight", 2.0, "allowed range [0, 1]"),
        ("min_of_k", "lambda_rec", -1.0, "allowed range [0, inf)"),
        ("cimle", "candidates", 0, "allowed range [1, 256]"),
    ],
)
def test_recipe_validation_refuses_settings_out_of_range(tmp_path, loss, key, value, problem):
    with pytest.raises(RecipeError) as caught:
        i2i.resolve_recipe(recipe_with(tmp_path, [{"name": loss, key: value}]))
    prefix = f"losses.{loss}.{key} = {value!r}: "
    assert any(p.startswith(prefix) and problem in p for p in caught.value.problems), caught.value.problems


def test_recipe_validation_accepts_the_edges(tmp_path):
    edges = [{"name": "min_of_k", "k": 64, "mean_weight": 1.0}, {"name": "cimle", "candidates": 256}]
    i2i.resolve_recipe(recipe_with(tmp_path, edges))


def logged(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_min_of_k_trains_in_place_of_cgan_and_l1(tmp_path):
    recipe = recipe_with(
        tmp_path,
        [{"name": "min_of_k", "k": 2}],
        discriminator={"norm": "instance"},
    )
    result = i2i.train(recipe, progress=False)
    assert result.step == 2
    log = logged(result.run_dir)
    assert len(log) == 2
    assert {"D_real", "D_fake", "mok_gan", "mok_best", "mok_mean", "G_min_of_k"} <= set(log[0])
    assert all(r["mok_best"] <= r["mok_mean"] for r in log)


@pytest.mark.slow
def test_cimle_trains_alone_without_a_discriminator(tmp_path):
    recipe = recipe_with(tmp_path, [{"name": "cimle", "candidates": 3}], discriminator=None)
    result = i2i.train(recipe, progress=False)
    assert result.step == 2
    log = logged(result.run_dir)
    assert {"cimle_chosen_dist", "cimle_first_dist", "G_cimle"} <= set(log[0])
    assert "D_real" not in log[0]
    assert all(r["cimle_chosen_dist"] <= r["cimle_first_dist"] for r in log)
