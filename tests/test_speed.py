"""The [speed] paths against the plain path, the decoded cache against the DataLoader, and `i2i bench`."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from i2i.assembly.host import get_host
from i2i.assembly.recipe import resolve
from i2i.cli import app
from i2i.data.order import EpochSampler, _mix
from i2i.speed.device_data import DecodedLoader
from i2i.speed.options import AUTO_ON, MEASURED_ON_CUDA, decide
from i2i.training.trainer import Trainer

REPO = Path(__file__).resolve().parents[1]
MINI = REPO / "samples" / "facades_mini"

TINY = {
    "experiment": {"name": "tiny", "device": "cpu", "seed": 3},
    "data": {"name": "aligned", "root": str(MINI), "load_size": 40, "crop_size": 32, "max_items": 6},
    "generator": {"name": "unet", "num_downs": 5, "ngf": 4, "dropout": False},
    "discriminator": {"name": "patchgan", "ndf": 4},
    "losses": [{"name": "cgan"}, {"name": "l1", "weight": 100.0}],
    "train": {"evaluate": False, "tensorboard": False},
}


def recipe(**sections) -> dict:
    raw = copy.deepcopy(TINY)
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return resolve(raw, get_host())


def trainer(tmp_path, **sections) -> Trainer:
    return Trainer(recipe(**sections), get_host(), tmp_path / "run", show_progress=False)


def first_losses(tmp_path, steps: int = 3, **sections) -> list[dict[str, float]]:
    t = trainer(tmp_path, **sections)
    t.sampler.set_epoch(0)
    batches = iter(t.loader)
    return [{k: float(v) for k, v in t.train_step(next(batches)).items()} for _ in range(steps)]


def assert_close(a, b, rtol: float) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            assert x[key] == pytest.approx(y[key], rel=rtol, abs=1e-6), key


def test_auto_turns_on_only_what_was_measured_on_the_device():
    cpu = decide(None, torch.device("cpu"))
    assert cpu.allocator and not (cpu.channels_last or cpu.compile or cpu.cuda_graphs or cpu.cudnn_benchmark)
    assert cpu.amp == "off"
    cuda = decide(None, torch.device("cuda"))
    # Nothing has run on CUDA yet: "auto" there is the plain fp32 step until tools/gpu-check.sh measures.
    assert AUTO_ON["cuda"] <= MEASURED_ON_CUDA
    assert not (cuda.cudnn_benchmark or cuda.tf32 or cuda.allocator or cuda.compile or cuda.cuda_graphs)
    assert cuda.amp == "off"
    assert decide({"compile": True}, torch.device("cpu")).compile
    assert decide({"tf32": "on"}, torch.device("cuda")).tf32
    assert not decide({"tf32": "off"}, torch.device("cuda")).tf32


@pytest.mark.parametrize("tf32", ["on", "off", "auto"])
def test_tf32_is_set_explicitly_on_cuda(tf32):
    """torch's own defaults differ between matmuls (fp32) and convolutions (TF32): i2i sets both."""
    from i2i.speed.step import StepSpeed

    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    before = (matmul.allow_tf32, cudnn.allow_tf32, cudnn.benchmark)
    try:
        matmul.allow_tf32 = cudnn.allow_tf32 = tf32 != "on"  # the opposite of what is asked
        speed = StepSpeed(decide({"tf32": tf32}, torch.device("cuda")), torch.device("cuda"))
        speed.process_settings()
        assert (matmul.allow_tf32, cudnn.allow_tf32) == (tf32 == "on", tf32 == "on")
    finally:
        matmul.allow_tf32, cudnn.allow_tf32, cudnn.benchmark = before
    cpu = StepSpeed(decide({"tf32": tf32}, torch.device("cpu")), torch.device("cpu"))
    cpu.process_settings()
    assert bool(cpu.notes) is (tf32 == "on")  # asked for on a CPU: said, and fp32 it is


def test_channels_last_matches_the_plain_step_up_to_float_rounding(tmp_path):
    plain = first_losses(tmp_path / "a", speed={"allocator": False})
    fast = first_losses(tmp_path / "b", speed={"channels_last": True})
    assert_close(fast, plain, rtol=1e-4)


def test_bf16_autocast_keeps_fp32_weights_and_matches_fp32_losses_within_tolerance(tmp_path):
    plain = first_losses(tmp_path / "a")
    t = trainer(tmp_path / "b", speed={"amp": "bf16"})
    t.sampler.set_epoch(0)
    batches = iter(t.loader)
    amp = [{k: float(v) for k, v in t.train_step(next(batches)).items()} for _ in range(3)]
    assert all(p.dtype == torch.float32 for p in t.model.generator.parameters())
    # bf16 keeps 8 bits of mantissa: losses agree to about 1e-2 relative over the first steps.
    assert_close(amp, plain, rtol=3e-2)
    assert amp != plain  # autocast really ran in bf16


