"""The unpaired building blocks: the unaligned dataset, the unpaired view of aligned files, the image
pool, PatchNCE, and `i2i data fetch` for the pix2pix and CycleGAN archives (served on 127.0.0.1)."""

from __future__ import annotations

import functools
import http.server
import io
import json
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import toy_recipe
from i2i_pix2pix.generators import resnet, resnet_9blocks
from i2i_unpaired.patchnce import (
    PatchSampleMLP,
    encoder_channels,
    multilayer_patch_nce,
    nce_layers,
    patch_nce_loss,
)
from i2i_unpaired.pool import ImagePool
from PIL import Image
from typer.testing import CliRunner

from i2i.assembly.host import get_host
from i2i.cli import app
from i2i.data.fetch import DATASETS, fetch_dataset, safe_extract, verify_layout
from i2i.data.order import SeededItems
from i2i.data.scan import check_split, verify_splits
from i2i.errors import DataError, I2IError

REPO = Path(__file__).resolve().parents[1]
MINI = REPO / "samples" / "facades_mini"


def build(name: str, **params):
    return get_host().registry("dataset").build(name, **params)


def solid(path: Path, value: int, size: tuple[int, int] = (8, 8)) -> Path:
    """An RGB image of one grey level: its value identifies the file after any crop or flip."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value, value)).save(path)
    return path


def level(t: torch.Tensor) -> int:
    """The grey level (0..255) of a solid image in [-1, 1]."""
    return round(float((t.mean() + 1) * 127.5))


@pytest.fixture
def two_folders(tmp_path: Path) -> Path:
    """trainA: 3 images (levels 10, 20, 30); trainB: 5 (100..140); testA: 2; testB: 3."""
    for i, v in enumerate((10, 20, 30)):
        solid(tmp_path / "trainA" / f"{i}.png", v)
    for i, v in enumerate((100, 110, 120, 130, 140)):
        solid(tmp_path / "trainB" / f"{i}.png", v)
    for i, v in enumerate((40, 50)):
        solid(tmp_path / "testA" / f"{i}.png", v)
    for i, v in enumerate((150, 160, 170)):
        solid(tmp_path / "testB" / f"{i}.png", v)
    return tmp_path


OPTS = {"preprocess": "none", "flip": False}


# -- unaligned ---------------------------------------------------------------------------------------
def test_unaligned_cycles_a_and_draws_b(two_folders):
    ds = build("unaligned", split="train", root=str(two_folders), **OPTS)
    assert len(ds) == 5 and ds.paired is False and (ds.input_nc, ds.output_nc) == (3, 3)
    seeded = SeededItems(ds, seed=7)
    partners = set()
    for epoch in range(4):
        for i in range(len(ds)):
            item = seeded[(epoch, i)]
            assert set(item) == {"A", "B", "name"} and item["A"].shape == (3, 8, 8)
            assert level(item["A"]) == (10, 20, 30)[i % 3] and item["name"] == str(i % 3)
            assert level(item["B"]) in (100, 110, 120, 130, 140)
            partners.add((i, level(item["B"])))
    assert len(partners) > 5  # B is drawn, not fixed per index
    # Replayable: the same (seed, epoch, index) gives the same partner, whatever came before.
    again = SeededItems(build("unaligned", split="train", root=str(two_folders), **OPTS), seed=7)
    for key in [(3, 4), (0, 1), (2, 2)]:
        assert torch.equal(seeded[key]["B"], again[key]["B"])


def test_unaligned_serial_and_test_split_are_in_order(two_folders):
    ds = build("unaligned", split="train", root=str(two_folders), serial=True, **OPTS)
    assert [level(ds[i]["B"]) for i in range(5)] == [100, 110, 120, 130, 140]
    assert [level(ds[i]["A"]) for i in range(5)] == [10, 20, 30, 10, 20]
    test = build("unaligned", split="test", root=str(two_folders), **OPTS)
    assert len(test) == 2  # every test input once, so output names do not repeat
    assert [(level(test[i]["A"]), level(test[i]["B"])) for i in range(2)] == [(40, 150), (50, 160)]
    swapped = build("unaligned", split="test", root=str(two_folders), direction="BtoA", **OPTS)
    assert len(swapped) == 3 and level(swapped[0]["A"]) == 150


def test_unaligned_jitters_each_side_on_its_own(tmp_path):
    ramp = np.tile(np.arange(0, 240, 15, dtype=np.uint8), (16, 1))
    for side in "AB":
        (tmp_path / f"train{side}").mkdir()
        Image.fromarray(np.stack([ramp] * 3, axis=-1)).save(tmp_path / f"train{side}" / "x.png")
    ds = build("unaligned", split="train", root=str(tmp_path), preprocess="crop", crop_size=8, load_size=16)
    seeded = SeededItems(ds, seed=1)
    differ = [not torch.equal(seeded[(e, 0)]["A"], seeded[(e, 0)]["B"]) for e in range(8)]
    assert any(differ)  # a shared geometry would give A == B every time


def test_unaligned_names_the_missing_folder(tmp_path):
    solid(tmp_path / "trainA" / "1.png", 10)
    with pytest.raises(DataError, match="'trainB'") as info:
        build("unaligned", split="train", root=str(tmp_path))
    assert str(tmp_path) in str(info.value) and "trainA" in str(info.value)
    solid(tmp_path / "aligned" / "train" / "1.png", 10, (16, 8))
    with pytest.raises(DataError, match="unpaired_aligned"):
        build("unaligned", split="train", root=str(tmp_path / "aligned"))
    with pytest.raises(DataError, match="does not exist"):
        build("unaligned", split="train", root=str(tmp_path / "nowhere"))


def test_unaligned_scan_and_skip_bad(two_folders):
    (two_folders / "trainB" / "3.png").write_bytes(b"not an image")
    ds = build("unaligned", split="train", root=str(two_folders), **OPTS)
    result = ds.scan()
    assert result.items == 8 and [(p.index, p.path.name) for p in result.bad] == [(6, "3.png")]
    with pytest.raises(DataError, match="3.png"):
        check_split(ds, "the 'train' split", skip_bad=False)
    kept, notes = check_split(ds, "the 'train' split", skip_bad=True)
    assert len(kept.files_b) == 4 and "left out 1" in notes[-1]
    for i in range(5):
        (two_folders / "trainB" / f"{i}.png").write_bytes(b"")
    with pytest.raises(DataError, match="trainB"):
        check_split(build("unaligned", split="train", root=str(two_folders)), "train", skip_bad=True)
    reports = verify_splits(lambda s: build("unaligned", split=s, root=str(two_folders)), ["train", "test"])
    assert [len(r.bad) for r in reports] == [5, 0] and reports[1].ok


def test_data_verify_takes_an_unaligned_recipe(two_folders, tmp_path):
    recipe = toy_recipe(
        tmp_path / "r.toml",
        tmp_path / "runs",
        data={
            "name": "unaligned",
            "root": str(two_folders),
            "preprocess": "none",
            "max_items": None,
            "direction": "AtoB",
        },
    )
    result = CliRunner().invoke(app, ["data", "verify", str(recipe), "--json"])
    assert result.exit_code == 0, result.output
    splits = json.loads(result.output)["splits"]
    assert [(s["split"], s["items"], s["sizes"]) for s in splits] == [
        ("train", 5, {"8x8": 8}),
        ("test", 2, {"8x8": 5}),
    ]


# -- the unpaired view of aligned files --------------------------------------------------------------
VIEW = {"root": str(MINI), "preprocess": "none", "flip": False, "max_items": 4}


def test_unpaired_aligned_trains_on_halves_of_different_files():
    view = build("unpaired_aligned", split="train", **VIEW)
    pairs = build("aligned", split="train", **VIEW)
    assert len(view) == 4 and view.paired is False
    pairs = [pairs[j] for j in range(4)]
    halves_b = [p["B"] for p in pairs]
    seeded = SeededItems(view, seed=2)
    partners = set()
    for epoch in range(2):
        for i in range(4):
            item = seeded[(epoch, i)]
            assert torch.equal(item["A"], pairs[i]["A"]) and item["name"] == pairs[i]["name"]
            [j] = [j for j, b in enumerate(halves_b) if torch.equal(item["B"], b)]
            assert j != i
            partners.add((i, j))
    assert len(partners) > 4
    assert torch.equal(seeded[(1, 3)]["B"], SeededItems(view, seed=2)[(1, 3)]["B"])


def test_unpaired_aligned_keeps_real_pairs_for_evaluation():
    view = build("unpaired_aligned", split="test", **{**VIEW, "preprocess": "resize_and_crop"})
    pairs = build("aligned", split="test", **{**VIEW, "preprocess": "resize_and_crop"})
    assert view.paired is True and len(view) == len(pairs)
    for i in range(len(view)):
        assert torch.equal(view[i]["A"], pairs[i]["A"]) and torch.equal(view[i]["B"], pairs[i]["B"])
    assert view.scan().items == len(pairs)


def test_unpaired_aligned_needs_two_files_to_train():
    with pytest.raises(DataError, match="at least 2 files"):
        build("unpaired_aligned", split="train", **{**VIEW, "max_items": 1})


# -- the image pool ----------------------------------------------------------------------------------
def batch(*values: float) -> torch.Tensor:
    return torch.tensor(values).view(-1, 1, 1, 1).expand(-1, 3, 2, 2).clone()


def test_pool_fills_then_returns_old_fakes_half_the_time():
    torch.manual_seed(0)
    pool = ImagePool(size=4)
    assert torch.equal(pool.query(batch(1, 2, 3)), batch(1, 2, 3)) and len(pool) == 3
    out = pool.query(batch(4, 5))  # 4 fills the pool, 5 may be swapped
    assert out[0, 0, 0, 0] == 4 and len(pool) == 4
    old = 0
    for step in range(200):
        new = 100.0 + step
        got = float(pool.query(batch(new))[0, 0, 0, 0])
        old += got != new
        assert len(pool) == 4
    assert 70 < old < 130  # about half
    x = torch.ones(2, 3, 2, 2, requires_grad=True) * 2
    assert not ImagePool(0).query(x).requires_grad and not pool.query(x).requires_grad
    with pytest.raises(I2IError, match="pool size"):
        ImagePool(-1)


def test_pool_state_dict_round_trip(tmp_path):
    torch.manual_seed(1)
    pool = ImagePool(size=3)
    for step in range(6):
        pool.query(batch(step, step + 0.5))
    path = tmp_path / "pool.pt"
    torch.save({"pool": pool.state_dict(), "rng": torch.get_rng_state()}, path)
    expected = [pool.query(batch(50 + k, 60 + k)) for k in range(5)]

    state = torch.load(path, weights_only=True)
    resumed = ImagePool(size=3)
    resumed.load_state_dict(state["pool"])
    torch.set_rng_state(state["rng"])
    assert all(torch.equal(resumed.query(batch(50 + k, 60 + k)), e) for k, e in enumerate(expected))
    with pytest.raises(I2IError, match="same pool size"):
        ImagePool(size=50).load_state_dict(state["pool"])
    with pytest.raises(I2IError, match="'size' and 'images'"):
        ImagePool().load_state_dict({})


# -- PatchNCE ----------------------------------------------------------------------------------------
def test_encode_takes_cuts_layers_and_changes_nothing():
    torch.manual_seed(0)
    G = resnet_9blocks(3, 3, ngf=4, norm="batch")
    before = {k: v.clone() for k, v in G.state_dict().items()}
    layers = nce_layers(G)
    assert layers == [0, 4, 7, 10, 14]
    G.eval()
    x = torch.randn(2, 3, 16, 16)
    out = G(x)
    feats = G.encode(x, [*layers, len(G.model) - 1])
    assert torch.equal(feats[-1], out)
    assert [f.shape[1:] for f in feats[:-1]] == [(3, 22, 22), (8, 8, 8), (16, 4, 4), (16, 4, 4), (16, 4, 4)]
    G.train()
    assert encoder_channels(G, layers, 3) == [3, 8, 16, 16, 16] and G.training
    assert all(torch.equal(v, before[k]) for k, v in G.state_dict().items())
    assert nce_layers(resnet(3, 3, n_blocks=2, ngf=4)) == [0, 4, 7, 10, 11]
    with pytest.raises(I2IError, match="layer indices"):
        G.encode(x, [99])


def test_patch_sample_mlp_samples_the_same_locations():
    torch.manual_seed(0)
    head = PatchSampleMLP(num_patches=5, units=6)
    maps = [torch.randn(2, 3, 4, 4), torch.randn(2, 8, 2, 2)]
    feats, ids = head(maps)
    assert [f.shape for f in feats] == [(2, 5, 6), (2, 4, 6)]  # the 2x2 map has only 4 locations
    assert [len(i) for i in ids] == [5, 4] and head.channels == [3, 8]
    assert torch.allclose(feats[0].norm(dim=-1), torch.ones(2, 5), atol=1e-5)
    again, ids2 = head(maps, ids)
    assert all(torch.equal(a, b) for a, b in zip(feats, again, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(ids, ids2, strict=True))
    raw, _ = PatchSampleMLP(num_patches=3, mlp=False)([maps[0]])
    flat = maps[0].permute(0, 2, 3, 1).reshape(2, 16, 3)
    assert raw[0].shape == (2, 3, 3) and torch.allclose(raw[0].norm(dim=-1), torch.ones(2, 3), atol=1e-5)
    assert any(torch.allclose(raw[0][0, 0], row / row.norm(), atol=1e-5) for row in flat[0])
    with pytest.raises(I2IError, match="channels"):
        head([torch.randn(1, 4, 4, 4), torch.randn(1, 8, 2, 2)])


def test_patch_nce_prefers_matching_patches_and_trains_the_query():
    torch.manual_seed(0)
    key = torch.nn.functional.normalize(torch.randn(2, 16, 8), dim=-1)
    query = key.clone().requires_grad_(True)
    matched = patch_nce_loss(query, key)
    shuffled = patch_nce_loss(query[:, torch.randperm(16)], key)
    assert matched < shuffled
    matched.backward()
    assert query.grad is not None and query.grad.abs().sum() > 0
    k = key.clone().requires_grad_(True)
    patch_nce_loss(query, k).backward()
    assert k.grad is None  # the key is detached, as in CUT
    assert patch_nce_loss(key[0], key[0]) < patch_nce_loss(key[0], key[0].flip(0))  # (P, C) works
    with pytest.raises(I2IError, match="same shape"):
        patch_nce_loss(key, key[:, :4])


def test_multilayer_patch_nce_trains_g_and_the_head():
    torch.manual_seed(0)
    G = resnet_9blocks(3, 3, ngf=4, norm="instance")
    layers = nce_layers(G)
    head = PatchSampleMLP(num_patches=8, units=16, channels=encoder_channels(G, layers, 3))
    x = torch.randn(1, 3, 16, 16)
    loss = multilayer_patch_nce(head, G.encode(G(x), layers), G.encode(x, layers))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in head.parameters())
    assert G.model[1].weight.grad is not None


# -- i2i data fetch ----------------------------------------------------------------------------------
def jpeg(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (90, 120, 200)).save(buf, format="JPEG")
    return buf.getvalue()


def make_zip(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o120777 << 16  # a symbolic link
            zf.writestr(info, target)
    return path


def make_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def unaligned_members(folder: str) -> dict[str, bytes]:
    image = jpeg((16, 16))
    return {
        f"{folder}/{split}/{i}.jpg": image
        for split in ("trainA", "trainB", "testA", "testB")
        for i in range(3)
    }


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A web server on 127.0.0.1 serving a folder: (base URL, folder)."""
    root = tmp_path / "www"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def test_fetch_knows_both_authors_datasets():
    pix2pix = {"facades", "maps", "edges2shoes", "edges2handbags", "night2day"}
    cyclegan = {
        "horse2zebra", "apple2orange", "summer2winter_yosemite", "monet2photo", "cezanne2photo",
        "ukiyoe2photo", "vangogh2photo", "iphone2dslr_flower", "cyclegan/maps", "cyclegan/facades",
    }  # fmt: skip
    assert set(DATASETS) == pix2pix | cyclegan
    for name in pix2pix:
        assert DATASETS[name].url == f"http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/{name}.tar.gz"
    for name in cyclegan:
        stem = name.split("/")[-1]
        assert DATASETS[name].url == f"https://efrosgans.eecs.berkeley.edu/cyclegan/datasets/{stem}.zip"
        assert DATASETS[name].source == "cyclegan"


