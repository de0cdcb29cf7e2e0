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