def test_cuda_graphs_fall_back_on_the_cpu_with_a_note(tmp_path):
    t = trainer(tmp_path, speed={"cuda_graphs": True})
    assert any(n.startswith("speed.cuda_graphs: CUDA graphs need a CUDA device") for n in t.speed.notes)
    t.sampler.set_epoch(0)
    assert torch.isfinite(t.train_step(next(iter(t.loader)))["G_total"])


def test_compile_falls_back_with_a_note_where_it_cannot_work():
    from i2i.speed.options import SpeedChoices
    from i2i.speed.step import prepare_step

    net = torch.nn.Conv2d(3, 3, 3)
    speed = prepare_step(
        SpeedChoices(compile=True), torch.device("cpu"), [net], can_compile=lambda device: "no compiler"
    )
    assert not speed.compiled
    assert speed.notes == ["speed.compile: torch.compile is unavailable (no compiler); running eagerly."]


def test_the_compile_probe_runs_on_the_training_device(monkeypatch):
    from i2i.speed.step import _can_compile

    seen = []

    def recording_compile(fn, **kwargs):
        def run(x):
            seen.append(x.device)
            return fn(x)

        return run

    monkeypatch.setattr(torch, "compile", recording_compile)
    assert _can_compile(torch.device("cpu")) is None
    assert "meta" in _can_compile(torch.device("meta")).lower() or seen[-1].type == "meta"
    assert [d.type for d in seen] == ["cpu", "meta"]  # on a GPU: a CUDA tensor, i.e. Triton


def test_a_compilation_that_fails_is_reported_as_eager_not_compiled(tmp_path, monkeypatch):
    """The probe passes, then the networks' compilation fails: dynamo suppresses the error and runs
    them eagerly; the run must say so and ``compiled`` must be false."""
    from torch import _dynamo

    real_compile = torch.compile

    def broken_backend(graph, inputs):
        raise RuntimeError("no GPU compiler here")

    def failing_compile(fn, *args, **kwargs):  # the probe's function compiles; the networks' do not
        probe = getattr(fn, "__name__", "") == "<lambda>"
        return real_compile(fn, backend="eager" if probe else broken_backend)

    monkeypatch.setattr(torch, "compile", failing_compile)
    try:
        t = trainer(tmp_path, speed={"compile": True})
        assert t.speed.compiled  # as far as is known before the networks first run
        t.sampler.set_epoch(0)
        logs = t.train_step(next(iter(t.loader)))
        assert torch.isfinite(logs["G_total"])
        assert not t.speed.compiled
        assert any(n.startswith("speed.compile: torch.compile failed on the networks") for n in t.speed.notes)
        assert t.speed.confirm_compiled() == []  # said once
    finally:
        _dynamo.reset()  # forget the failed frames: later tests compile the same code


@pytest.mark.slow
def test_compiled_step_matches_the_eager_step(tmp_path):
    plain = first_losses(tmp_path / "a", steps=2)
    compiled = first_losses(tmp_path / "b", steps=2, speed={"compile": True})
    assert_close(compiled, plain, rtol=1e-4)


@pytest.mark.parametrize("preprocess", ["resize_and_crop", "crop"])
def test_the_decoded_cache_gives_the_default_paths_crops_and_flips(tmp_path, preprocess):
    t = trainer(tmp_path, data={"preprocess": preprocess, "batch_size": 2})
    cached = DecodedLoader(t.items.dataset, t.items.seed, EpochSampler(6, 3), 2, torch.device("cpu"))
    for epoch in (0, 1):
        t.sampler.set_epoch(epoch)
        cached.sampler.set_epoch(epoch)
        for a, b in zip(t.loader, cached, strict=True):
            assert a["name"] == b["name"]
            for key in ("A", "B"):
                diff = (a[key] - b[key]).abs()
                if preprocess == "crop":  # no resize: bit-identical
                    assert torch.equal(a[key], b[key])
                # The default path resizes 8-bit images in integer arithmetic, the cache in float:
                # at most two 8-bit levels (4/255 in [-1, 1]) apart, in under 2% of the values.
                assert diff.max() <= 4 / 255 + 1e-6
                assert (diff > 1e-6).float().mean() < 0.02
    # Both epochs hold flipped and unflipped items, so a wrong flip could not go unnoticed.
    flips = []
    for epoch in (0, 1):
        with torch.random.fork_rng(devices=[]):
            for index in range(6):
                torch.manual_seed(_mix(3, epoch, index))
                flips.append(t.items.dataset.geometry(256, 256).flip)
    assert any(flips) and not all(flips)


