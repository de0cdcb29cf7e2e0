"""The pix2pix datasets (aligned, paired_folders, single) and the facades download/verification."""

from __future__ import annotations

import inspect
import io
import struct
import tarfile
import time
import typing
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from i2i.assembly.host import get_host
from i2i.data.fetch import fetch_dataset, safe_extract, verify_facades
from i2i.errors import DataError

REPO = Path(__file__).resolve().parents[1]
MINI = REPO / "samples" / "facades_mini"
SHARED_FACADES = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "facades"


def build(name: str, **params):
    return get_host().registry("dataset").build(name, **params)


def rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def to_unit(arr: np.ndarray) -> torch.Tensor:
    """HxWxC uint8 → CxHxW float in [-1, 1], as the datasets produce it."""
    return torch.from_numpy(np.array(arr)).permute(2, 0, 1).float() / 127.5 - 1


def close(x: torch.Tensor, y: torch.Tensor) -> bool:
    return torch.allclose(x, y, atol=1e-6)


def save_pair(path: Path, left: np.ndarray, right: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate([left, right], axis=1)).save(path)


def write_png16(path: Path, arr: np.ndarray) -> None:
    """A 16-bit PNG (greyscale or RGB) written by hand: Pillow cannot write 16-bit colour."""
    arr = arr if arr.ndim == 3 else arr[..., None]
    h, w, c = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", w, h, 16, {1: 0, 3: 2}[c], 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


# -- registration ----------------------------------------------------------------------------------
def test_factories_are_registered_with_explicit_typed_parameters():
    registry = get_host().registry("dataset")
    assert {"aligned", "paired_folders", "single"} <= set(registry.names())
    for name in ("aligned", "paired_folders", "single"):
        factory = registry.get(name).factory
        hints = typing.get_type_hints(factory)  # recipes are validated against these
        params = inspect.signature(factory).parameters
        assert "split" in params and "root" in params
        assert all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params.values())  # no **kwargs
        assert set(params) <= set(hints)


# -- aligned on the real facades sample ------------------------------------------------------------
def test_aligned_pairs_halves_and_direction_on_real_facades():
    photo_label = np.asarray(Image.open(MINI / "test" / "1.jpg").convert("RGB"))
    left, right = to_unit(photo_label[:, :256]), to_unit(photo_label[:, 256:])
    a2b = build("aligned", split="test", root=str(MINI), preprocess="none")
    b2a = build("aligned", split="test", root=str(MINI), preprocess="none", direction="BtoA")
    assert len(a2b) == 10 and (a2b.input_nc, a2b.output_nc) == (3, 3)
    item = a2b[0]
    assert item["name"] == "1" and item["A"].shape == (3, 256, 256)
    assert close(item["A"], left) and close(item["B"], right)
    swapped = b2a[0]
    assert close(swapped["A"], right) and close(swapped["B"], left)
    assert [b2a[i]["name"] for i in range(3)] == ["1", "2", "3"]  # natural order


def test_aligned_default_pipeline_on_real_facades_and_dataloader():
    ds = build("aligned", split="train", root=str(MINI), direction="BtoA", max_items=4)
    assert len(ds) == 4
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))
    assert batch["A"].shape == (2, 3, 256, 256) and batch["B"].shape == (2, 3, 256, 256)
    assert type(batch["A"]) is torch.Tensor and batch["A"].dtype == torch.float32
    assert batch["A"].min() >= -1 and batch["A"].max() <= 1
    assert batch["name"] == ["1", "2"]


# -- joint jitter and determinism ------------------------------------------------------------------
def test_random_crop_and_flip_are_shared_by_input_and_target(tmp_path):
    half = rgb(32, 32)
    save_pair(tmp_path / "train" / "0.png", half, half)
    ds = build(
        "aligned",
        split="train",
        root=str(tmp_path),
        load_size=40,
        crop_size=32,
    )
    seen = []
    for seed in range(12):
        torch.manual_seed(seed)
        item = ds[0]
        assert item["A"].shape == (3, 32, 32)
        assert torch.equal(item["A"], item["B"])
        seen.append(item["A"])
    distinct = {tuple(x.flatten()[:64].tolist()) for x in seen}
    assert len(distinct) > 3  # the jitter really varies
    torch.manual_seed(5)
    again = ds[0]["A"]
    assert torch.equal(again, seen[5])  # and is reproducible from torch's seed


def test_paired_folders_share_jitter_too(tmp_path):
    img = rgb(36, 36, seed=3)
    for side in "AB":
        (tmp_path / side).mkdir()
        Image.fromarray(img).save(tmp_path / side / "x.png")
    ds = build("paired_folders", split="train", root=str(tmp_path), load_size=36, crop_size=24)
    for seed in range(6):
        torch.manual_seed(seed)
        item = ds[0]
        assert torch.equal(item["A"], item["B"])