def test_fetch_a_zip_and_a_tar_from_a_local_server(server, tmp_path):
    base, www = server
    make_zip(www / "horse2zebra.zip", unaligned_members("horse2zebra"))
    dest = tmp_path / "data" / "horse2zebra"
    assert fetch_dataset("horse2zebra", dest, url=f"{base}/horse2zebra.zip", progress=False) == dest
    assert sorted(p.name for p in dest.iterdir()) == ["testA", "testB", "trainA", "trainB"]
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["horse2zebra"]  # no staging left
    assert len(build("unaligned", split="train", root=str(dest), load_size=16, crop_size=8)) == 3

    make_zip(www / "maps.zip", unaligned_members("maps"))  # CycleGAN's maps: cyclegan/maps
    dest = tmp_path / "data" / "cyclegan" / "maps"
    assert fetch_dataset("cyclegan/maps", dest, url=f"{base}/maps.zip", progress=False) == dest
    assert verify_layout(dest, DATASETS["cyclegan/maps"])["total"] == 12

    pair = jpeg((32, 16))
    make_tar(www / "maps.tar.gz", {f"maps/{s}/{i}.jpg": pair for s in ("train", "val") for i in range(2)})
    dest = tmp_path / "data" / "maps"
    assert fetch_dataset("maps", dest, url=f"{base}/maps.tar.gz", progress=False) == dest
    assert verify_layout(dest, DATASETS["maps"])["splits"] == {"train": 2, "val": 2}
    # A verified copy is not downloaded again (this address answers 404).
    assert fetch_dataset("maps", dest, url=f"{base}/gone.tar.gz", progress=False) == dest