def test_the_decoded_cache_builds_no_tensor_from_host_values_per_batch(tmp_path, monkeypatch):
    """A tensor made from Python values on a GPU is a blocking host-to-device copy (the flip flags
    were one per batch): once the images are cached, a batch must not need any."""
    t = trainer(tmp_path, data={"batch_size": 3})
    cached = DecodedLoader(t.items.dataset, t.items.seed, EpochSampler(6, 3), 3, torch.device("cpu"))
    cached.sampler.set_epoch(0)
    expected = list(cached)  # decodes and caches every image
    made = []

    def spy(real):
        def make(*args, **kwargs):
            made.append(args[:1])
            return real(*args, **kwargs)

        return make

    for name in ("tensor", "as_tensor", "from_numpy"):
        monkeypatch.setattr(torch, name, spy(getattr(torch, name)))
    for epoch in (0, 1, 0):
        cached.sampler.set_epoch(epoch)
        batches = list(cached)
        if epoch == 0:
            assert all(torch.equal(a[k], b[k]) for a, b in zip(batches, expected, strict=True) for k in "AB")
    assert made == []


def test_a_run_with_the_decoded_cache_trains(tmp_path):
    losses = first_losses(tmp_path, steps=2, data={"cache": "decoded"})
    assert all(torch.isfinite(torch.tensor(list(step.values()))).all() for step in losses)


def test_the_cpu_fp32_tolerance_holds_the_fp32_variants_and_not_bf16(tmp_path):
    """What the bench's CPU tolerances rest on: fp32 variants differ from the plain step by float
    noise, far inside ("cpu", "fp32"); bf16 autocast differs by more than that, inside ("cpu", "bf16")."""
    from i2i.training.bench import _max_rel_diff, loss_tolerance

    plain = first_losses(tmp_path / "a", optim={"fused": False}, speed={"allocator": False})
    fp32 = [
        first_losses(tmp_path / "b", optim={"fused": True}),
        first_losses(tmp_path / "c", optim={"fused": False}, speed={"channels_last": True}),
    ]
    bf16 = first_losses(tmp_path / "d", optim={"fused": False}, speed={"amp": "bf16"})
    for variant in fp32:
        assert _max_rel_diff(variant, plain) < loss_tolerance("cpu", "fp32") / 100
    assert loss_tolerance("cpu", "fp32") < _max_rel_diff(bf16, plain) < loss_tolerance("cpu", "bf16")


def test_the_tolerance_is_looser_where_the_arithmetic_is_coarser():
    from i2i.training.bench import APPROXIMATE_TOLERANCE, loss_tolerance, plan_variants

    cpu, cuda = loss_tolerance("cpu", "fp32"), loss_tolerance("cuda", "fp32")
    assert cpu < cuda < loss_tolerance("cuda", "tf32") < loss_tolerance("cuda", "bf16")
    assert loss_tolerance("cpu", "fp32") < loss_tolerance("cpu", "bf16")
    assert loss_tolerance("cpu", "tf32") == cpu  # no TF32 on a CPU: the variant runs in fp32
    assert loss_tolerance("mps", "fp32") == cuda  # other accelerators: the CUDA column
    assert loss_tolerance("cpu", "fp32", approximate=True) == APPROXIMATE_TOLERANCE
    # The variants on CUDA carry their precision; "all of them" computes in the coarsest.
    r = recipe(speed={"tf32": "on", "amp": "bf16", "channels_last": True})
    variants = {v.name: v for v in plan_variants(r, torch.device("cuda"))}
    assert variants["plain"].precision == "fp32" and variants["channels_last"].precision == "fp32"
    assert variants["tf32"].precision == "tf32" and variants["amp_bf16"].precision == "bf16"
    assert variants["all"].precision == "bf16"
    assert "tf32" not in {v.name for v in plan_variants(r, torch.device("cpu"))}


def test_bench_runs_from_the_cli_and_writes_its_json(tmp_path):
    path = tmp_path / "tiny.toml"
    import tomli_w

    path.write_text(tomli_w.dumps(TINY), encoding="utf-8")
    out = tmp_path / "bench.json"
    args = ["bench", str(path), "--steps", "2", "--repeats", "1", "--warmup", "1", "--json", str(out)]
    result = CliRunner().invoke(app, [*args, "--set", "speed.allocator=false", "--no-progress"])
    assert result.exit_code == 0, result.output
    summary = json.loads(out.read_text())
    assert set(summary["variants"]) == {"plain", "fused_adam"}
    assert summary["flops_per_step"] > 0
    plain, fused = summary["variants"]["plain"], summary["variants"]["fused_adam"]
    assert plain["speedup"] == 1.0
    for entry in (plain, fused):
        for key in ("step_s", "data_s", "compute_s"):
            assert entry[key]["min"] <= entry[key]["median"] <= entry[key]["max"]
        assert entry["images_per_s"] > 0 and entry["losses_match"]
    assert fused["loss_max_rel_diff"] < 1e-4
    assert set(plain["inference_images_per_s"]) == {"1", "8"}
    assert plain["achieved_flop_per_s"] > 0
    assert "fused_adam" in result.output
