"""The wheel ships what the source tree runs: every package, the segmenter weights, py.typed.

The rest of the suite runs on an editable install, which cannot see a package missing from the
wheel; tools/wheel-check.sh (run by CI) installs the wheel itself and runs the commands.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _source_packages() -> set[str]:
    found = set()
    for top, base in (("i2i", REPO), ("", REPO / "plugins")):
        roots = [REPO / "i2i"] if top else [p for p in (REPO / "plugins").iterdir() if p.is_dir()]
        for root in roots:
            for init in root.rglob("__init__.py"):
                if "__pycache__" not in init.parts:
                    found.add(".".join(init.parent.relative_to(base).parts))
    return found


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """A wheel built from a copy of the tracked files (no stale build/ folder can leak into it)."""
    tmp = tmp_path_factory.mktemp("wheel")
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split("\n")
    src = tmp / "src"
    for name in filter(None, files):
        if (REPO / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(tmp / "dist"), str(src)],
        check=True, capture_output=True,
    )
    [built] = (tmp / "dist").glob("i2i-*.whl")
    return zipfile.ZipFile(built)


def test_every_source_package_is_in_the_wheel(wheel):
    names = wheel.namelist()
    shipped = {str(Path(n).parent).replace("/", ".") for n in names if n.endswith("/__init__.py")}
    missing = _source_packages() - shipped
    assert not missing, f"packages in the source tree but not in the wheel: {sorted(missing)}"
    assert {"i2i", "i2i.speed", "i2i.serve", "i2i.diversity", "i2i_pix2pix"} <= shipped


def test_the_wheel_holds_its_data_files(wheel):
    names = set(wheel.namelist())
    assert "i2i_pix2pix/weights/facades_segmenter.safetensors" in names
    assert {"i2i/py.typed", "i2i_pix2pix/py.typed", "i2i_diversity/py.typed"} <= names
    [entry_points] = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = wheel.read(entry_points).decode()
    assert "i2i = i2i.cli:main" in text and "pix2pix-generators = i2i_pix2pix.generators" in text
