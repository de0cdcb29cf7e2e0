"""Segmentation as translation: palettes, the target_palette dataset option, logits U-Nets, the
cross_entropy loss and the facades segmenter recipe."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from i2i_pix2pix.palettes import Palette, get_palette
from PIL import Image
from torch import nn

from i2i import StepContext
from i2i.assembly.host import get_host
from i2i.assembly.recipe import load_recipe, resolve
from i2i.errors import DataError, I2IError
from i2i.nn_init import count_parameters

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "facades_mini"
FACADES = get_palette("cmp_facades")
K = FACADES.num_classes


def build(kind: str, name: str, **params):
    return get_host().registry(kind).build(name, **params)


# -- palettes ------------------------------------------------------------------------------------
def test_cmp_facades_has_the_twelve_classes_in_cmp_order():
    assert FACADES.class_names == (
        "background",
        "facade",
        "window",
        "door",
        "cornice",
        "sill",
        "balcony",
        "blind",
        "deco",
        "molding",
        "pillar",
        "shop",
    )
    assert FACADES.colours.dtype == torch.uint8 and FACADES.colours.shape == (12, 3)
    # Close to the drawing colours quoted for these maps (background, facade, window, #a50000).
    quoted = {0: (0x00, 0x06, 0xD9), 1: (0x0D, 0x3D, 0xFB), 2: (0x00, 0x75, 0xFF), 11: (0xA5, 0, 0)}
    for k, rgb in quoted.items():
        assert torch.dist(FACADES.colours[k].float(), torch.tensor(rgb).float()) < 20


def test_exact_palette_colours_map_to_their_class():
    indices = torch.arange(K).view(3, 4)
    picture = FACADES.colourise(indices)
    assert picture.shape == (3, 3, 4) and picture.dtype == torch.float32
    assert torch.equal(FACADES.quantise(picture), indices)
    as_bytes = (picture * 255).round().to(torch.uint8)  # 8-bit input works alike
    assert torch.equal(FACADES.quantise(as_bytes), indices)
    index, distance = FACADES.nearest(as_bytes)
    assert torch.equal(index, indices) and float(distance.max()) == 0.0


def test_colours_with_jpeg_like_noise_still_map_right():
    gen = torch.Generator().manual_seed(0)
    indices = torch.randint(0, K, (64, 64), generator=gen)
    clean = FACADES.colours[indices].permute(2, 0, 1).int()
    noisy = (clean + torch.randint(-12, 13, clean.shape, generator=gen)).clamp(0, 255)
    assert torch.equal(FACADES.quantise(noisy.to(torch.uint8)), indices)
    assert torch.equal(FACADES.quantise(noisy.float() / 255), indices)


def test_quantise_colourise_round_trip_and_batches():
    gen = torch.Generator().manual_seed(1)
    indices = torch.randint(0, K, (2, 5, 7), generator=gen)
    pictures = FACADES.colourise(indices)
    assert pictures.shape == (2, 3, 5, 7)
    assert torch.equal(FACADES.quantise(pictures), indices)
    assert torch.equal(FACADES.colourise(FACADES.quantise(pictures)), pictures)


def test_one_hot_has_one_channel_per_class():
    indices = torch.tensor([[0, 3], [11, 3]])
    hot = FACADES.one_hot(indices)
    assert hot.shape == (K, 2, 2) and hot.dtype == torch.float32
    assert torch.equal(hot.argmax(0), indices) and torch.equal(hot.sum(0), torch.ones(2, 2))


def test_ties_go_to_the_first_class_and_bad_inputs_are_refused():
    pal = Palette("two", ("a", "b"), torch.tensor([[0, 0, 0], [2, 0, 0]], dtype=torch.uint8))
    assert int(pal.quantise(torch.tensor([1, 0, 0], dtype=torch.uint8).view(3, 1, 1))) == 0
    with pytest.raises(DataError, match="RGB"):
        pal.quantise(torch.zeros(1, 4, 4))
    with pytest.raises(DataError, match="0..1"):
        pal.colourise(torch.tensor([[2]]))


def test_a_json_palette_file_works(tmp_path):
    path = tmp_path / "city.json"
    classes = [
        {"name": "road", "colour": "#804080"},
        {"name": "car", "color": "#00008E"},  # either spelling
        {"name": "sky", "colour": [70, 130, 180]},
    ]
    path.write_text(json.dumps({"classes": classes}))
    pal = get_palette(str(path))
    assert pal.class_names == ("road", "car", "sky")
    assert pal.colours.tolist() == [[128, 64, 128], [0, 0, 142], [70, 130, 180]]
    assert torch.equal(pal.quantise(pal.colourise(torch.tensor([[2, 0, 1]]))), torch.tensor([[2, 0, 1]]))


def test_unknown_palette_name_suggests_the_close_one():
    with pytest.raises(DataError, match="Did you mean 'cmp_facades'"):
        get_palette("cmp_facade")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("{not json", "not valid JSON"),
        ('{"classes": [{"name": "a", "colour": "#000000"}]}', "at least two"),
        ('{"classes": [{"name": "a", "colour": "#00000"}, {"name": "b", "colour": "#ffffff"}]}', "#rrggbb"),
        ('{"classes": [{"name": "a", "colour": "#000000"}, {"name": "b"}]}', 'no "colour"'),
        ('{"classes": [{"name": "a", "colour": "#000000"}, {"name": "a", "colour": "#ffffff"}]}', "same"),
        ('{"classes": [{"name": "a", "colour": "#000000"}, {"name": "b", "colour": "#000000"}]}', "same"),
    ],
)
def test_a_bad_palette_file_is_named_in_the_error(tmp_path, text, match):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(DataError, match=match) as info:
        get_palette(str(path))
    assert str(path) in str(info.value)


def test_a_missing_palette_file_is_named(tmp_path):
    with pytest.raises(DataError, match="does not exist") as info:
        get_palette(str(tmp_path / "nope.json"))
    assert "nope.json" in str(info.value)


# -- the dataset option --------------------------------------------------------------------------
def make_labels() -> torch.Tensor:
    """A 32x32 class map of blocks with edges at multiples of 8 (so resizing to 16 or 8 keeps them
    exact), not mirror-symmetric (so a flip shows)."""
    labels = torch.full((32, 32), 1)  # facade
    labels[0:16, 0:16] = 2  # window
    labels[0:16, 16:32] = 9  # molding
    labels[16:24, 0:8] = 6  # balcony
    labels[16:24, 24:32] = 3  # door
    labels[24:32, 8:32] = 11  # shop
    return labels


LABELS = make_labels()


def label_picture(labels: torch.Tensor) -> np.ndarray:
    return FACADES.colours[labels].numpy()


def write_pairs(folder: Path, photo_is_labels: bool = False, suffix: str = ".png", n: int = 2) -> None:
    """n aligned pairs 64x32: a photo (random, or the label picture itself) and the label map."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        labels = LABELS if i % 2 == 0 else LABELS.flip(0)
        right = label_picture(labels)
        left = right if photo_is_labels else rng.integers(0, 256, right.shape, dtype=np.uint8)
        pair = Image.fromarray(np.concatenate([left, right], axis=1))
        pair.save(folder / f"{i + 1}{suffix}", **({"quality": 95} if suffix == ".jpg" else {}))


