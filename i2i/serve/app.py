"""The Gradio page of ``i2i serve``: a label-map canvas, an upload box and the generator's answers.

Every user mistake (a file that is not an image, a sampler that does not apply, ...) becomes a
message on the page and in the status line; the server keeps running. Only this module imports
Gradio, and only when ``i2i serve`` runs, so ``i2i --help`` stays fast without the extra.
"""

from __future__ import annotations

import html
import logging
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.markup import escape

from i2i.assembly.host import PluginHost
from i2i.errors import I2IError
from i2i.inference.translate import read_input
from i2i.palette import Palette
from i2i.sampling import dropout_layers, latent_dim
from i2i.serve.labels import blank, fill_rectangle, hex_colour, snap
from i2i.serve.model import MAX_SAMPLES, PLAIN, ServedModel, as_tensor, to_rgb_array

try:
    import gradio as gr
except ImportError:  # pragma: no cover - the CLI checks with require_gradio() first
    gr = None

log = logging.getLogger(__name__)
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def require_gradio() -> None:
    """Raise a one-paragraph :class:`I2IError` when the ``serve`` extra is not installed."""
    if gr is None:
        raise I2IError(
            "i2i serve needs Gradio, the web-app library behind its page, which is an optional extra "
            "of i2i. Install it with:  pip install 'i2i[serve]'  (or pip install gradio), then run "
            "i2i serve again."
        )


def legend(palette: Palette | None, note: str) -> str:
    """The palette as coloured swatches with class names, for the page (Markdown with HTML)."""
    if palette is None:
        return html.escape(note)
    chips = " ".join(
        f'<span style="white-space:nowrap;margin-right:8px"><span style="display:inline-block;width:14px;'
        f'height:14px;vertical-align:middle;border:1px solid #888;background:{hex_colour(c)}"></span> '
        f"{html.escape(name)}</span>"
        for name, c in zip(palette.class_names, palette.colours, strict=True)
    )
    return f"{chips}<br><small>{html.escape(note)} The first class is the clear colour.</small>"


def starter_image(examples: list[torch.Tensor], palette: Palette | None, side: int) -> np.ndarray:
    """The canvas the page opens with: the data's first input, scaled to the canvas, or a blank one."""
    if not examples:
        return blank(palette, side, side)
    image = examples[0]
    _, h, w = image.shape
    factor = max(1, round(side / max(h, w)))
    picture = to_rgb_array(image)
    return np.kron(picture, np.ones((factor, factor, 1), dtype=np.uint8))  # nearest: colours stay exact


def editor_value(image: np.ndarray) -> dict[str, Any]:
    return {"background": image, "layers": [], "composite": image}


