"""tools/compare_unpaired.py, the command behind docs/unpaired.md, on one step of each method."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_comparison_trains_scores_times_and_reports_every_method(tmp_path):
    cmd = [
        sys.executable, str(REPO / "tools" / "compare_unpaired.py"), "--out", str(tmp_path), "--steps", "1",
        "--eval-items", "1", "--bench-steps", "1", "--bench-repeats", "1", "--samples", "1",
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "comparison.json").read_text())
    assert [r["method"] for r in result["rows"]] == ["pix2pix", "CycleGAN", "CUT", "FastCUT"]
    for row in result["rows"]:
        assert 0 <= row["fcn_pixel_acc"] <= 1 and row["step_s"] > 0 and row["images"] == 1
    page = (tmp_path / "index.html").read_text()
    assert "FCN IoU" in page and "samples.png" in page and (tmp_path / "samples.png").stat().st_size > 0
