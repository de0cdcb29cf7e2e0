"""docs/architecture.md is the map of the core: every module is in its layer table, and no module
imports from a layer above its own (nor a plugin)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "i2i"


def _layers() -> dict[str, int]:
    """Module path (relative to i2i/) -> layer number, from the doc's table."""
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    layers: dict[str, int] = {}
    for line in text.splitlines():
        match = re.match(r"\|\s*(\d+)\s*\|[^|]*\|(.*)\|\s*$", line)
        if not match:
            continue
        for module in re.findall(r"`([\w/]+\.py)`", match.group(2)):
            assert module not in layers, f"{module} is listed twice in docs/architecture.md"
            layers[module] = int(match.group(1))
    return layers


def _module_files() -> dict[str, Path]:
    return {
        str(p.relative_to(CORE)): p
        for p in CORE.rglob("*.py")
        if "__pycache__" not in p.parts and not (p.name == "__init__.py" and p.parent != CORE)
    }


def _dotted(relative: str) -> str:
    parts = relative[: -len(".py")].split("/")
    return "i2i." + ".".join(parts) if parts != ["__init__"] else "i2i"


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module != "i2i":  # from i2i import x: judged by x (a module, or a root name)
                found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)  # from i2i.x import module
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def test_every_core_module_is_on_the_map():
    layers, files = _layers(), _module_files()
    assert sorted(set(files) - set(layers)) == [], "modules missing from docs/architecture.md"
    assert sorted(set(layers) - set(files)) == [], "docs/architecture.md lists modules that do not exist"


def test_imports_only_point_down_and_never_at_a_plugin():
    layers = _layers()
    by_name = {_dotted(m): layer for m, layer in layers.items()}
    upward = []
    for relative, path in _module_files().items():
        own = layers[relative]
        for name in _imports(path):
            top = name.split(".")[0]
            assert top not in ("i2i_pix2pix", "i2i_diversity"), f"i2i/{relative} imports the plugin {name}"
            if top != "i2i":
                continue
            target = by_name.get(name)
            if target is None and name.count(".") == 1 and not (CORE / name.split(".")[1]).exists():
                target = by_name["i2i"]  # from i2i import X: the package root, the top layer
            if target is None and (CORE / "/".join(name.split(".")[1:])).is_dir():
                continue  # a subpackage itself: its __init__ holds a docstring only
            if target is None and name.rsplit(".", 1)[0] in by_name:
                target = by_name[name.rsplit(".", 1)[0]]  # from i2i.x import name
            if target is not None and target > own:
                upward.append(f"i2i/{relative} (layer {own}) imports {name} (layer {target})")
    assert not upward, "imports that point up:\n" + "\n".join(sorted(upward))
