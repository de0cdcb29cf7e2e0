"""Fixtures shared by the test modules."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from i2i.plugins import PluginHost, set_host

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
