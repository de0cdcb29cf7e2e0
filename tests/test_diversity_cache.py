"""The diversity runner's reuse of earlier work: what invalidates a cached measurement, cache files
it cannot use, and variant folders it must never delete (issue 15)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import toy_recipe

import i2i
from i2i.cli import main
from i2i.metrics import Metric
from i2i.reports.run_report import read_log
from i2i.runs.checkpoint import load_checkpoint, save_checkpoint

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "facades_mini"


def cli(capsys, *args: str) -> tuple[int, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0
    captured = capsys.readouterr()
    return code, " ".join((captured.out + captured.err).split())


def diversity(**changes) -> dict:
    """A [diversity] table: 2 inputs, 2 samples, one tiny figure, and ``changes``."""
    table = {
        "inputs": 2,
        "samples": 2,
        "figure_inputs": 1,
        "figure_samples": 2,
        "metrics": ["l1", {"name": "ssim", "win_size": 3}],
        "quality": ["l1"],
    }
    return {**table, **changes}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny trained run (32 px, no dropout) for variants that name it with ``from``."""
    tmp = tmp_path_factory.mktemp("given")
    recipe = toy_recipe(tmp / "run.toml", tmp / "runs", generator={"ngf": 4}, train={"max_steps": 2})
    code = main_code(["run", str(recipe), "--no-progress", "--set", "train.evaluate=false"])
    assert code == 0
    return tmp / "runs" / "tiny"


def main_code(args: list[str]) -> int:
    try:
        main(args)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0
    return 0


