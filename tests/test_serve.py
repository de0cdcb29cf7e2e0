"""``i2i serve``: the page answers drawn and uploaded inputs exactly as ``i2i translate`` does."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import toy_recipe
from PIL import Image

from i2i.assembly.host import get_host
from i2i.cli import main
from i2i.errors import DataError
from i2i.serve.labels import choose_palette, find_palette, snap

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "samples" / "facades_mini"

BACKGROUND, FACADE, WINDOW, SHOP = (0, 0, 222), (1, 48, 254), (1, 127, 254), (174, 0, 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def label_map() -> np.ndarray:
    """A small facade drawn in CMP colours: what a user paints on the canvas."""
    image = np.empty((64, 48, 3), np.uint8)
    image[:] = BACKGROUND
    image[8:60, 6:42] = FACADE
    for top in (14, 28):
        for left in (10, 26):
            image[top : top + 8, left : left + 8] = WINDOW
    image[48:60, 6:42] = SHOP
    return image


def brushed(image: np.ndarray) -> np.ndarray:
    """``image`` with anti-aliasing-like colour noise (at most 12 levels a channel: every pixel stays
    nearest to its own class colour)."""
    noise = np.random.default_rng(0).integers(-12, 13, image.shape)
    return np.clip(image.astype(int) + noise, 0, 255).astype(np.uint8)


def translated(run: Path, image_file: Path, tmp: Path, size: int = 64) -> np.ndarray:
    """What ``i2i translate --size SIZE`` writes for one image file."""
    src, dst = tmp / "translate_in", tmp / "translate_out"
    src.mkdir(exist_ok=True)
    shutil.copy(image_file, src / image_file.name)
    with pytest.raises(SystemExit) as done:
        main(["translate", str(run), str(src), str(dst), "--size", str(size)])
    assert done.value.code in (0, None)
    return np.array(Image.open(dst / f"{image_file.stem}.png"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("serve")
    recipe = tmp / "tiny.toml"
    toy_recipe(
        recipe,
        tmp / "runs",
        experiment={"name": "serve"},
        data={"load_size": 72, "crop_size": 64},
        generator={"num_downs": 6, "dropout": True},  # dropout sits in the innermost blocks: 6 levels
        train={"max_steps": 2},
    )
    with pytest.raises(SystemExit) as done:
        main(["run", str(recipe), "--no-progress"])
    assert done.value.code in (0, None)
    return tmp / "runs" / "serve"


@pytest.fixture(scope="module")
def server(run_dir):
    """``i2i serve RUN`` in its own process on a free port; yields (url, client, stderr file)."""
    pytest.importorskip("gradio", reason="the serve extra is not installed: pip install 'i2i[serve]'")
    from gradio_client import Client

    port = free_port()
    log = run_dir.parent / "serve.log"
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    with open(log, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "i2i", "serve", str(run_dir), "--port", str(port)],
            stdout=stderr,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"i2i serve exited with {proc.returncode}:\n{log.read_text()}")
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"i2i serve did not answer within 180 s:\n{log.read_text()}")
                time.sleep(0.5)
        yield url, Client(url, verbose=False), log
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def editor(path: Path) -> dict:
    from gradio_client import handle_file

    f = handle_file(str(path))
    return {"background": f, "layers": [], "composite": f}


def ask(client, path: Path, *, sampler: str = "translate", count: int = 1, seed: int = 0, snapping: bool):
    output, gallery, status = client.predict(
        editor(path), sampler, count, seed, snapping, api_name="/translate"
    )
    return output, gallery, status


def test_drawn_label_map_is_snapped_then_translated_like_i2i_translate(server, run_dir, tmp_path):
    _, client, log = server
    clean, noisy = tmp_path / "clean.png", tmp_path / "noisy.png"
    Image.fromarray(label_map()).save(clean)
    Image.fromarray(brushed(label_map())).save(noisy)
    expected = translated(run_dir, clean, tmp_path)
    assert expected.shape == (64, 48, 3)

    output, _, status = ask(client, noisy, snapping=True)
    assert output is not None, status
    assert np.array_equal(np.array(Image.open(output)), expected), status
    assert "48x64" in status and "ms on cpu" in status
    # without snapping the network sees the brush noise, and answers differently
    output, _, _ = ask(client, noisy, snapping=False)
    assert not np.array_equal(np.array(Image.open(output)), expected)
    assert "palette cmp_facades" in log.read_text().lower()


def test_uploaded_facades_input_gives_what_i2i_translate_gives(server, run_dir, tmp_path):
    _, client, _ = server
    pair = Image.open(SAMPLE / "test" / "1.jpg").convert("RGB")
    w, h = pair.size
    upload = tmp_path / "label_1.png"
    pair.crop((w // 2, 0, w, h)).save(upload)  # direction BtoA: the label half is the input
    expected = translated(run_dir, upload, tmp_path)

    from gradio_client import handle_file

    loaded, status = client.predict(handle_file(str(upload)), api_name="/upload")
    assert "Loaded label_1.png" in status
    assert np.array_equal(np.array(Image.open(loaded["background"])), np.array(Image.open(upload)))
    output, gallery, status = ask(client, upload, snapping=False)
    result = np.array(Image.open(output))
    assert result.shape == (h, w // 2, 3) == expected.shape
    assert np.array_equal(result, expected), status


def test_rectangle_tool_fills_a_class_then_the_answer_follows(server, tmp_path):
    _, client, _ = server
    canvas = tmp_path / "canvas.png"
    Image.fromarray(label_map()).save(canvas)
    value, status = client.predict(editor(canvas), "window", 30, 5, 10, 20, api_name="/rectangle")
    filled = np.array(Image.open(value["composite"] or value["background"]))[..., :3]
    assert (filled[5:21, 10:31] == WINDOW).all() and "Filled window" in status
    before = label_map()
    outside = np.ones(before.shape[:2], bool)
    outside[5:21, 10:31] = False
    assert (filled[outside] == before[outside]).all()  # nothing else changed
    rect = tmp_path / "rect.png"
    Image.fromarray(filled).save(rect)
    output, _, status = ask(client, rect, snapping=True)
    assert output is not None, status


def test_bad_uploads_are_messages_and_the_server_keeps_running(server, tmp_path):
    from gradio_client import handle_file

    _, client, _ = server
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    editor_value, status = client.predict(handle_file(str(text)), api_name="/upload")
    assert "Upload refused" in status and "notes.png is not a readable image" in status
    assert "/tmp/gradio" not in status  # names the user's file, not the server's copy

    huge = tmp_path / "huge.png"
    Image.new("RGB", (1500, 1100), BACKGROUND).save(huge)
    _, status = client.predict(handle_file(str(huge)), api_name="/upload")
    assert "scaled down to 1024x751" in status
    output, _, status = ask(client, huge, snapping=True)
    assert np.array(Image.open(output)).shape == (751, 1024, 3)
    assert "scaled down" in status

    small = tmp_path / "ok.png"
    Image.fromarray(label_map()).save(small)
    output, _, _ = ask(client, small, snapping=True)  # still answering
    assert np.array(Image.open(output)).shape == (64, 48, 3)


def test_dropout_samples_side_by_side_follow_the_seed(server, tmp_path):
    _, client, _ = server
    drawing = tmp_path / "drawing.png"
    Image.fromarray(label_map()).save(drawing)

    def samples(seed: int) -> list[np.ndarray]:
        _, gallery, status = ask(client, drawing, sampler="dropout_train", count=3, seed=seed, snapping=True)
        assert "3 sample(s) with dropout_train" in status
        return [np.array(Image.open(item["image"])) for item in gallery["value"]]

    first = samples(5)
    assert len(first) == 3 and all(s.shape == (64, 48, 3) for s in first)
    assert not np.array_equal(first[0], first[1])  # test-time dropout varies
    assert all(np.array_equal(a, b) for a, b in zip(first, samples(5), strict=True))
    assert not np.array_equal(first[0], samples(6)[0])


def test_page_renders_canvas_and_output_in_headless_chromium(server, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    url, _, _ = server
    dom = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--dump-dom",
            "--virtual-time-budget=15000",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    ).stdout
    canvas = dom.rfind('id="i2i-canvas"')
    output = dom.rfind('id="i2i-output"')
    status = dom.rfind('id="i2i-status"')
    assert -1 < canvas < output < status, dom[-2000:]
    assert "<canvas" in dom[canvas:output]  # the drawing surface
    assert re.search(r"<img [^>]*src=\"[^\"]+\.png\"", dom[output:status])  # the first answer arrived
    assert re.search(r"ms on cpu", dom[status:])


def test_missing_extra_is_one_paragraph_naming_the_install(run_dir):
    code = (
        "import sys; sys.modules['gradio'] = None\n"
        "from i2i.cli import main\n"
        f"main(['serve', {str(run_dir)!r}])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "pip install 'i2i[serve]'" in done.stderr and "Traceback" not in done.stderr


def test_help_does_not_import_gradio():
    code = (
        "import sys\n"
        "from i2i.cli import main\n"
        "for argv in (['--help'], ['serve', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('gradio' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip().splitlines()[-1] == "False", done.stdout + done.stderr
    assert "--palette" in done.stdout and "127.0.0.1" in done.stdout


def test_cli_refuses_what_is_not_a_generator_checkpoint(tmp_path, capsys):
    pytest.importorskip("gradio", reason="the serve extra is not installed")
    bogus = tmp_path / "model.pt"
    bogus.write_text("not a checkpoint")
    with pytest.raises(SystemExit) as done:
        main(["serve", str(bogus)])
    assert done.value.code == 1
    assert "model.pt is not a readable checkpoint" in capsys.readouterr().err
    for option, value in (("--port", "70000"), ("--threads", "0"), ("--canvas", "8")):
        with pytest.raises(SystemExit) as done:
            main(["serve", str(bogus), option, value])
        assert done.value.code == 1
        assert f"{option} {value}" in capsys.readouterr().err


def test_palette_is_recognised_from_the_training_inputs(tmp_path):
    host = get_host()
    pairs = [np.array(Image.open(p).convert("RGB")) for p in sorted((SAMPLE / "test").glob("*.jpg"))[:3]]
    labels = [torch.from_numpy(p[:, p.shape[1] // 2 :].copy()).permute(2, 0, 1) for p in pairs]
    photos = [torch.from_numpy(p[:, : p.shape[1] // 2].copy()).permute(2, 0, 1) for p in pairs]
    palette, note = choose_palette(None, host, labels)
    assert palette is not None and palette.name == "cmp_facades" and "%" in note
    palette, note = choose_palette(None, host, photos)
    assert palette is None and "--palette" in note

    custom = tmp_path / "two.json"
    custom.write_text(
        json.dumps({"classes": [{"name": "sky", "colour": "#0000ff"}, {"name": "sea", "colour": "#00ff00"}]})
    )
    palette, _ = choose_palette(str(custom), host, photos)
    assert palette.class_names == ("sky", "sea")
    with pytest.raises(DataError, match="cmp_facades"):
        find_palette("cmp_facade", host)


def test_snapping_replaces_every_pixel_by_its_class_colour():
    palette = find_palette("cmp_facades", get_host())
    snapped = snap(brushed(label_map()), palette)
    assert np.array_equal(snapped, label_map())


def test_other_hosts_get_a_warning():
    from i2i.serve.app import host_warning

    assert host_warning("127.0.0.1", 7860) is None
    warning = host_warning("0.0.0.0", 7860)
    assert "anyone" in warning and "127.0.0.1" in warning
