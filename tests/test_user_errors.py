"""User mistakes end with exit 1 and one paragraph; each exit code means one class of outcome."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from i2i.cli import main
from i2i.errors import CheckpointError
from i2i.runs.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "facades_mini"


def cli(capsys, *args: str) -> tuple[int, str]:
    """Exit code and stdout+stderr of ``i2i ARGS``."""
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0
    captured = capsys.readouterr()
    return code, captured.out + captured.err


# -- files that are not checkpoints at all --------------------------------------------------------
#: Text whose bytes the weights-only unpickler reads as opcodes: each made torch.load raise
#: something other than an UnpicklingError (KeyError, IndexError, struct.error, UnicodeDecodeError).
NOT_CHECKPOINTS = {
    "notes.txt": b"just some notes\n",
    "readme.md": b"# A run\n\nTrained on facades.\n",
    "recipe.toml": b'[experiment]\nname = "x"\n',
    "index.pt": b"sP:,^#QW",  # IndexError
    "struct.pt": b"GF",  # struct.error
    "unicode.pt": b"U%3\x03\x84\xb6V\n",  # UnicodeDecodeError
    "memo.pt": b"h(@",  # KeyError
}


@pytest.mark.parametrize("name", sorted(NOT_CHECKPOINTS))
def test_a_file_that_is_not_a_checkpoint_is_refused_with_its_name(name, tmp_path):
    path = tmp_path / name
    path.write_bytes(NOT_CHECKPOINTS[name])
    with pytest.raises(CheckpointError, match="is not a readable checkpoint") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("command", ["eval", "translate"])
def test_eval_and_translate_refuse_a_text_file_as_checkpoint(command, tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("just some notes\n")
    inputs = tmp_path / "in"
    inputs.mkdir()
    shutil.copy(SAMPLE / "test" / sorted(os.listdir(SAMPLE / "test"))[0], inputs / "a.jpg")
    args = {"eval": [str(notes)], "translate": [str(notes), str(inputs), str(tmp_path / "o")]}[command]
    code, text = cli(capsys, command, *args)
    assert code == 1, text
    assert "Internal error" not in text and "notes.txt is not a readable checkpoint" in " ".join(text.split())
    assert "text file" in text


# -- exit codes: one per class of outcome (docs/reliability.md#exit-codes) -------------------------
def _raise(exc: BaseException):
    def fail(*args, **kwargs):
        raise exc

    return fail


def test_exit_codes_tell_the_classes_of_outcome_apart(tmp_path, capsys, monkeypatch):
    from i2i import cli as cli_module

    recipe = tmp_path / "r.toml"
    recipe.write_text("[experiment]\n")
    # 1: a mistake in the user's input (here a missing recipe), one paragraph naming the file.
    code, text = cli(capsys, "validate", str(tmp_path / "missing.toml"))
    assert code == cli_module.EXIT_USER_ERROR == 1 and "missing.toml" in text and "Traceback" not in text
    # 2: the command line itself is wrong (click's usage errors): unknown option, command, argument.
    for args in (["run", "--bogus"], ["bogus"], ["eval"], ["run", str(recipe), "--nproc", "0"]):
        code, text = cli(capsys, *args)
        assert code == cli_module.EXIT_USAGE == 2, (args, text)
        assert "Usage:" in text and "Internal error" not in text
    # 3: a bug in i2i or a plugin, told apart from both.
    monkeypatch.setattr("i2i.workflows.preflight.load_recipe", _raise(RuntimeError("a bug")))
    code, text = cli(capsys, "validate", str(recipe))
    assert code == cli_module.EXIT_INTERNAL == 3
    assert "Internal error: RuntimeError: a bug" in text and "please report it" in text
    # 130: interrupted (Ctrl-C), as a shell reports a SIGINT.
    monkeypatch.setattr("i2i.workflows.preflight.load_recipe", _raise(KeyboardInterrupt()))
    code, text = cli(capsys, "validate", str(recipe))
    assert code == cli_module.EXIT_INTERRUPTED == 130 and "Error" not in text


# -- i2i data verify: what it skipped, and splits with nothing usable ------------------------------
def _verify_recipe(tmp_path: Path, root: Path) -> Path:
    from conftest import toy_recipe

    return toy_recipe(tmp_path / "r.toml", tmp_path / "runs", data={"root": str(root), "max_items": None})


def _data(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(SAMPLE, root, ignore=shutil.ignore_patterns("*.md"))
    return root


@pytest.mark.skipif(os.name != "posix", reason="symbolic links")
def test_data_verify_counts_and_names_the_entries_it_skips(tmp_path, capsys):
    root = _data(tmp_path)
    train = root / "train"
    (train / "loop.jpg").symlink_to("loop.jpg")
    (train / "dangling.jpg").symlink_to(tmp_path / "gone.jpg")
    (train / "folder.jpg").mkdir()
    recipe = _verify_recipe(tmp_path, root)
    code, text = cli(capsys, "data", "verify", str(recipe))
    text = " ".join(text.split())
    assert code == 0, text  # the 40 real pairs are fine
    assert "3 entries named like images were skipped" in text
    assert f"{train / 'loop.jpg'} (a symbolic-link loop)" in text
    assert f"{train / 'dangling.jpg'} (a link to {tmp_path / 'gone.jpg'}, which does not exist)" in text
    assert f"{train / 'folder.jpg'} (a folder)" in text
    code, text = cli(capsys, "data", "verify", str(recipe), "--json")
    [train_report] = [s for s in json.loads(text)["splits"] if s["split"] == "train"]
    skipped = {Path(e["path"]).name for e in train_report["skipped"]}
    assert skipped == {"loop.jpg", "dangling.jpg", "folder.jpg"}
    # A folder holding only such entries is empty, and says what each one is.
    for image in train.glob("*.jpg"):
        if image.is_file() and not image.is_symlink():
            image.unlink()
    code, text = cli(capsys, "data", "verify", str(recipe))
    text = " ".join(text.split())
    assert code == 1 and f"{train} is empty" in text
    assert "dangling.jpg (a link to" in text and "loop.jpg (a symbolic-link loop)" in text
    assert "skip_bad" not in text


def test_a_split_of_only_bad_files_is_called_empty_not_skippable(tmp_path, capsys):
    root = _data(tmp_path)
    for image in (root / "train").glob("*.jpg"):
        image.write_bytes(b"")
    recipe = _verify_recipe(tmp_path, root)
    code, text = cli(capsys, "data", "verify", str(recipe))
    text = " ".join(text.split())
    assert code == 1, text
    assert "'train' split is empty once its bad files are left out" in text
    assert f"looked in {root / 'train'}" in text and "data.skip_bad cannot help" in text
    assert "set data.skip_bad = true" not in text
    # A run says the same, with or without data.skip_bad.
    for skip in ("false", "true"):
        code, text = cli(capsys, "run", str(recipe), "--no-progress", "--set", f"data.skip_bad={skip}")
        text = " ".join(text.split())
        assert code == 1 and "is empty once its bad files are left out" in text, text
        assert "set data.skip_bad = true" not in text
    assert not (tmp_path / "runs").exists()