@pytest.fixture
def data(tmp_path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(SAMPLE, root, ignore=shutil.ignore_patterns("*.md"))
    return root


def given_experiment(path: Path, out: Path, run: Path, root: Path, **changes) -> Path:
    """An experiment whose one variant is the trained run ``run`` (nothing is trained)."""
    variant = {"name": "given", "from": str(run), "samplers": ["deterministic"]}
    return toy_recipe(
        path,
        out,
        experiment={"name": "exp"},
        data={"root": str(root)},
        diversity=diversity(variants=[variant], **changes),
    )


class Stamps:
    """Modification times of the experiment's cached files, to tell reuse from measuring again."""

    def __init__(self, root: Path) -> None:
        self.result = root / "results" / "given__deterministic.json"
        self.reference = root / "reference.json"
        self.before = self.now()

    def now(self) -> tuple[int, int]:
        return self.result.stat().st_mtime_ns, self.reference.stat().st_mtime_ns

    def changed(self) -> tuple[bool, bool]:
        """(result measured again, reference measured again) since the last call."""
        now = self.now()
        changed = (now[0] != self.before[0], now[1] != self.before[1])
        self.before = now
        return changed


def test_every_input_of_a_cached_measurement_invalidates_it(trained, data, tmp_path, capsys):
    path, out = tmp_path / "exp.toml", tmp_path / "runs"
    run = tmp_path / "given_run"
    shutil.copytree(trained, run)

    def again(**changes) -> tuple[bool, bool]:
        given_experiment(path, out, run, changes.pop("root", data), **changes)
        code, text = cli(capsys, "diversity", str(path), "--no-progress")
        assert code == 0, text
        return stamps.changed()

    given_experiment(path, out, run, data)
    code, text = cli(capsys, "diversity", str(path), "--no-progress")
    assert code == 0, text
    stamps = Stamps(out / "exp")
    assert again() == (False, False)  # nothing changed: everything is reused

    # A metric's parameters (here ssim's window, 3 -> 7): the report used to keep the old numbers.
    real_ssim = json.loads(stamps.reference.read_text())["values"]["1-ssim"]
    ssim7 = {"metrics": ["l1", {"name": "ssim", "win_size": 7}]}
    assert again(**ssim7) == (True, True)
    assert json.loads(stamps.reference.read_text())["values"]["1-ssim"] != pytest.approx(real_ssim)
    assert again(**ssim7) == (False, False)
    # A quality metric's parameters: the result only (the reference measures diversity metrics).
    assert again(quality=["l1", {"name": "ssim", "win_size": 3}], **ssim7) == (True, False)
    csv = (out / "exp" / "diversity.csv").read_text()
    assert again(quality=["l1", {"name": "ssim", "win_size": 7}], **ssim7) == (True, False)
    assert (out / "exp" / "diversity.csv").read_text() != csv  # it used to stay byte-identical

    # The model: other weights at the same step, in the same file.
    state = load_checkpoint(run)
    state.pop("path")
    state["generator"] = {k: v + 0.01 if v.is_floating_point() else v for k, v in state["generator"].items()}
    save_checkpoint(state, run / "checkpoints" / "latest.pt")
    assert again(**ssim7) == (True, False)
    assert again(**ssim7) == (False, False)

    # The data: a file of the split replaced, another root with the same files, another split.
    first = sorted((data / "test").glob("*.jpg"))[0]
    shutil.copy(sorted((data / "train").glob("*.jpg"))[0], first)
    assert again(**ssim7) == (True, True)
    other = tmp_path / "other_data"
    shutil.copytree(data, other)
    assert again(root=other, **ssim7) == (True, True)
    assert again(root=other, split="train", **ssim7) == (True, True)

    # The protocol: the seed.
    assert again(root=other, split="train", seed=1, **ssim7) == (True, True)
    assert again(root=other, split="train", seed=1, **ssim7) == (False, False)


class ScaledL1(Metric):
    diversity = "distance"
    higher_is_better = False

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def score(self, output, target) -> float:
        return self.scale * float((output - target).abs().mean())


def _metric_plugin(default: float):
    class Plugin:
        @i2i.hookimpl
        def i2i_register_metrics(self, registry):
            def scaled_l1(scale: float = default) -> Metric:
                """L1 times a factor."""
                return ScaledL1(scale)

            registry.add("scaled_l1", scaled_l1)

    return Plugin()


def test_a_metric_default_that_changes_invalidates_the_cache(trained, data, tmp_path, capsys, install_host):
    """LPIPS's version (0.0 or 0.1) is such a default: a cached number must not outlive it."""
    path, out = tmp_path / "exp.toml", tmp_path / "runs"
    given_experiment(path, out, trained, data, metrics=["scaled_l1"])
    install_host(("scaled", _metric_plugin(1.0)))
    assert cli(capsys, "diversity", str(path), "--no-progress")[0] == 0
    stamps = Stamps(out / "exp")
    value = json.loads(stamps.reference.read_text())["values"]["scaled_l1"]
    assert cli(capsys, "diversity", str(path), "--no-progress")[0] == 0
    assert stamps.changed() == (False, False)
    install_host(("scaled", _metric_plugin(2.0)))  # the plugin's default changed, the recipe did not
    assert cli(capsys, "diversity", str(path), "--no-progress")[0] == 0
    assert stamps.changed() == (True, True)
    assert json.loads(stamps.reference.read_text())["values"]["scaled_l1"] == pytest.approx(2 * value)


@pytest.mark.parametrize("target", ["result", "reference"])
@pytest.mark.parametrize("content", ["[1, 2]", '"x"', "no summary", "{broken"])
def test_a_cache_file_of_the_wrong_shape_is_measured_again(content, target, trained, data, tmp_path, capsys):
    path, out = tmp_path / "exp.toml", tmp_path / "runs"
    given_experiment(path, out, trained, data)
    assert cli(capsys, "diversity", str(path), "--no-progress")[0] == 0
    stamps = Stamps(out / "exp")
    file = stamps.result if target == "result" else stamps.reference
    good = json.loads(file.read_text())
    if content == "no summary":
        content = json.dumps({k: v for k, v in good.items() if k not in ("summary", "values")})
    file.write_text(content)
    code, text = cli(capsys, "diversity", str(path), "--no-progress")
    assert code == 0, text
    assert f"Note: {file} cannot be used as a cached result" in text and "measured again" in text
    assert json.loads(file.read_text()) == good  # the same numbers, measured again


def test_a_text_file_as_a_variants_checkpoint_is_a_clear_error(data, tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a model\n")
    path = given_experiment(tmp_path / "exp.toml", tmp_path / "runs", notes, data)
    code, text = cli(capsys, "diversity", str(path), "--no-progress")
    assert code == 1 and "notes.txt is not a readable checkpoint" in text and "text file" in text


# -- variant folders are never deleted -------------------------------------------------------------
def trained_experiment(path: Path, out: Path) -> Path:
    """One variant trained here: 2 epochs of 2 steps, an epoch snapshot after each."""
    variant = {"name": "pix", "samplers": ["deterministic"]}
    return toy_recipe(
        path,
        out,
        experiment={"name": "exp"},
        data={"max_items": 2},
        generator={"ngf": 4},
        train={"epochs": 2, "checkpoint_every": 1, "evaluate": False},
        diversity=diversity(variants=[variant]),
    )


def test_a_variant_without_latest_continues_from_its_newest_snapshot(tmp_path, capsys):
    path = trained_experiment(tmp_path / "exp.toml", tmp_path / "runs")
    assert cli(capsys, "diversity", str(path), "--no-progress")[0] == 0
    run = tmp_path / "runs" / "exp" / "variants" / "pix"
    checkpoints = run / "checkpoints"
    assert load_checkpoint(checkpoints / "epoch_0001.pt")["step"] == 2
    (run / "notes.txt").write_text("mine")
    aside = tmp_path / "aside"
    aside.mkdir()
    for name in ("latest.pt", "epoch_0002.pt"):
        shutil.move(checkpoints / name, aside / name)
    code, text = cli(capsys, "diversity", str(path), "--no-progress")
    assert code == 0, text
    assert "continuing from epoch_0001.pt (step 2)" in text
    assert "is an epoch snapshot" in " ".join(text.split())  # networks only: fresh optimisers, said
    assert (run / "notes.txt").read_text() == "mine" and (checkpoints / "epoch_0001.pt").is_file()
    assert [r["step"] for r in read_log(run / "log.jsonl")] == [1, 2, 3, 4]  # steps 3-4 trained again
    assert load_checkpoint(run)["step"] == 4 and (checkpoints / "epoch_0002.pt").is_file()


def test_a_variant_folder_without_any_checkpoint_is_kept_and_explained(tmp_path, capsys):
    path = trained_experiment(tmp_path / "exp.toml", tmp_path / "runs")
    run = tmp_path / "runs" / "exp" / "variants" / "pix"
    (run / "checkpoints").mkdir(parents=True)
    (run / "notes.txt").write_text("mine")
    (run / "checkpoints" / "epoch_0003.pt").write_text("not a checkpoint")
    code, text = cli(capsys, "diversity", str(path), "--no-progress")
    assert code == 1, text
    assert f"{run} has no checkpoints/latest.pt" in text and "epoch_0003.pt cannot be read" in text
    assert "notes.txt" in text and f"move {run} away" in text
    assert (run / "notes.txt").read_text() == "mine"
    assert (run / "checkpoints" / "epoch_0003.pt").read_text() == "not a checkpoint"