def test_fetch_refuses_zip_slip_and_links(server, tmp_path):
    base, www = server
    members = unaligned_members("horse2zebra")
    make_zip(www / "slip.zip", {**members, "../../evil.txt": b"x"})
    with pytest.raises(DataError, match=r"\.\./\.\./evil\.txt.*outside the destination"):
        fetch_dataset("horse2zebra", tmp_path / "h", url=f"{base}/slip.zip", progress=False)
    assert not list(tmp_path.rglob("evil.txt")) and not (tmp_path / "h").exists()
    absolute = make_zip(tmp_path / "abs.zip", {"/tmp/i2i-evil.txt": b"x"})
    with pytest.raises(DataError, match="outside the destination"):
        safe_extract(absolute, tmp_path / "out")
    link = make_zip(tmp_path / "link.zip", {"a/b.txt": b"x"}, links={"a/c": "/etc/passwd"})
    with pytest.raises(DataError, match="is a link"):
        safe_extract(link, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    make_zip(www / "incomplete.zip", {"horse2zebra/trainA/1.jpg": jpeg((8, 8))})
    with pytest.raises(DataError, match="'trainB' folder is missing") as info:
        fetch_dataset("horse2zebra", tmp_path / "h", url=f"{base}/incomplete.zip", progress=False)
    assert "ROOT/trainA/" in str(info.value) and not (tmp_path / "h").exists()


def test_fetch_offline_unknown_names_and_cityscapes(tmp_path):
    start = time.monotonic()
    with pytest.raises(DataError) as info:
        fetch_dataset(
            "horse2zebra", tmp_path / "h", url="http://127.0.0.1:9/h.zip", timeout=3, progress=False
        )
    assert time.monotonic() - start < 5
    assert "127.0.0.1:9" in str(info.value) and "trainA" in str(info.value) and not list(tmp_path.iterdir())
    with pytest.raises(DataError, match="Did you mean 'cyclegan/maps'") as info:
        fetch_dataset("cyclegan_maps", tmp_path / "x")
    assert "plain 'maps' and 'facades' are pix2pix's" in str(info.value)
    with pytest.raises(DataError) as info:
        fetch_dataset("cityscapes", tmp_path / "c")
    message = str(info.value)
    assert "cityscapes-dataset.com" in message and "gtFine" in message and "leftImg8bit" in message
    assert "prepare_cityscapes_dataset.py" in message


def test_verify_layout_lists_every_problem(tmp_path):
    solid(tmp_path / "trainA" / "1.jpg", 10)
    (tmp_path / "trainB").mkdir()
    with pytest.raises(DataError) as info:
        verify_layout(tmp_path, DATASETS["horse2zebra"])
    message = str(info.value)
    assert "'testA' folder is missing" in message and "'trainB' holds no images" in message
    solid(tmp_path / "p" / "train" / "1.jpg", 10, (16, 16))
    with pytest.raises(DataError, match="not an A\\|B pair") as info:
        verify_layout(tmp_path / "p", DATASETS["edges2shoes"])
    assert "neither a 'val' nor a 'test'" in str(info.value)
