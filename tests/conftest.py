"""Fixtures shared by the test modules."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from i2i.assembly.host import PluginHost, set_host

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def install_host() -> Iterator[Callable[..., PluginHost]]:
    """``install_host(("name", plugin), ..., **host_kwargs)``: build a :class:`PluginHost` with the
    installed plugins plus these inline ones and make it the process host (what ``get_host()``
    and the CLI use) for the rest of the test. ``host_kwargs`` go to ``PluginHost``, e.g.
    ``entry_points=[]`` to leave the installed plugins out."""

    def install(*plugins: tuple[str, Any], **host_kwargs: Any) -> PluginHost:
        host = PluginHost(extra_plugins=plugins, **host_kwargs)
        set_host(host)
        return host

    yield install
    set_host(None)


@pytest.fixture
def facades_root() -> Path:
    """The full CMP Facades dataset shared between checkouts (train/, test/), if present."""
    root = REPO.parent / "shared" / "datasets" / "facades"
    if not (root / "train").is_dir():
        pytest.skip(f"the shared facades dataset is not available at {root}")
    return root


@pytest.fixture
def sample_root() -> Path:
    """The small facades sample bundled with the repository."""
    return REPO / "samples" / "facades_mini"


#: The smallest pix2pix that trains on the bundled sample in a second or two: 32x32 crops, a
#: 5-level U-Net and a 2-layer PatchGAN with 8 filters, cgan + 100·L1. Tests change what they need
#: through :func:`toy_recipe`.
TOY_RECIPE: dict[str, Any] = {
    "experiment": {"name": "tiny", "seed": 3, "device": "cpu"},
    "data": {
        "name": "aligned",
        "root": str(REPO / "samples" / "facades_mini"),
        "direction": "BtoA",
        "load_size": 36,
        "crop_size": 32,
        "max_items": 4,
    },
    "generator": {"name": "unet", "num_downs": 5, "ngf": 8},
    "discriminator": {"name": "patchgan", "ndf": 8, "n_layers": 2},
    "losses": [{"name": "cgan"}, {"name": "l1", "weight": 100.0}],
    "train": {"epochs": 1, "epochs_decay": 0, "log_every": 1, "tensorboard": False},
    "eval": {"max_items": 2},
}


def toy_recipe(path: Path, out: Path, **sections: dict[str, Any] | list | None) -> Path:
    """Write :data:`TOY_RECIPE` to ``path`` with ``output_dir = out``; each keyword updates that
    table (``generator={"num_downs": 6}``; a ``None`` value removes that key), replaces the loss
    list (``losses=[...]``) or, given ``None``, leaves the table out. Returns ``path``."""
    import copy

    import tomli_w

    recipe = copy.deepcopy(TOY_RECIPE)
    recipe["experiment"]["output_dir"] = str(out)
    for name, change in sections.items():
        if change is None:
            recipe.pop(name, None)
        elif isinstance(change, list):
            recipe[name] = change
        else:
            table = recipe.setdefault(name, {})
            for key, value in change.items():
                if value is None:
                    table.pop(key, None)
                else:
                    table[key] = value
    path.write_text(tomli_w.dumps(recipe), encoding="utf-8")
    return path


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` need a CUDA GPU: skipped without one (tools/gpu-check.sh runs them)."""
    marked = [item for item in items if item.get_closest_marker("cuda")]
    if not marked:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (tools/gpu-check.sh runs these on one)")
    for item in marked:
        item.add_marker(skip)