def expected_classes(labels: torch.Tensor, size: int) -> torch.Tensor:
    step = labels.shape[-1] // size
    return labels[step // 2 :: step, step // 2 :: step]


def test_target_palette_makes_b_one_hot_with_k_channels(tmp_path):
    write_pairs(tmp_path / "test")
    ds = build(
        "dataset",
        "aligned",
        split="test",
        root=str(tmp_path),
        load_size=16,
        crop_size=16,
        target_palette="cmp_facades",
    )
    assert ds.output_nc == K and ds.palette is FACADES and "cmp_facades" in repr(ds)
    item = ds[0]
    assert item["A"].shape == (3, 16, 16)
    b = item["B"]
    assert b.shape == (K, 16, 16) and b.dtype == torch.float32
    assert set(b.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal((b == 1).sum(0), torch.ones(16, 16, dtype=torch.long))
    assert torch.equal(b.argmax(0), expected_classes(LABELS, 16))


@pytest.mark.parametrize("size", [16, 12, 8])
def test_nearest_resizing_invents_no_classes(tmp_path, size):
    write_pairs(tmp_path / "test")
    ds = build(
        "dataset",
        "aligned",
        split="test",
        root=str(tmp_path),
        load_size=size,
        crop_size=size,
        target_palette="cmp_facades",
    )
    for i in range(len(ds)):
        present = set(ds[i]["B"].argmax(0).unique().tolist())
        assert present <= set(LABELS.unique().tolist())


def test_jpeg_label_maps_are_snapped_to_their_classes(tmp_path):
    write_pairs(tmp_path / "test", suffix=".jpg")
    ds = build(
        "dataset",
        "aligned",
        split="test",
        root=str(tmp_path),
        load_size=16,
        crop_size=16,
        target_palette="cmp_facades",
    )
    agree = (ds[0]["B"].argmax(0) == expected_classes(LABELS, 16)).float().mean()
    assert agree > 0.85  # JPEG blends a pixel or two along the block edges (0.92 here)


def test_train_jitter_crops_and_flips_a_and_b_alike(tmp_path):
    # The photo is the label picture itself, so A's classes must equal B's after the jitter.
    write_pairs(tmp_path / "train", photo_is_labels=True)
    ds = build(
        "dataset",
        "aligned",
        split="train",
        root=str(tmp_path),
        preprocess="crop",
        crop_size=16,
        target_palette="cmp_facades",
    )
    torch.manual_seed(0)
    seen = set()
    for _ in range(12):
        item = ds[0]
        a_classes = FACADES.quantise((item["A"] + 1) / 2)
        b_classes = item["B"].argmax(0)
        assert torch.equal(a_classes, b_classes)
        seen.add(tuple(b_classes.flatten().tolist()))
    assert len(seen) > 3  # the crops and flips really vary


def test_train_jitter_with_resizing_keeps_a_and_b_aligned(tmp_path):
    write_pairs(tmp_path / "train", photo_is_labels=True)
    ds = build(
        "dataset",
        "aligned",
        split="train",
        root=str(tmp_path),
        load_size=24,
        crop_size=16,
        target_palette="cmp_facades",
    )
    torch.manual_seed(1)
    for _ in range(6):
        item = ds[1]
        agree = (FACADES.quantise((item["A"] + 1) / 2) == item["B"].argmax(0)).float().mean()
        # Only the bicubic photo's blended edges could differ (it is 1.0 here); items drawn with
        # two different crops agree on 30-60% of the pixels.
        assert agree > 0.95


def test_items_are_reproducible_with_a_seed(tmp_path):
    write_pairs(tmp_path / "train")
    ds = build(
        "dataset",
        "aligned",
        split="train",
        root=str(tmp_path),
        load_size=24,
        crop_size=16,
        target_palette="cmp_facades",
    )
    torch.manual_seed(5)
    first = [ds[i] for i in range(2)]
    torch.manual_seed(5)
    again = [ds[i] for i in range(2)]
    for x, y in zip(first, again, strict=True):
        assert torch.equal(x["A"], y["A"]) and torch.equal(x["B"], y["B"])


def test_direction_picks_the_target_half(tmp_path):
    # BtoA: the left half is the target, so it is the label map there.
    folder = tmp_path / "test"
    folder.mkdir()
    photo = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(np.concatenate([label_picture(LABELS), photo], axis=1)).save(folder / "1.png")
    ds = build(
        "dataset",
        "aligned",
        split="test",
        root=str(tmp_path),
        direction="BtoA",
        load_size=16,
        crop_size=16,
        target_palette="cmp_facades",
    )
    assert torch.equal(ds[0]["B"].argmax(0), expected_classes(LABELS, 16))


def test_paired_folders_take_a_palette_too(tmp_path):
    for side in ("A", "B"):
        (tmp_path / side).mkdir()
    Image.fromarray(label_picture(LABELS)).save(tmp_path / "B" / "x.png")
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(tmp_path / "A" / "x.jpg")
    ds = build(
        "dataset",
        "paired_folders",
        split="test",
        root=str(tmp_path),
        load_size=16,
        crop_size=16,
        target_palette="cmp_facades",
    )
    assert ds.output_nc == K
    assert torch.equal(ds[0]["B"].argmax(0), expected_classes(LABELS, 16))


def test_without_a_palette_nothing_changes(tmp_path):
    write_pairs(tmp_path / "test")
    ds = build("dataset", "aligned", split="test", root=str(tmp_path), load_size=16, crop_size=16)
    assert ds.palette is None and ds.output_nc == 3 and ds[0]["B"].shape == (3, 16, 16)


def test_palette_errors_name_the_key(tmp_path):
    write_pairs(tmp_path / "test")
    with pytest.raises(DataError, match="Did you mean 'cmp_facades'"):
        build("dataset", "aligned", split="test", root=str(tmp_path), target_palette="cmp_facads")
    with pytest.raises(DataError, match="output_nc"):
        build(
            "dataset", "aligned", split="test", root=str(tmp_path), output_nc=1, target_palette="cmp_facades"
        )


def local_range(image: torch.Tensor) -> torch.Tensor:
    """Per pixel, the largest max-minus-min over the channels of its 5x5 neighbourhood."""
    x = image.float()[None]
    hi = F.max_pool2d(x, 5, stride=1, padding=2)
    lo = -F.max_pool2d(-x, 5, stride=1, padding=2)
    return (hi - lo)[0].amax(0)


def test_the_real_facades_labels_fit_the_palette(facades_root):
    from i2i_pix2pix.datasets import read_image

    labels = read_image(facades_root / "train" / "1.jpg")[:, :, 256:]
    index, distance = FACADES.nearest(labels)
    flat = local_range(labels) <= 16
    # Inside flat regions every pixel is a palette colour up to JPEG noise.
    assert float((distance[flat] <= 40).float().mean()) >= 0.99
    # Edges are blended by resizing and half-resolution JPEG chroma (about a fifth of this image).
    assert float((distance <= 40).float().mean()) >= 0.7
    assert {1, 2}.issubset(set(index.unique().tolist()))  # facade and window, at least


# -- the logits U-Net ----------------------------------------------------------------------------
def count(net: nn.Module, kind: type[nn.Module]) -> int:
    return sum(isinstance(m, kind) for m in net.modules())


@pytest.mark.parametrize("name", ["unet", "unet_128", "unet_256"])
def test_logits_unet_drops_only_the_tanh(name):
    extra = {"num_downs": 6} if name == "unet" else {}
    default = build("generator", name, input_nc=3, output_nc=K, ngf=4, **extra)
    logits = build("generator", name, input_nc=3, output_nc=K, ngf=4, output="logits", **extra)
    assert count(default, nn.Tanh) == 1 and count(logits, nn.Tanh) == 0
    assert count_parameters(default) == count_parameters(logits)
    assert list(default.state_dict()) == list(logits.state_dict())


def test_default_unet_keeps_the_reference_parameter_count():
    assert count_parameters(build("generator", "unet_128", input_nc=3, output_nc=3)) == 41_828_995


def test_logits_are_unbounded_and_bad_output_names_suggest():
    torch.manual_seed(0)
    G = build("generator", "unet", input_nc=3, output_nc=K, num_downs=5, ngf=4, output="logits")
    with torch.no_grad():
        G.model.model[3].bias.fill_(5.0)  # the last layer's bias shows through without a tanh
        out = G(torch.randn(1, 3, 32, 32))
    assert out.shape == (1, K, 32, 32) and float(out.max()) > 1.0
    with pytest.raises(I2IError, match="Did you mean 'logits'"):
        build("generator", "unet_128", input_nc=3, output_nc=K, output="logit")


# -- the cross_entropy loss ----------------------------------------------------------------------
def one_hot_target(classes: torch.Tensor, k: int) -> torch.Tensor:
    return F.one_hot(classes, k).permute(0, 3, 1, 2).float() * 2 - 1


def test_cross_entropy_equals_torch_and_logs_pixel_accuracy():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, K, 6, 5, generator=gen)
    classes = torch.randint(0, K, (2, 6, 5), generator=gen)
    loss = build("loss", "cross_entropy")
    loss.setup(input_nc=3, output_nc=K, latent_dim=0)
    ctx = StepContext(
        torch.zeros(2, 3, 6, 5), one_hot_target(classes, K), nn.Identity(), None, logits, None, lambda n: None
    )
    value = loss.generator_loss(ctx)
    assert torch.allclose(value, F.cross_entropy(logits, classes))
    accuracy = (logits.argmax(1) == classes).float().mean()
    assert torch.allclose(ctx.logs["ce_pixel_acc"], accuracy)


def test_class_weights_change_the_loss_as_torch_does():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 3, 4, 4, generator=gen)
    classes = torch.randint(0, 3, (1, 4, 4), generator=gen)
    weights = [1.0, 5.0, 0.5]
    ctx = StepContext(
        torch.zeros(1, 3, 4, 4), one_hot_target(classes, 3), nn.Identity(), None, logits, None, lambda n: None
    )
    plain = build("loss", "cross_entropy").generator_loss(ctx)
    weighted = build("loss", "cross_entropy", class_weights=weights).generator_loss(ctx)
    assert not torch.allclose(plain, weighted)
    assert torch.allclose(weighted, F.cross_entropy(logits, classes, weight=torch.tensor(weights)))


