"""The U-Nets keep their parameters, state-dict keys and outputs, so existing checkpoints still load.

The reference values were computed by the U-Net code as it stood before the latent U-Nets were
rewritten on top of the pix2pix U-Net's building blocks: for each generator, built with seed 0,

- ``layout``: the first 16 hex digits of the SHA-256 of its ``state_dict`` keys and shapes, one
  ``key:shape`` per line, and ``keys`` their number;
- ``default_sum``: the sum of its parameters as PyTorch initialises them (the layers' construction
  order draws them);
- ``init_abs_sum``: the sum of their magnitudes after ``init_weights(G, "normal", 0.02)`` (the
  order of ``G.modules()`` draws them);
- ``train_out`` / ``eval_out``: sum and sum of magnitudes of the output for a fixed input (and code)
  in train mode (seed 2 for dropout) and in eval mode.
"""

from __future__ import annotations

import hashlib

import pytest
import torch
from torch import nn

from i2i.assembly.host import PluginHost
from i2i.nn_init import init_weights

# name, settings, layout, keys, default_sum, init_abs_sum, train_out, eval_out
REFERENCE = [
    ("unet", {"num_downs": 5, "ngf": 4}, "7a85c3bafc458029", 46, 114.707948, 1163.25791,
     (2.887487, 187.205973), (-3.513111, 12.805306)),
    ("unet", {"num_downs": 7, "ngf": 4, "norm": "instance", "dropout": True}, "b4791b0cb4c33e0b", 28,
     11.697378, 2612.760114, (-1509.481134, 3506.290169), (-1508.681831, 3512.925084)),
    ("unet", {"num_downs": 6, "ngf": 2, "norm": "none", "output": "logits"}, "8f249265797bf66f", 24,
     14.051687, 457.825606, (6.712433, 44.573385), (6.712433, 44.573385)),
    ("unet_128", {"ngf": 2}, "6cc6dc5ae8fde800", 70, 130.410311, 773.563704,
     (560.637653, 1993.819701), (33.541919, 136.193623)),
    ("unet_256", {"ngf": 2, "norm": "instance"}, "d281b09354084b59", 32, 6.000259, 849.334765,
     (3763.333048, 7733.1736), (3758.006763, 7734.299576)),
    ("unet_latent", {"num_downs": 5, "ngf": 4, "nz": 3}, "9ffcf9f40d90f203", 46, 111.506619, 1229.380935,
     (3.346292, 160.244287), (-2.632492, 25.765485)),
    ("unet_latent", {"num_downs": 6, "ngf": 4, "nz": 3, "inject": "input", "norm": "instance"},
     "b2814ed2e363bc80", 24, 9.648231, 1843.34156, (376.178877, 767.521012), (376.178877, 767.521012)),
    ("unet_z_input", {"num_downs": 7, "ngf": 2, "nz": 5, "dropout": True}, "052f5202b5908030", 70,
     128.34438, 777.313736, (579.043232, 1809.101816), (12.172474, 275.794575)),
    ("unet_z_all", {"num_downs": 7, "ngf": 2, "nz": 5, "dropout": True, "norm": "none"},
     "2cca9a7d17ac4b62", 28, 0.612364, 754.4269, (128.992141, 367.071222), (128.992149, 367.071188)),
]  # fmt: skip


@pytest.fixture(scope="module")
def host() -> PluginHost:
    return PluginHost()


def build(host: PluginHost, name: str, settings: dict) -> nn.Module:
    torch.manual_seed(0)
    return host.registry("generator").build(name, input_nc=3, output_nc=2, **settings)


def layout(net: nn.Module) -> str:
    lines = "\n".join(f"{key}:{tuple(value.shape)}" for key, value in net.state_dict().items())
    return hashlib.sha256(lines.encode()).hexdigest()[:16]


def sums(t: torch.Tensor) -> tuple[float, float]:
    t = t.detach().double()
    return float(t.sum()), float(t.abs().sum())


@pytest.mark.parametrize(
    ("name", "settings", "digest", "keys", "default_sum", "init_abs_sum", "train_out", "eval_out"),
    REFERENCE,
    ids=[f"{name}-{i}" for i, (name, *_) in enumerate(REFERENCE)],
)
def test_unets_keep_their_parameters_keys_and_outputs(
    host, name, settings, digest, keys, default_sum, init_abs_sum, train_out, eval_out
):
    G = build(host, name, settings)
    assert (layout(G), len(G.state_dict())) == (digest, keys)
    with torch.no_grad():
        assert sum(float(p.double().sum()) for p in G.parameters()) == pytest.approx(default_sum, rel=1e-6)
        init_weights(G, "normal", 0.02)
        assert sum(float(p.double().abs().sum()) for p in G.parameters()) == pytest.approx(
            init_abs_sum, rel=1e-6
        )
        side = 2**G.num_downs
        gen = torch.Generator().manual_seed(1)
        x = torch.rand(2, 3, side, side, generator=gen) * 2 - 1
        nz = getattr(G, "latent_dim", 0)
        args = (x, torch.randn(2, nz, generator=gen)) if nz else (x,)
        torch.manual_seed(2)
        assert sums(G.train()(*args)) == pytest.approx(train_out, rel=1e-4)
        assert sums(G.eval()(*args)) == pytest.approx(eval_out, rel=1e-4)


def test_state_dict_keys_keep_their_names(host):
    """Readable spot checks of what the digests above pin down."""
    plain = build(host, "unet", {"num_downs": 5, "ngf": 4}).state_dict()
    assert {"model.model.0.weight", "model.model.1.model.2.weight", "model.model.3.bias"} <= set(plain)
    latent = build(host, "unet_z_all", {"num_downs": 5, "ngf": 4, "nz": 3}).state_dict()
    assert {
        "model.down.0.weight",
        "model.up.1.weight",
        "model.submodule.down.1.weight",
        "model.submodule.down.2.running_mean",
        "model.submodule.up.2.running_var",
    } <= set(latent)
