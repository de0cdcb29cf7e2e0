"""The CUDA paths, tested on any machine: CUDA is faked (``torch.cuda`` monkeypatched) where a test
needs it, so these run on the CPU; the tests marked ``cuda`` need a real GPU and are skipped without.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_training import SAMPLE, TINY, resolved, train

from i2i.assembly.host import get_host
from i2i.runs.checkpoint import load_checkpoint, save_checkpoint
from i2i.training.start import start_run


@pytest.fixture
def tiny_recipe(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY.format(out=tmp_path / "runs", root=SAMPLE))
    return path


def fake_gpus(monkeypatch, count: int) -> list[tuple[int, torch.Tensor]]:
    """Pretend this machine has ``count`` GPUs; returns the (device, state) pairs set on them.

    Setting the state of a GPU that does not exist fails as in torch (an IndexError when its
    generator is looked up), so code that restores more states than GPUs fails here as on a GPU box.
    """
    restored: list[tuple[int, torch.Tensor]] = []

    def set_rng_state(state, device="cuda"):
        index = device if isinstance(device, int) else torch.device(device).index or 0
        if index >= count:
            raise IndexError("tuple index out of range")
        restored.append((index, state))

    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "set_rng_state", set_rng_state)
    monkeypatch.setattr(torch.cuda.random, "set_rng_state", set_rng_state)
    return restored


@pytest.mark.parametrize("gpus_here", [1, 0])
def test_resume_of_a_two_gpu_checkpoint_on_fewer_gpus_restores_what_fits(tiny_recipe, monkeypatch, gpus_here):
    _, part = train(tiny_recipe, "train.max_steps=1", "train.evaluate=false")
    path = part.run_dir / "checkpoints" / "latest.pt"
    state = load_checkpoint(path)
    gpu_states = [torch.full((16,), 7, dtype=torch.uint8), torch.full((16,), 9, dtype=torch.uint8)]
    state["rng"]["cuda"] = gpu_states  # as written on a machine with 2 GPUs
    state.pop("path")
    save_checkpoint({k: v for k, v in state.items() if k not in ("format", "format_version")}, path)
    restored = fake_gpus(monkeypatch, gpus_here)
    from io import StringIO

    from rich.console import Console

    out = StringIO()
    recipe = resolved(tiny_recipe, "train.max_steps=2")
    trainer = start_run(
        recipe, get_host(), resume_dir=part.run_dir, show_progress=False, console=Console(file=out, width=300)
    )
    trainer.release()
    assert trainer.step == 1
    assert [i for i, _ in restored] == list(range(gpus_here))
    if gpus_here:
        assert torch.equal(restored[0][1], gpu_states[0])
    text = " ".join(out.getvalue().split())
    assert "random state of 2 GPUs" in text and f"this machine has {gpus_here or 'none'}" in text


def test_restore_rng_says_nothing_when_the_gpus_match(monkeypatch):
    from i2i.training.state import capture_rng, restore_rng

    rng = capture_rng()
    rng["cuda"] = [torch.zeros(16, dtype=torch.uint8)]
    restored = fake_gpus(monkeypatch, 2)
    assert restore_rng(rng) is None and [i for i, _ in restored] == [0]
    assert restore_rng({**rng, "cuda": []}) is None


# -- metrics with networks of their own follow the evaluation's device --------------------------------
def random_inception(tmp_path: Path, monkeypatch) -> None:
    import i2i_pix2pix.metrics as m
    from torchvision.models import inception_v3

    path = tmp_path / "inception.pth"
    torch.save(inception_v3(weights=None, aux_logits=False, init_weights=False).state_dict(), path)
    monkeypatch.setenv(m.FID_WEIGHTS_ENV, str(path))
    monkeypatch.setattr(m.FID, "image_size", 75)


def test_fid_and_the_fcn_scores_default_to_the_evaluations_device():
    import inspect

    for name in ("fid", "fcn_pixel_acc", "fcn_class_acc", "fcn_iou"):
        factory = get_host().registry("metric").get(name).factory
        assert inspect.signature(factory).parameters["device"].default == "auto", name


def test_an_auto_fid_runs_where_the_evaluation_says_and_a_set_device_stays(tmp_path, monkeypatch):
    import i2i_pix2pix.metrics as m

    from i2i.metrics import tell_device

    random_inception(tmp_path, monkeypatch)
    auto = get_host().registry("metric").build("fid")
    assert auto.device.type == "cpu"  # loaded (and its weights checked) on the CPU, nothing moved yet
    fixed = get_host().registry("metric").build("fid", device="cpu")
    tell_device([auto, fixed, object()], torch.device("meta"))  # object(): a metric without the method
    assert {p.device.type for p in auto.model.parameters()} == {"meta"} and auto.device.type == "meta"
    assert {p.device.type for p in fixed.model.parameters()} == {"cpu"}
    # Not told (a metric used on its own): the GPU when there is one.
    real_auto_device = m.auto_device
    untold = get_host().registry("metric").build("fid")
    monkeypatch.setattr(m, "auto_device", lambda: torch.device("meta"))
    assert untold._prepare(torch.rand(1, 3, 8, 8)).device.type == "meta"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert real_auto_device() == torch.device("cuda")


def test_an_auto_fcn_score_segments_where_the_evaluation_says(monkeypatch):
    import i2i_pix2pix.fcn_score as f

    from i2i.metrics import tell_device

    monkeypatch.setattr(f, "_SEGMENTERS", {})  # its own segmenters: this test moves them
    scores = [get_host().registry("metric").build(n) for n in ("fcn_pixel_acc", "fcn_iou")]
    fixed = get_host().registry("metric").build("fcn_class_acc", device="cpu")
    assert scores[0].segmenter is scores[1].segmenter and scores[0].segmenter.device.type == "cpu"
    tell_device([*scores, fixed], torch.device("meta"))
    assert {p.device.type for p in scores[0].segmenter.net.parameters()} == {"meta"}
    assert {p.device.type for p in fixed.segmenter.net.parameters()} == {"cpu"}


# -- on a real GPU (skipped without CUDA; tools/gpu-check.sh runs them) -------------------------------
GPU = "cuda"


@pytest.mark.cuda
def test_a_run_trains_on_the_gpu_and_its_checkpoints_load_on_the_cpu(tiny_recipe):
    import i2i

    _, result = train(tiny_recipe, "train.max_steps=8", "train.evaluate=false", f"experiment.device='{GPU}'")
    latest = load_checkpoint(result.run_dir)
    assert latest["step"] == 8 and len(latest["rng"]["cuda"]) == torch.cuda.device_count()
    assert all(t.device.type == "cpu" for t in latest["generator"].values())
    snapshot = load_checkpoint(result.run_dir / "checkpoints" / "epoch_0002.pt")
    assert snapshot["snapshot"] and "opt_G" not in snapshot
    translator = i2i.load(result.run_dir / "checkpoints" / "epoch_0002.pt", device="cpu")
    assert next(translator.generator.parameters()).device.type == "cpu"


@pytest.mark.cuda
def test_the_decoded_cache_on_the_gpu_crops_and_flips_as_on_the_cpu():
    import tempfile

    from test_speed import trainer as make_trainer

    from i2i.data.order import EpochSampler
    from i2i.speed.device_data import DecodedLoader

    with tempfile.TemporaryDirectory() as tmp:
        t = make_trainer(Path(tmp), data={"preprocess": "crop", "batch_size": 3})
        loaders = [
            DecodedLoader(t.items.dataset, t.items.seed, EpochSampler(6, 3), 3, torch.device(d))
            for d in ("cpu", GPU)
        ]
        for epoch in (0, 1):
            for loader in loaders:
                loader.sampler.set_epoch(epoch)
            for a, b in zip(*loaders, strict=True):
                assert b["A"].device.type == "cuda"
                assert torch.equal(a["A"], b["A"].cpu()) and torch.equal(a["B"], b["B"].cpu())


@pytest.mark.cuda
def test_the_compile_probe_compiles_on_the_gpu():
    from i2i.speed.step import _can_compile

    assert _can_compile(torch.device(GPU)) is None  # Triton works here: speed.compile can be measured


@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["tf32", "bf16"])
def test_tf32_and_bf16_steps_match_fp32_within_the_bench_tolerance_on_the_gpu(tmp_path, precision):
    from test_speed import first_losses

    from i2i.training.bench import _max_rel_diff, loss_tolerance

    base = {"experiment": {"device": GPU}}
    plain = first_losses(tmp_path / "a", **base, speed={"tf32": "off"})
    again = first_losses(tmp_path / "b", **base, speed={"tf32": "off"})
    assert _max_rel_diff(again, plain) <= loss_tolerance(GPU, "fp32")  # fp32 against itself on CUDA
    speed = {"tf32": "on"} if precision == "tf32" else {"tf32": "off", "amp": "bf16"}
    other = first_losses(tmp_path / "c", **base, speed=speed)
    assert _max_rel_diff(other, plain) <= loss_tolerance(GPU, precision)


@pytest.mark.cuda
def test_fid_follows_the_evaluation_onto_the_gpu(tmp_path, monkeypatch):
    from i2i.metrics import tell_device

    random_inception(tmp_path, monkeypatch)
    fid = get_host().registry("metric").build("fid", batch_size=2)
    tell_device([fid], torch.device(GPU))
    assert next(fid.model.parameters()).device.type == "cuda"
    x = torch.rand(2, 3, 16, 16)
    fid.update(x, x)
    assert fid.compute() <= 1e-3


@pytest.mark.cuda
def test_the_random_state_of_every_gpu_goes_back_where_it_came_from():
    from i2i.training.state import capture_rng, restore_rng

    rng = capture_rng()
    assert len(rng["cuda"]) == torch.cuda.device_count()
    before = torch.rand(3, device=GPU)
    restore_rng(rng)
    assert restore_rng(rng) is None and torch.equal(torch.rand(3, device=GPU), before)