def test_wrong_class_weights_are_refused_with_the_key():
    loss = build("loss", "cross_entropy", class_weights=[1.0, 2.0])
    with pytest.raises(I2IError, match="class_weights has 2 values.*12 classes"):
        loss.setup(input_nc=3, output_nc=K, latent_dim=0)
    # Also when the step comes first (no setup): the check runs on the first batch.
    logits = torch.zeros(1, 3, 2, 2)
    ctx = StepContext(
        torch.zeros(1, 3, 2, 2),
        one_hot_target(torch.zeros(1, 2, 2, dtype=torch.long), 3),
        nn.Identity(),
        None,
        logits,
        None,
        lambda n: None,
    )
    with pytest.raises(I2IError, match="class_weights has 2 values"):
        loss.generator_loss(ctx)


def test_an_image_target_asks_for_target_palette():
    picture = torch.rand(1, 3, 4, 4) * 2 - 1
    ctx = StepContext(
        torch.zeros(1, 3, 4, 4), picture, nn.Identity(), None, torch.randn(1, 3, 4, 4), None, lambda n: None
    )
    with pytest.raises(I2IError, match="target_palette"):
        build("loss", "cross_entropy").generator_loss(ctx)


def test_a_few_steps_on_a_tiny_logits_unet_reduce_the_loss():
    torch.manual_seed(0)
    G = build(
        "generator", "unet", input_nc=3, output_nc=4, num_downs=5, ngf=4, dropout=False, output="logits"
    )
    loss = build("loss", "cross_entropy")
    loss.setup(input_nc=3, output_nc=4, latent_dim=0)
    classes = torch.arange(4).repeat_interleave(8).view(1, 1, 32).expand(2, 32, 32)
    target = one_hot_target(classes, 4)
    photo = torch.randn(2, 3, 32, 32) * 0.1 + classes[:, None].float() / 2  # the class shows in A
    opt = torch.optim.Adam(G.parameters(), lr=1e-2)
    values = []
    for _ in range(12):
        ctx = StepContext(photo, target, G, None, G(photo), None, lambda n: None)
        value = loss.generator_loss(ctx)
        opt.zero_grad()
        value.backward()
        opt.step()
        values.append(float(value.detach()))
    assert values[-1] < 0.7 * values[0]


