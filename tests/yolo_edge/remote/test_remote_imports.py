"""The remote layer's modules import each other one way: clients -> transport -> wire, never back.

Two checks. The static one reads every module of the package, function-level (lazy)
imports included and ``if TYPE_CHECKING:`` blocks left out, and finds the cycles of the
import graph: none may pass through a remote module. The dynamic one imports each remote
module first in a fresh interpreter, then the others, so an order that only works
because another module happened to load first fails here.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[3] / "yolo_edge"
#: every module of the remote layer (yolo_edge/remote/)
REMOTE = tuple(sorted(p.stem for p in (PACKAGE / "remote").glob("*.py") if p.stem != "__init__"))


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The package's modules ``path`` imports, at any depth, outside ``if TYPE_CHECKING:``."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:  # `from . import x` names a module; `from .m import y` names m
                target = f"{base}.{alias.name}"
                found.add(target if target in modules else base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return {m for m in found if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    return {_module_name(p): _imports(p, modules) for p in paths}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in graph:
        if v not in index:
            strong(v)
    return out


def test_the_graph_reader_sees_lazy_imports_and_skips_type_checking(tmp_path):
    graph = _graph()
    assert "yolo_edge.remote.cloud" in graph["yolo_edge.remote.endpoint"]  # lazy, inside open_endpoint
    assert "yolo_edge.remote.transport" in graph["yolo_edge.remote.cloud"] and "yolo_edge.remote.transport" in graph["yolo_edge.remote.oip"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_passes_through_the_remote_layer():
    remote = {f"yolo_edge.remote.{m}" for m in REMOTE}
    bad = [c for c in _cycles(_graph()) if remote & set(c)]
    assert bad == [], f"import cycles through the remote layer: {bad}"


def test_the_clients_import_the_transport_and_never_each_other_or_the_factory():
    graph = _graph()
    for client in ("yolo_edge.remote.cloud", "yolo_edge.remote.oip"):
        assert "yolo_edge.remote.endpoint" not in graph[client]
        assert not {"yolo_edge.remote.cloud", "yolo_edge.remote.oip"} & graph[client]
    assert not {"yolo_edge.remote.cloud", "yolo_edge.remote.oip", "yolo_edge.remote.endpoint"} & graph["yolo_edge.remote.transport"]


@pytest.mark.parametrize("first", REMOTE)
def test_each_remote_module_imports_first_in_a_fresh_interpreter(first):
    order = [first] + [m for m in REMOTE if m != first]
    code = "import importlib\n" + "".join(f"importlib.import_module('yolo_edge.remote.{m}')\n" for m in order)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=PACKAGE.parent)
    assert done.returncode == 0, done.stderr[-2000:]