@pytest.mark.parametrize("preprocess", ["resize_and_crop", "crop", "scale_width_and_crop"])
def test_non_train_splits_are_deterministic(tmp_path, preprocess):
    left, right = rgb(40, 40, 1), rgb(40, 40, 2)
    save_pair(tmp_path / "test" / "0.png", left, right)
    ds = build(
        "aligned",
        split="test",
        root=str(tmp_path),
        preprocess=preprocess,
        load_size=48,
        crop_size=32,
    )
    outs = []
    for seed in range(4):
        torch.manual_seed(seed)
        outs.append(ds[0])
    for o in outs[1:]:
        assert torch.equal(o["A"], outs[0]["A"]) and torch.equal(o["B"], outs[0]["B"])
    if preprocess == "crop":  # the centre crop, unflipped
        assert close(outs[0]["A"], to_unit(left[4:36, 4:36]))


def test_test_split_resize_and_crop_resizes_straight_to_crop_size(tmp_path):
    save_pair(tmp_path / "val" / "0.png", rgb(64, 64), rgb(64, 64, 1))
    item = build("aligned", split="val", root=str(tmp_path), load_size=40, crop_size=32)[0]
    assert item["A"].shape == (3, 32, 32)


@pytest.mark.parametrize(
    "preprocess, train_shape, test_shape",
    [
        ("resize_and_crop", (32, 32), (32, 32)),
        ("crop", (32, 32), (32, 32)),
        ("scale_width", (27, 40), (27, 40)),  # 40 * 34 // 50 = 27
        ("scale_width_and_crop", (32, 32), (32, 32)),  # height raised to the crop size
        ("none", (32, 48), (32, 48)),  # 34x50 rounded to multiples of 4
    ],
)
def test_preprocess_output_sizes(tmp_path, preprocess, train_shape, test_shape):
    for split in ("train", "test"):
        save_pair(tmp_path / split / "0.png", rgb(34, 50), rgb(34, 50, 1))
    for split, shape in (("train", train_shape), ("test", test_shape)):
        ds = build(
            "aligned",
            split=split,
            root=str(tmp_path),
            preprocess=preprocess,
            load_size=40,
            crop_size=32,
        )
        item = ds[0]
        assert item["A"].shape == (3, *shape) and item["B"].shape == (3, *shape)


# -- paired_folders and single ---------------------------------------------------------------------
def test_paired_folders_matches_stems_and_honours_direction(tmp_path):
    a_imgs = {"x": rgb(32, 32, 1), "y": rgb(32, 32, 2)}
    b_imgs = {"x": rgb(32, 32, 3), "y": rgb(32, 32, 4)}
    for side, imgs in (("A", a_imgs), ("B", b_imgs)):
        (tmp_path / "train" / side).mkdir(parents=True)
        for stem, arr in imgs.items():
            Image.fromarray(arr).save(tmp_path / "train" / side / f"{stem}.png")
    ds = build("paired_folders", split="train", root=str(tmp_path), preprocess="none", flip=False)
    assert len(ds) == 2
    item = ds[1]
    assert item["name"] == "y"
    assert close(item["A"], to_unit(a_imgs["y"]))
    assert close(item["B"], to_unit(b_imgs["y"]))
    swapped = build(
        "paired_folders",
        split="train",
        root=str(tmp_path),
        preprocess="none",
        flip=False,
        direction="BtoA",
    )[1]
    assert close(swapped["A"], to_unit(b_imgs["y"]))


def test_paired_folders_falls_back_to_root_a_and_b(tmp_path):
    for side in "AB":
        (tmp_path / side).mkdir()
        Image.fromarray(rgb(16, 16)).save(tmp_path / side / "only.png")
    ds = build("paired_folders", split="test", root=str(tmp_path), preprocess="none")
    assert len(ds) == 1 and ds[0]["name"] == "only"


def test_paired_folders_mismatch_lists_unmatched_names(tmp_path):
    for side, stems in (("A", ["1", "2", "extra_a"]), ("B", ["1", "2", "extra_b"])):
        (tmp_path / side).mkdir()
        for stem in stems:
            Image.fromarray(rgb(8, 8)).save(tmp_path / side / f"{stem}.png")
    with pytest.raises(DataError) as info:
        build("paired_folders", split="train", root=str(tmp_path))
    message = str(info.value)
    assert "extra_a" in message and "extra_b" in message and "partner" in message