# -- the recipe ----------------------------------------------------------------------------------
def test_the_segmenter_recipe_resolves_as_described():
    recipe = resolve(load_recipe(REPO / "recipes" / "facades_segmenter.toml"), get_host(), "seg")
    data, G = recipe["data"], recipe["generator"]
    assert (data["direction"], data["target_palette"]) == ("AtoB", "cmp_facades")
    assert (data["load_size"], data["crop_size"], data["flip"]) == (143, 128, True)
    assert (G["name"], G["output"], G["ngf"], G["norm"], G["dropout"]) == (
        "unet_128",
        "logits",
        16,
        "batch",
        False,
    )
    assert [loss["name"] for loss in recipe["losses"]] == ["cross_entropy"]
    assert "discriminator" not in recipe
    assert recipe["train"]["evaluate"] is False


def test_the_segmenter_recipe_trains_a_step_on_the_sample():
    from i2i.training.trainer import Trainer

    overrides = [
        f"data.root={SAMPLE}",
        "data.max_items=4",
        "train.tensorboard=false",
        "experiment.device=cpu",
    ]
    recipe = resolve(load_recipe(REPO / "recipes" / "facades_segmenter.toml", overrides), get_host(), "seg")
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(recipe, get_host(), Path(run_dir), show_progress=False)
        assert trainer.model.discriminator is None
        assert count_parameters(trainer.model.generator) == 2_622_124
        logs = trainer.train_step(next(iter(trainer.loader)))
    assert torch.isfinite(torch.as_tensor(logs["ce_pixel_acc"]))
    assert 0.0 <= float(logs["ce_pixel_acc"]) <= 1.0
