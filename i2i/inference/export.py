"""Exporting a trained generator to TorchScript, ONNX or safetensors, each checked against PyTorch."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import torch

from i2i.assembly.host import PluginHost
from i2i.errors import I2IError
from i2i.inference.loading import generator_from_checkpoint
from i2i.inference.translate import size_multiple
from i2i.runs.checkpoint import load_checkpoint
from i2i.runs.outputs import output_folder

FORMATS = ("torchscript", "onnx", "safetensors")


class _WithLatent(torch.nn.Module):
    """Makes z an explicit input for exported generators that take one."""

    def __init__(self, generator: torch.nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.generator(x, z)


@torch.no_grad()
def export_generator(
    checkpoint: Path,
    host: PluginHost,
    formats: list[str],
    *,
    out_dir: Path | None = None,
    size: int = 256,
    tolerance: float = 1e-3,
    half: bool = False,
    missing: list[str] | None = None,
    direction: str = "AtoB",
) -> list[tuple[Path, float]]:
    """Write the generator (eval mode) in each format; returns (path, max abs difference).

    ``half`` stores the safetensors weights in fp16 (half the size); its check then allows the
    rounding that brings, 1 % of the output's range. With a ``missing`` list, a format whose
    optional extra is not installed is noted there (one sentence naming the extra) and skipped;
    without one, it is an error.
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise I2IError(f"Unknown export format {unknown[0]!r}: use {', '.join(FORMATS)}.")
    state = load_checkpoint(checkpoint)
    G = generator_from_checkpoint(state, host, torch.device("cpu"), direction).eval()
    multiple = size_multiple(G)
    if size < multiple or size % multiple:
        raise I2IError(
            f"--size {size}: the example input must be a positive multiple of {multiple} pixels for "
            f"this generator (e.g. --size {max(multiple, 256 // multiple * multiple)}); exported models "
            "accept any such size afterwards."
        )
    latent = int(getattr(G, "latent_dim", 0) or 0)
    module = _WithLatent(G) if latent else G
    stem = "generator" if direction == "AtoB" else "generator_BtoA"
    x = torch.rand(1, state["io" if direction == "AtoB" else "io_BtoA"]["input_nc"], size, size) * 2 - 1
    inputs = (x, torch.randn(1, latent)) if latent else (x,)
    expected = module(*inputs)
    out_dir = Path(out_dir) if out_dir else Path(state["path"]).parent.parent / "export"
    output_folder(out_dir, "The export folder")
    results = []
    if "torchscript" in formats:
        path = out_dir / f"{stem}.torchscript.pt"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            traced = torch.jit.trace(module, inputs)
        traced.save(str(path))
        diff = (torch.jit.load(str(path))(*inputs) - expected).abs().max().item()
        results.append((path, _check(path, diff, tolerance)))
    if "onnx" in formats:
        if missing is not None and importlib.util.find_spec("onnxruntime") is None:
            missing.append("ONNX was not written: it needs the optional extra, pip install 'i2i[onnx]'.")
        else:
            onnx_path = out_dir / f"{stem}.onnx"
            results.append(_export_onnx(module, inputs, expected, onnx_path, latent, tolerance))
    if "safetensors" in formats:
        from i2i.inference.loading import load_trained
        from i2i.inference.weights import save_generator

        path = save_generator(state, G, out_dir / f"{stem}.safetensors", half=half, direction=direction)
        reloaded = load_trained(path, host, torch.device("cpu")).generator
        again = (_WithLatent(reloaded) if latent else reloaded)(*inputs)
        diff = (again - expected).abs().max().item()
        allowed = 0.01 * max(1.0, expected.abs().max().item()) if half else tolerance
        results.append((path, _check(path, diff, allowed)))
    return results


def _check(path: Path, diff: float, tolerance: float) -> float:
    if not diff <= tolerance:
        raise I2IError(
            f"The exported {path.name} differs from the PyTorch generator by {diff:.3g} "
            f"(> {tolerance}); the export is not trustworthy for this network."
        )
    return diff


def _export_onnx(module, inputs, expected, path: Path, latent: int, tolerance: float):
    try:
        import onnxruntime as ort
    except ImportError:
        raise I2IError("ONNX export needs the optional extra: pip install 'i2i[onnx]'.") from None
    names = ["input", "z"] if latent else ["input"]
    axes = {"input": {0: "batch", 2: "height", 3: "width"}, "output": {0: "batch"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            inputs,
            str(path),
            input_names=names,
            output_names=["output"],
            dynamic_axes=axes,
            dynamo=False,
            opset_version=17,
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {n: t.numpy() for n, t in zip(names, inputs, strict=True)})[0]
    diff = float(abs(torch.from_numpy(got) - expected).max())
    return path, _check(path, diff, tolerance)