def test_single_reads_inputs_only_with_folder_fallback(tmp_path):
    Image.fromarray(rgb(20, 28)).save(tmp_path / "a.jpg")
    Image.fromarray(rgb(20, 28)).save(tmp_path / "b.png")
    ds = build("single", split="test", root=str(tmp_path), preprocess="none")
    assert len(ds) == 2 and ds.input_nc == 3
    item = ds[0]
    assert set(item) == {"A", "name"} and item["name"] == "a"
    assert item["A"].shape == (3, 20, 28)
    (tmp_path / "test").mkdir()
    Image.fromarray(rgb(16, 16)).save(tmp_path / "test" / "c.png")
    ds = build("single", split="test", root=str(tmp_path), load_size=16, crop_size=12)
    assert len(ds) == 1 and ds[0]["A"].shape == (3, 12, 12)


# -- channels and bit depths -----------------------------------------------------------------------
def test_greyscale_channels(tmp_path):
    save_pair(tmp_path / "train" / "0.png", rgb(16, 16), rgb(16, 16, 1))
    ds = build(
        "aligned",
        split="train",
        root=str(tmp_path),
        input_nc=1,
        output_nc=3,
        preprocess="none",
    )
    item = ds[0]
    assert (ds.input_nc, ds.output_nc) == (1, 3)
    assert item["A"].shape == (1, 16, 16) and item["B"].shape == (3, 16, 16)
    Image.fromarray(rgb(16, 16)[..., 0]).save(tmp_path / "grey.png")  # L → RGB replicates
    out = build("single", split="x", root=str(tmp_path), preprocess="none")[0]["A"]
    assert out.shape == (3, 16, 16) and torch.equal(out[0], out[2])


def test_16bit_png_keeps_values_above_255(tmp_path):
    arr = np.zeros((8, 8), dtype=np.uint16)
    arr[:, :4] = 65535
    arr[:, 4:] = 32768
    Image.fromarray(arr).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    a = build("single", split="x", root=str(tmp_path), preprocess="none", input_nc=1)[0]["A"]
    assert a.shape == (1, 8, 8)
    assert torch.allclose(a[0, :, :4], torch.ones(8, 4))
    assert torch.allclose(a[0, :, 4:], torch.zeros(8, 4), atol=1e-4)


def test_16bit_colour_png_is_not_truncated(tmp_path):
    arr = np.zeros((8, 8, 3), dtype=np.uint16)
    arr[..., 0], arr[..., 1], arr[..., 2] = 65535, 32768, 300
    write_png16(tmp_path / "rgb16.png", arr)
    a = build("single", split="x", root=str(tmp_path), preprocess="none")[0]["A"]
    expected = torch.tensor([65535, 32768, 300]) / 65535 * 2 - 1
    assert torch.allclose(a[:, 0, 0], expected.float(), atol=1e-5)


