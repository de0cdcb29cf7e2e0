"""Metrics (l1, psnr, ssim, fid), image helpers and the run directory's HTML reports."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from i2i_pix2pix import metrics as m
from PIL import Image

from i2i.assembly.host import get_host
from i2i.data.imaging import GRID_HEADER, GRID_PAD, save_image, save_triplet_grid, to_pil, to_unit
from i2i.errors import I2IError
from i2i.reports.run_report import plot_loss_curves, read_log, write_gallery, write_index


@pytest.fixture
def pair():
    g = torch.Generator().manual_seed(0)
    target = torch.rand(3, 32, 32, generator=g) * 0.8
    return target + 0.1, target


# -- per-image metrics -----------------------------------------------------------------------------


def test_identical_images():
    x = torch.rand(3, 24, 24)
    assert m.l1().score(x, x) == 0.0
    assert m.psnr().score(x, x) == math.inf
    assert m.ssim().score(x, x) == pytest.approx(1.0)


def test_known_values_for_a_constant_offset(pair):
    output, target = pair
    assert m.l1().score(output, target) == pytest.approx(0.1)
    assert m.psnr().score(output, target) == pytest.approx(20.0, abs=1e-4)
    assert m.ssim().score(output, target) < 1.0


@pytest.mark.parametrize("shape", [(1, 20, 20), (20, 20), (1, 16, 16), (3, 16, 16), (3, 5, 9), (1, 2, 2)])
def test_gray_and_small_images(shape):
    g = torch.Generator().manual_seed(1)
    a = torch.rand(*shape, generator=g)
    b = (a + 0.05 * torch.randn(*shape, generator=g)).clamp(0, 1)
    value = m.ssim().score(b, a)
    assert 0.0 < value < 1.0
    assert m.ssim().score(a, a) == pytest.approx(1.0)
    assert m.psnr().score(b, a) > 15
    assert m.l1().score(b, a) > 0


def test_metrics_through_the_registry(pair):
    registry = get_host().registry("metric")
    assert {"l1", "psnr", "ssim", "fid"} <= set(registry.names())
    assert registry.get("psnr").description.startswith("Peak signal-to-noise")
    psnr = registry.build("psnr")
    output, target = pair
    values = psnr.update(torch.stack([output, target]), torch.stack([target, target]))
    assert values[0] == pytest.approx(20.0, abs=1e-4) and values[1] == math.inf
    assert psnr.compute() == math.inf
    l1 = registry.build("l1")
    assert l1.higher_is_better is False and l1.per_image is True
    l1.update(output[None], target[None])
    assert l1.compute() == pytest.approx(0.1)
    assert registry.build("ssim", win_size=3).win_size == 3
    with pytest.raises(I2IError):
        registry.build("ssim", win_size=4)


# -- FID -------------------------------------------------------------------------------------------


def test_fid_without_weights_explains_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv(m.FID_WEIGHTS_ENV, raising=False)
    with pytest.raises(I2IError) as info:
        get_host().registry("metric").build("fid")
    message = str(info.value)
    assert "inception_v3.pth" in message and m.FID_WEIGHTS_ENV in message
    assert "never downloads" in message
    missing = tmp_path / "nope.pth"
    with pytest.raises(I2IError, match="nope.pth"):
        m.fid(weights=str(missing))
    monkeypatch.setenv(m.FID_WEIGHTS_ENV, str(missing))
    with pytest.raises(I2IError, match="nope.pth"):
        m.fid()


def test_fid_rejects_a_foreign_state_dict(tmp_path):
    path = tmp_path / "foreign.pth"
    torch.save({"conv.weight": torch.zeros(1)}, path)
    with pytest.raises(I2IError, match="inception_v3"):
        m.fid(weights=str(path))


def test_frechet_distance_shortcut_matches_sqrtm():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 12)), rng.normal(size=(4, 12)) * 2 + 0.3
    fast = m.frechet_distance_from_features(a, b)
    slow = m.frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert fast == pytest.approx(slow, rel=1e-5)
    assert m.frechet_distance_from_features(a, a) == pytest.approx(0.0, abs=1e-9)
    assert math.isnan(m.frechet_distance_from_features(a[:1], b))


def test_fid_with_a_random_inception(tmp_path, monkeypatch):
    from torchvision.models import inception_v3

    torch.manual_seed(0)
    # aux_logits=True: the file holds AuxLogits.* keys, like the official weights do.
    net = inception_v3(weights=None, aux_logits=True, init_weights=False)
    path = tmp_path / "inception.pth"
    torch.save(net.state_dict(), path)
    monkeypatch.setenv(m.FID_WEIGHTS_ENV, str(path))
    monkeypatch.setattr(m.FID, "image_size", 75)  # Inception-v3's smallest input: 16x faster than 299
    fid = get_host().registry("metric").build("fid", batch_size=4)
    assert fid.per_image is False and fid.higher_is_better is False

    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 3, 16, 16, generator=g)
    y = torch.rand(2, 1, 16, 16, generator=g) * 0.5  # gray targets are repeated to 3 channels
    assert fid.update(x, x) == []
    same = fid.compute()
    fid.reset()
    fid.update(x[:1], y[:1])
    fid.update(x[1:], y[1:])
    different = fid.compute()
    assert different > 0
    assert same <= 1e-6 * different
    fid.reset()
    assert math.isnan(fid.compute())


# -- imaging ---------------------------------------------------------------------------------------


def test_to_unit_and_to_pil_channels(tmp_path):
    t = torch.tensor([-2.0, -1.0, 0.0, 1.0, 3.0])
    assert to_unit(t).tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]
    expected = {1: "L", 2: "L", 3: "RGB", 4: "RGB", 6: "RGB"}
    for channels, mode in expected.items():
        image = to_pil(torch.zeros(channels, 5, 7))
        assert image.mode == mode and image.size == (7, 5)
    assert to_pil(-torch.ones(1, 2, 2)).getpixel((0, 0)) == 0
    assert to_pil(torch.ones(1, 2, 2)).getpixel((0, 0)) == 255
    two = torch.stack([torch.ones(4, 4), -torch.ones(4, 4)])
    assert to_pil(two).getpixel((1, 1)) == 255  # the first channel
    four = torch.stack([torch.ones(4, 4), -torch.ones(4, 4), torch.zeros(4, 4), -torch.ones(4, 4)])
    assert to_pil(four).getpixel((0, 0)) == (255, 0, 128)
    path = save_image(torch.zeros(3, 6, 8), tmp_path / "sub" / "x.png")
    assert Image.open(path).size == (8, 6)


def test_save_triplet_grid_size(tmp_path):
    rows = [(torch.rand(3, 32, 24), torch.rand(1, 32, 24), torch.rand(3, 32, 24)) for _ in range(2)]
    path = save_triplet_grid(rows, tmp_path / "grid.png")
    with Image.open(path) as image:
        assert image.mode == "RGB"
        assert image.size == (3 * 24 + 4 * GRID_PAD, GRID_HEADER + 2 * 32 + 3 * GRID_PAD)
    pairs = [(torch.rand(1, 16, 16), torch.rand(1, 16, 16))]
    path = save_triplet_grid(pairs, tmp_path / "pair.png", labels=("input", "output"))
    assert Image.open(path).size == (2 * 16 + 3 * GRID_PAD, GRID_HEADER + 16 + 2 * GRID_PAD)
    strip = save_triplet_grid(pairs, tmp_path / "strip.png", labels=None)
    assert Image.open(strip).size == (2 * 16 + 3 * GRID_PAD, 16 + 2 * GRID_PAD)


# -- reports ---------------------------------------------------------------------------------------


def _make_run(run):
    (run / "samples").mkdir(parents=True)
    log = [
        {
            "step": s,
            "epoch": s // 10,
            "lr_G": 2e-4,
            "lr_D": 2e-4,
            "time": s * 0.1,
            "D_real": 0.7 - s * 1e-3,
            "D_fake": 0.6,
            "G_cgan": 0.9,
            "G_l1": 10.0 / (s + 1),
        }
        for s in range(0, 100, 5)
    ]
    text = "\n".join(json.dumps(e) for e in log) + '\n{"step": 100, "D_re'  # truncated last line
    (run / "log.jsonl").write_text(text)
    for step in (100, 2000):
        save_triplet_grid([(torch.zeros(3, 8, 8),) * 3], run / "samples" / f"step_{step:06d}.png")
    (run / "recipe.toml").write_text(
        '[experiment]\nname = "facades <b>"\n\n[data]\nroot = "</pre><script>alert(1)</script>"\n'
    )
    (run / "plugins.json").write_text(json.dumps({"pix2pix-metrics": "i2i 0.1.0"}))
    eval_dir = run / "eval" / "eval"
    eval_dir.mkdir(parents=True)
    metrics = {
        "mode": "eval",
        "split": "test",
        "count": 2,
        "checkpoint": "checkpoints/latest.pt",
        "step": 95,
        "metrics": {
            "psnr": {"mean": 21.5, "higher_is_better": True},
            "l1": {"mean": 0.08, "higher_is_better": False},
        },
    }
    (eval_dir / "metrics.json").write_text(json.dumps(metrics))
    return log, eval_dir


def test_read_log_and_plot(tmp_path):
    log, _ = _make_run(tmp_path)
    entries = read_log(tmp_path / "log.jsonl")
    assert entries == log
    out = plot_loss_curves(tmp_path / "log.jsonl", tmp_path / "curves.png")
    assert out is not None and Image.open(out).size[0] > 300
    (tmp_path / "empty.jsonl").write_text("")
    assert plot_loss_curves(tmp_path / "empty.jsonl", tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
    assert read_log(tmp_path / "missing.jsonl") == []


def test_gallery_sorts_worst_first(tmp_path):
    (tmp_path / "images").mkdir()
    rows = [
        {"name": "good", "image": "images/good.png", "psnr": 30.0, "l1": 0.01},
        {"name": "bad <i>", "image": "images/bad 1.png", "psnr": 12.0, "l1": 0.3},
        {"name": "perfect", "image": "images/perfect.png", "psnr": math.inf, "l1": 0.0},
    ]
    page = write_gallery(tmp_path, rows, ["psnr", "l1"], "psnr", True, "test <gallery>").read_text()
    assert page.index("bad &lt;i&gt;") < page.index("good") < page.index("perfect")
    assert 'src="images/bad%201.png"' in page and "<i>" not in page
    assert "test &lt;gallery&gt;" in page and "inf" in page
    page = write_gallery(tmp_path, rows, ["psnr", "l1"], "l1", False, "by l1").read_text()
    assert page.index("bad &lt;i&gt;") < page.index("good") < page.index("perfect")


def test_write_index(tmp_path):
    run = tmp_path / "run"
    _, eval_dir = _make_run(run)
    write_gallery(
        eval_dir, [{"name": "a", "image": "images/a.png", "psnr": 20.0}], ["psnr"], "psnr", True, "gallery"
    )
    index = write_index(run)
    assert index == run / "index.html"
    page = index.read_text()
    assert "<script" not in page
    assert "&lt;/pre&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "facades &lt;b&gt;" in page
    assert (run / "loss_curves.png").is_file()
    links = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert links, "the index links nothing"
    for link in links:
        assert not link.startswith(("/", "http")), link
        assert (run / link).is_file(), link
    assert "eval/eval/gallery.html" in links
    assert page.index("step 2000") < page.index("step 100<")
    assert "21.5000" in page and "i2i 0.1.0" in page and "checkpoints/latest.pt" in page


def test_write_index_on_an_empty_run(tmp_path):
    page = write_index(tmp_path).read_text()
    assert tmp_path.name in page and "Not evaluated yet" in page
