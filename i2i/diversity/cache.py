"""What a cached diversity measurement depends on, so that it is reused only when nothing changed.

A rerun of ``i2i diversity`` reuses a result file (and the real-pair reference) only when its
stored ``cache_key`` equals the key of the measurement it would make now. The key holds
everything that can change the numbers:

- the model: the training step and a SHA-256 of the generator's weights (names, dtypes, shapes
  and bytes), plus its ``[generator]`` table; the checkpoint's path is recorded but not keyed, so a
  moved or copied checkpoint with the same weights is still reused;
- the data: the dataset's name and parameters (``data.root`` made absolute; the host's own keys
  such as ``batch_size`` left out), the split, the number of items, and a SHA-256 over the path,
  size and modification time of every file the items are read from (for datasets that list them
  with ``item_files()``, as the pix2pix datasets do);
- every metric and sampler with its full settings: the parameters of its entry completed with the
  factory's defaults (so ``ssim``'s ``win_size`` and ``lpips``'s ``version`` are keyed even when the
  entry leaves them out) and the package and version that provided it;
- the protocol (N, K, seed, pairing, split), the device the samples are drawn on, and the figure's
  size.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path
from typing import Any

import torch

from i2i.assembly.host import PluginHost

#: Bumped when the meaning of a key changes, so that older result files are measured again.
KEY_VERSION = 1


def plain(value: Any) -> Any:
    """``value`` as JSON gives it back (tuples become lists), for comparing with a stored key."""

    def fallback(obj: Any) -> str:
        text = repr(obj)
        return type(obj).__qualname__ if " at 0x" in text else text  # no addresses: they vary per run

    return json.loads(json.dumps(value, sort_keys=True, default=fallback))


def component_settings(host: PluginHost, kind: str, entry: str | dict[str, Any]) -> dict[str, Any]:
    """A recipe entry (``"ssim"`` or ``{name = "ssim", win_size = 3}``) with every parameter its
    factory takes, defaults included, and the package that provides it."""
    table = {"name": entry} if isinstance(entry, str) else dict(entry)
    component = host.registry(kind).get(table["name"])
    params = {k: v for k, v in table.items() if k != "name"}
    try:
        signature = inspect.signature(component.factory)
        bound = signature.bind_partial(**params)
        bound.apply_defaults()
        full: dict[str, Any] = {}
        for name, value in bound.arguments.items():
            if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
                full.update(value)
            elif signature.parameters[name].kind is not inspect.Parameter.VAR_POSITIONAL:
                full[name] = value
    except (TypeError, ValueError):  # no signature to read: the entry's own parameters
        full = params
    return plain({"name": table["name"], "params": full, "provider": str(component.provider)})


def data_fingerprint(data: dict[str, Any], host_keys: set[str], split: str, dataset: Any) -> dict[str, Any]:
    """The data a measurement was made on: the dataset's settings, the split and its files."""
    params = {k: v for k, v in data.items() if k not in host_keys}
    if isinstance(params.get("root"), str) and params["root"]:
        params["root"] = str(Path(params["root"]).expanduser().resolve())
    key: dict[str, Any] = {"dataset": params, "split": split, "items": len(dataset), "files": None}
    listing = getattr(dataset, "item_files", None)
    if callable(listing):
        digest = hashlib.sha256()
        count = 0
        for files in listing():
            for path in files:
                path = Path(path)
                try:
                    info = path.stat()
                    stamp = f"{info.st_size}:{info.st_mtime_ns}"
                except OSError:
                    stamp = "missing"
                digest.update(f"{path.resolve()}\0{stamp}\n".encode())
                count += 1
        key["files"] = {"count": count, "sha256": digest.hexdigest()}
    return plain(key)


def weights_digest(weights: dict[str, Any]) -> str:
    """SHA-256 of a state dict: every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(weights):
        value = weights[name]
        digest.update(name.encode() + b"\0")
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous()
            digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
            if t.numel():
                digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            digest.update(repr(value).encode())
    return digest.hexdigest()


def model_fingerprint(state: dict[str, Any]) -> dict[str, Any]:
    """The model a measurement was made with (a loaded checkpoint)."""
    recipe = state.get("recipe") or {}
    return plain(
        {
            "step": int(state.get("step", 0)),
            "generator": weights_digest(state.get("generator") or {}),
            "architecture": recipe.get("generator"),
        }
    )


def usable(cached: Any, key: dict[str, Any], required: dict[str, type]) -> tuple[bool, str | None]:
    """Whether a cached file's content can be reused for ``key``, and if it cannot be read as a
    result at all, why (for a note; a stale but well-formed result needs none)."""
    if cached is None:
        return False, None
    if not isinstance(cached, dict):
        return False, f"it holds a JSON {type(cached).__name__}, not a table"
    missing = [k for k, kind in required.items() if not isinstance(cached.get(k), kind)]
    if missing:
        return False, f"it lacks {', '.join(missing)}"
    return cached.get("cache_key") == key, None