def test_multichannel_tiff(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    arr = np.zeros((16, 32, 4), dtype=np.uint16)
    arr[..., 3] = 65535
    (tmp_path / "train").mkdir()
    tifffile.imwrite(tmp_path / "train" / "0.tif", arr)
    ds = build(
        "aligned",
        split="train",
        root=str(tmp_path),
        input_nc=4,
        output_nc=4,
        crop_size=12,
        load_size=16,
    )
    item = ds[0]
    assert item["A"].shape == (4, 12, 12) and item["B"].shape == (4, 12, 12)
    assert torch.allclose(item["A"][3], torch.ones(12, 12))
    assert torch.allclose(item["A"][:3], -torch.ones(3, 12, 12))
    # Planar (CxHxW) TIFFs work too.
    tifffile.imwrite(
        tmp_path / "p.tif", np.moveaxis(arr, -1, 0), photometric="minisblack", planarconfig="separate"
    )
    single = build("single", split="x", root=str(tmp_path), preprocess="none", input_nc=4)
    assert single[0]["A"].shape == (4, 16, 32)


def test_channel_count_that_cannot_be_converted(tmp_path):
    Image.fromarray(rgb(8, 8)).save(tmp_path / "rgb.png")
    ds = build("single", split="x", root=str(tmp_path), preprocess="none", input_nc=4)
    with pytest.raises(DataError, match=r"rgb\.png has 3 channels.*input_nc is 4"):
        ds[0]


# -- errors ----------------------------------------------------------------------------------------
def test_corrupt_image_names_the_file(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "broken.jpg").write_bytes(b"not a jpeg at all" * 10)
    good = (MINI / "train" / "1.jpg").read_bytes()
    (tmp_path / "train" / "cut.jpg").write_bytes(good[: len(good) // 3])
    ds = build("aligned", split="train", root=str(tmp_path))
    for i, name in enumerate(["broken.jpg", "cut.jpg"]):
        with pytest.raises(DataError, match=name):
            ds[i]


def test_missing_root_and_split_folders(tmp_path):
    with pytest.raises(DataError) as info:
        build("aligned", split="train", root=str(tmp_path / "nowhere"))
    message = str(info.value)
    assert "nowhere" in message and "i2i data fetch facades" in message
    assert "--set data.root=" in message
    (tmp_path / "test").mkdir()
    with pytest.raises(DataError, match=r"no 'train' folder.*test"):
        build("aligned", split="train", root=str(tmp_path))
    with pytest.raises(DataError, match="holds no images"):
        build("aligned", split="test", root=str(tmp_path))
    with pytest.raises(DataError, match="B not found"):
        (tmp_path / "A").mkdir()
        build("paired_folders", split="train", root=str(tmp_path))


def test_odd_width_and_bad_sizes(tmp_path):
    (tmp_path / "train").mkdir()
    Image.fromarray(rgb(8, 15)).save(tmp_path / "train" / "odd.png")
    ds = build("aligned", split="train", root=str(tmp_path), preprocess="none")
    with pytest.raises(DataError, match=r"odd\.png is 15 pixels wide"):
        ds[0]
    with pytest.raises(DataError, match="crop_size"):
        build("aligned", split="train", root=str(tmp_path), load_size=64, crop_size=128)
    (tmp_path / "small" / "train").mkdir(parents=True)
    save_pair(tmp_path / "small" / "train" / "0.png", rgb(8, 8), rgb(8, 8))
    small = build("aligned", split="train", root=str(tmp_path / "small"), preprocess="crop")
    with pytest.raises(DataError, match="smaller than crop_size"):
        small[0]


# -- facades download and verification -------------------------------------------------------------
@pytest.mark.skipif(not SHARED_FACADES.is_dir(), reason="shared facades copy not present")
def test_verify_facades_on_the_shared_copy():
    summary = verify_facades(SHARED_FACADES)
    assert summary["splits"]["train"] == 400 and summary["splits"]["test"] == 106
    assert summary["image_size"] == (512, 256)


def test_verify_facades_reports_wrong_counts(tmp_path):
    for split, n in (("train", 2), ("test", 1)):
        (tmp_path / split).mkdir()
        for i in range(n):
            Image.new("RGB", (512, 256)).save(tmp_path / split / f"{i}.jpg")
    Image.new("RGB", (256, 256)).save(tmp_path / "test" / "small.jpg")
    with pytest.raises(DataError) as info:
        verify_facades(tmp_path)
    message = str(info.value)
    assert "'train' holds 2 images, expected 400" in message
    assert "small.jpg is 256x256" in message


def test_fetch_fails_fast_when_offline(tmp_path):
    start = time.monotonic()
    with pytest.raises(DataError) as info:
        fetch_dataset(
            "facades",
            tmp_path / "facades",
            url="http://127.0.0.1:9/facades.tar.gz",
            timeout=3,
            progress=False,
        )
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert "127.0.0.1:9" in message and "--set data.root=" in message and "train/" in message
    assert not (tmp_path / "facades").exists()
    assert list(tmp_path.iterdir()) == []  # no staging left behind


def test_fetch_unknown_dataset_suggests(tmp_path):
    with pytest.raises(DataError, match="Did you mean 'facades'"):
        fetch_dataset("facade", tmp_path / "x")


def _tar_with(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_safe_extract_rejects_escaping_members(tmp_path):
    evil = _tar_with(tmp_path / "evil.tar.gz", {"facades/ok.txt": b"ok", "../evil": b"x"})
    with pytest.raises(DataError, match=r"\.\./evil"):
        safe_extract(evil, tmp_path / "out")
    assert not (tmp_path / "evil").exists() and not (tmp_path / "out" / "facades").exists()
    absolute = _tar_with(tmp_path / "abs.tar.gz", {"/tmp/i2i-evil": b"x"})
    with pytest.raises(DataError, match="outside the destination"):
        safe_extract(absolute, tmp_path / "out")
    # The same check guards fetch_dataset (a file:// URL stands in for the server).
    with pytest.raises(DataError, match=r"\.\./evil"):
        fetch_dataset("facades", tmp_path / "f", url=evil.as_uri(), progress=False)


def test_fetch_from_a_local_mirror_extracts_and_verifies(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (512, 256), (90, 120, 200)).save(buf, format="JPEG")
    jpeg = buf.getvalue()
    members = {f"facades/train/{i}.jpg": jpeg for i in range(1, 401)}
    members.update({f"facades/test/{i}.jpg": jpeg for i in range(1, 107)})
    archive = _tar_with(tmp_path / "facades.tar.gz", members)
    dest = tmp_path / "data" / "facades"
    assert fetch_dataset("facades", dest, url=archive.as_uri(), progress=False) == dest
    assert verify_facades(dest)["total"] == 506
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["facades"]
    # A verified copy is not downloaded again (this URL would fail).
    assert fetch_dataset("facades", dest, url="http://127.0.0.1:9/x.tar.gz") == dest
    ds = build("aligned", split="test", root=str(dest), direction="BtoA")
    assert len(ds) == 106
