"""The shape of ``src/``: no import cycle, layers look down only, no file over 700 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "skembed"
MAX_LINES = 700

# Layers, lowest first: a module may import from its own layer (without a cycle) or below.
LAYERS = [
    (
        "similarity",
        {
            "_similarity_function",
            "_similarity",
            "_similarity_numerics",
            "_options",
            "_warnings",
            "_device",
            "_inputs",
        },
    ),
    ("encoder", {"encoder", "cache"}),
    ("training", {"training"}),
    (
        "estimators",
        {
            "_constraints",
            "_deferred",
            "_model_settings",
            "_model_card",
            "_embedder",
            "_long_text",
            "_fine_tuning",
            "_fine_tuned_classifier",
            "_evaluation",
            "_pair_similarity",
            "_quantization",
            "_mining",
            "parallel",
        },
    ),
    ("entry points", {"cli", "datasets", "__init__", "__main__"}),
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """The skembed modules ``path`` imports, at any depth of the file (lazy imports count)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [f"{target}.{alias.name}" for alias in node.names]
            found.update(n for n in [target, *names] if n.startswith("skembed"))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("skembed"))
    modules = {_module_name(p) for p in SRC.rglob("*.py")}
    return {n for n in found if n in modules and n != name}


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p) for p in SRC.rglob("*.py")}


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    for index, (_, members) in enumerate(LAYERS):
        if top in members:
            return index
    raise AssertionError(f"{module} is in no layer of this test; add it to LAYERS.")


def _is_package_of(importer: str, imported: str) -> bool:
    # A package's __init__ re-exports its own modules: that is not a cycle of ideas.
    return importer.startswith(imported + ".")


def test_no_import_cycle():
    graph = _graph()
    # A module importing its own package's __init__ is that package re-exporting it.
    edges = {m: {n for n in deps if not _is_package_of(m, n)} for m, deps in graph.items()}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)


def test_layers_look_down_only():
    upward = [
        f"{module} ({LAYERS[_layer(module)][0]}) imports {target} ({LAYERS[_layer(target)][0]})"
        for module, targets in _graph().items()
        for target in targets
        if _layer(target) > _layer(module)
    ]
    assert not upward, upward


def test_no_source_file_over_700_lines():
    long = {
        str(p.relative_to(SRC)): n
        for p in SRC.rglob("*.py")
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not long, long


def test_this_check_sees_a_cycle(tmp_path, monkeypatch):
    # The check must be able to fail: a package whose two modules import each other.
    package = tmp_path / "skembed"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "_a.py").write_text("from ._b import x\n")
    (package / "_b.py").write_text("def x():\n    from ._a import y\n")
    monkeypatch.setattr(__import__(__name__), "SRC", package)
    graph = _graph()
    assert "skembed._b" in graph["skembed._a"] and "skembed._a" in graph["skembed._b"]