def build_app(
    model: ServedModel,
    palette: Palette | None,
    palette_note: str,
    examples: list[torch.Tensor],
    canvas: int = 256,
) -> Any:
    """The page's Blocks, not yet launched; the canvas opens with the first of ``examples``."""
    require_gradio()
    starter = starter_image(examples, palette, canvas)
    if palette is not None:
        colours = [hex_colour(c) for c in palette.colours]
        default = colours[1] if len(colours) > 1 else colours[0]
        brush = gr.Brush(colors=colours, default_color=default, color_mode="fixed")
    else:
        brush = gr.Brush(color_mode="defaults")
    choices = [(model.describe(name), name) for name in model.samplers]
    stochastic = latent_dim(model.generator) > 0 or bool(dropout_layers(model.generator))

    def translate(value: Any, sampler: str, count: float, seed: float, snapping: bool):
        composite = value.get("composite") if isinstance(value, dict) else None
        if composite is None:
            return None, gr.Gallery(value=[], visible=False), "Draw a label map or upload an input image."
        try:
            image = np.asarray(composite)
            if snapping and palette is not None and image.ndim == 3 and image.shape[2] >= 3:
                image = snap(image[..., :3], palette)
            seed = model.seed if seed is None else int(seed)  # an emptied field: the recipe's seed
            answer = model.answer(as_tensor(image, model.input_nc), sampler, int(count or 1), seed)
        except I2IError as exc:
            gr.Warning(str(exc))
            return gr.skip(), gr.skip(), f"**Not translated:** {exc}"
        except Exception as exc:  # noqa: BLE001 - the page must survive anything G or the input does
            log.error("i2i serve: translation failed\n%s", traceback.format_exc())
            gr.Warning(f"Translation failed: {exc}")
            message = f"**Translation failed:** {type(exc).__name__}: {exc} (details in the terminal)"
            return gr.skip(), gr.skip(), message
        h, w = answer.outputs[0].shape[:2]
        status = (
            f"{w}x{h}, {len(answer.outputs)} sample(s) with {sampler} (seed {int(seed)}) in "
            f"{answer.seconds * 1000:.0f} ms on {model.device}."
        )
        for note in answer.notes:
            gr.Info(note)
        if answer.notes:
            status += " " + " ".join(answer.notes)
        many = len(answer.outputs) > 1
        return answer.outputs[0], gr.Gallery(value=answer.outputs if many else [], visible=many), status

    def load_upload(path: str | None):
        if not path:
            return gr.skip(), gr.skip()
        try:
            tensor = read_input(Path(path), model.input_nc)  # decoded as i2i translate decodes files
        except I2IError as exc:
            message = str(exc).replace(str(path), Path(path).name)  # not the server's temporary copy
            gr.Warning(message)
            return gr.skip(), f"**Upload refused:** {message}"
        tensor, notes = model.fit(tensor)
        for note in notes:
            gr.Info(note)
        return editor_value(to_rgb_array(tensor)), " ".join(notes) or f"Loaded {Path(path).name}."

    def draw_rectangle(value: Any, label: str, left: float, top: float, right: float, bottom: float):
        composite = value.get("composite") if isinstance(value, dict) else None
        if palette is None or composite is None:
            return gr.skip(), "Rectangles need a palette (--palette) and a canvas."
        if label not in palette.class_names:
            return gr.skip(), f"Unknown class {label!r}; choose one of {', '.join(palette.class_names)}."
        image = np.asarray(composite)
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        colour = palette.colours[palette.class_names.index(label)].numpy()
        filled = fill_rectangle(image, colour, left, top, right, bottom)
        return editor_value(
            filled
        ), f"Filled {label} from ({left:.0f}, {top:.0f}) to ({right:.0f}, {bottom:.0f})."

    with gr.Blocks(title="i2i serve", analytics_enabled=False) as demo:
        gr.Markdown(
            f"### i2i serve: `{html.escape(model.path)}`\n"
            "Draw a label map (or upload an input image); the generator answers after every stroke."
        )
        with gr.Row():
            with gr.Column(scale=1):
                editor = gr.ImageEditor(
                    value=editor_value(starter),
                    label="Input (draw here)",
                    image_mode="RGB",
                    type="numpy",
                    sources=("upload", "clipboard"),
                    brush=brush,
                    layers=False,
                    transforms=(),
                    canvas_size=(canvas, canvas),
                    format="png",
                    elem_id="i2i-canvas",
                )
                gr.Markdown(legend(palette, palette_note))
                with gr.Row():
                    clear = gr.Button("Clear to background", size="sm")
                    snapping = gr.Checkbox(value=palette is not None, label="Snap colours to the palette")
                if palette is not None:
                    with gr.Accordion("Rectangle (pixel corners on the canvas)", open=False):
                        names = list(palette.class_names)
                        rect_label = gr.Dropdown(names, value=names[min(1, len(names) - 1)], label="Class")
                        with gr.Row():
                            x0 = gr.Number(value=canvas // 4, precision=0, label="left")
                            y0 = gr.Number(value=canvas // 4, precision=0, label="top")
                            x1 = gr.Number(value=canvas // 2, precision=0, label="right")
                            y1 = gr.Number(value=canvas // 2, precision=0, label="bottom")
                        rectangle = gr.Button("Fill rectangle", size="sm")
                upload = gr.File(label="Upload an input image", file_types=["image"], type="filepath")
            with gr.Column(scale=1):
                output = gr.Image(
                    label="Output", type="numpy", format="png", interactive=False, elem_id="i2i-output"
                )
                gallery = gr.Gallery(
                    label="Samples", format="png", columns=4, visible=False, interactive=False
                )
                status = gr.Markdown("", elem_id="i2i-status")
                sampler = gr.Radio(
                    choices=choices, value=PLAIN, label="Sampler (noise source and network mode)"
                )
                with gr.Row():
                    count = gr.Slider(1, MAX_SAMPLES, value=1, step=1, label="Samples side by side")
                    seed = gr.Number(value=model.seed, precision=0, label="Seed")
                new = gr.Button("New samples", size="sm")
                if not stochastic:
                    gr.Markdown(
                        "<small>This generator has no dropout and no latent code: samples are equal.</small>"
                    )

        inputs = [editor, sampler, count, seed, snapping]
        outputs = [output, gallery, status]
        editor.change(
            translate,
            inputs,
            outputs,
            api_name="translate",
            trigger_mode="always_last",
            show_progress="hidden",
        )
        for control in (sampler, count, seed, snapping):
            control.change(
                translate,
                inputs,
                outputs,
                api_visibility="private",
                trigger_mode="always_last",
                show_progress="hidden",
            )
        demo.load(translate, inputs, outputs, api_visibility="private")
        upload.upload(load_upload, upload, [editor, status], api_name="upload")
        if palette is not None:
            rectangle.click(
                draw_rectangle, [editor, rect_label, x0, y0, x1, y1], [editor, status], api_name="rectangle"
            )
        clear.click(
            lambda: editor_value(blank(palette, canvas, canvas)), None, editor, api_visibility="private"
        )
        new.click(lambda s: int(s) + 1, seed, seed, api_visibility="private")
    return demo


def host_warning(host: str, port: int) -> str | None:
    """What to tell the user when the page is reachable from other machines."""
    if host in LOCAL_HOSTS:
        return None
    return (
        f"Serving on {host}:{port}, not only this machine: anyone who can reach it on that port can "
        "run the model and upload files to it, with no login. Use it on a network you trust, or keep "
        "the default --host 127.0.0.1 and reach it through an SSH tunnel."
    )


def launch(demo: Any, host: str = "127.0.0.1", port: int = 7860, *, block: bool = True) -> str:
    """Start the server; returns its URL (immediately when ``block`` is false, for tests)."""
    require_gradio()
    _, url, _ = demo.launch(
        server_name=host,
        server_port=port,
        prevent_thread_lock=not block,
        quiet=not block,
        footer_links=["api"],
    )
    return url


def serve(
    checkpoint: Path,
    host: PluginHost,
    *,
    address: str = "127.0.0.1",
    port: int = 7860,
    palette: str | None = None,
    size: int | None = None,
    canvas: int = 256,
    device: str | None = None,
    threads: int | None = None,
    direction: str = "AtoB",
    console: Console | None = None,
    block: bool = True,
) -> str:
    """``i2i serve``: load the generator, pick the canvas palette, build the page and serve it.

    Returns the page's address (at once when ``block`` is false). Problems raise :class:`I2IError`.
    """
    require_gradio()
    from i2i.serve.labels import choose_palette

    console = console or Console(stderr=True)
    if not 1 <= port <= 65535:
        raise I2IError(f"--port {port}: choose a port from 1 to 65535 (e.g. 7860).")
    if not 32 <= canvas <= 2048:
        raise I2IError(f"--canvas {canvas}: choose a side from 32 to 2048 pixels.")
    if threads is not None:
        if threads < 1:
            raise I2IError(f"--threads {threads}: give at least 1.")
        torch.set_num_threads(threads)  # on a busy CPU, fewer threads answer sooner
    model = ServedModel(checkpoint, host, size=size, device=device, direction=direction)
    examples = model.examples()
    chosen, note = choose_palette(palette, host, examples)
    console.print(escape(note), soft_wrap=True)
    warning = host_warning(address, port)
    if warning:
        console.print(f"[bold yellow]Warning:[/bold yellow] {escape(warning)}", soft_wrap=True)
    demo = build_app(model, chosen, note, examples, canvas=canvas)
    console.print(f"Serving {escape(model.path)} on {model.device}; press Ctrl+C to stop.", soft_wrap=True)
    return launch(demo, address, port, block=block)
