"""The oldest releases pyproject.toml admits: code paths that differ by torch version."""

from __future__ import annotations

from i2i.parallel.distributed import no_forward_buffer_sync


def test_ddp_buffer_options_follow_the_installed_torch():
    # torch with forward_sync_buffers keeps DDP's initial broadcast and only skips the per-forward one
    assert no_forward_buffer_sync(["module", "broadcast_buffers", "forward_sync_buffers"]) == {
        "forward_sync_buffers": False
    }
    # older torch: broadcast_buffers=False (replicate() then broadcasts the buffers once itself)
    assert no_forward_buffer_sync(["module", "broadcast_buffers"]) == {"broadcast_buffers": False}
    assert no_forward_buffer_sync() in ({"forward_sync_buffers": False}, {"broadcast_buffers": False})
