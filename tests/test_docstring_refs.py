"""Docstrings, comments and docs name only modules, objects and files that exist.

Scanned: the docstrings and comments of the packages, benchmarks/ and tests/, and the
Markdown docs (README.md, BENCHMARKS.md, docs/*.md, each folder's README.md).

A dotted reference (``yolo_edge.remote.health.Health``, ``:mod:`edge_agent.core```) is resolved
in the sources, not by importing them (no side effects, no optional packages needed): its
module must be a file of the tree, its next name must be defined at the top of that module
(or imported there, followed to where it is defined), and a name after a class must be
defined in the class body. A file path (``bentos/intake.py``, ``docs/gpu.md``) must exist.
Deeper parts (an instance attribute, a method's local) are not checked.
"""

from __future__ import annotations

import ast
import functools
import io
import re
import tokenize
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("yolo_edge", "edge_agent", "bentos")
DOCS = [REPO / "README.md", REPO / "BENCHMARKS.md", *sorted((REPO / "docs").glob("*.md")),
        *sorted(REPO.glob("*/README.md"))]

DOTTED = re.compile(r"(?<![\w/.-])((?:%s)(?:\.[A-Za-z_]\w*)+)" % "|".join(PACKAGES))
PATH = re.compile(r"(?<![\w/.-])((?:%s|docs|notes)/[\w/.-]*\w)" % "|".join(PACKAGES))
FILE_SUFFIXES = (".py", ".md", ".yaml", ".yml", ".json", ".toml", ".gz", ".up")
#: Stale references left for another change to fix, as (file, reference). Remove an entry
#: once its file no longer has the reference.
KNOWN_STALE: set[tuple[str, str]] = set()


def _module_file(dotted: str) -> Path | None:
    base = REPO.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@functools.lru_cache(maxsize=None)
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


def _top_level(body: list[ast.stmt]):
    """The statements that bind names at this level (inside if/try blocks too)."""
    for node in body:
        if isinstance(node, (ast.If, ast.Try)):
            yield from _top_level(node.body + node.orelse + getattr(node, "finalbody", [])
                                  + [s for h in getattr(node, "handlers", []) for s in h.body])
        else:
            yield node


def _binding(body: list[ast.stmt], name: str, module: str) -> ast.AST | str | None:
    """The node that defines ``name`` in ``body``, the dotted name it is imported from, or None."""
    for node in _top_level(body):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return node
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return node
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == name:
            return node
        if isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    package = module if _module_file(module).name == "__init__.py" else module.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        package = package.rpartition(".")[0]
                    source = node.module if node.level == 0 else ".".join(p for p in (package, node.module) if p)
                    return f"{source}.{alias.name}"
    return None


def _resolve(dotted: str) -> str | None:
    """None when ``dotted`` names something that exists in the sources, else what is missing."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        module = ".".join(parts[:i])
        path = _module_file(module)
        if path is None:
            continue
        rest = parts[i:]
        if not rest:
            return None
        found = _binding(_tree(path).body, rest[0], module)
        if found is None:
            if _module_file(f"{module}.{rest[0]}") is not None:
                return _resolve(".".join([module, *rest]))
            return f"{rest[0]!r} is not defined in {module} ({path.relative_to(REPO)})"
        if isinstance(found, str):  # imported there: look where it comes from
            return None if not found.startswith(PACKAGES) else _resolve(".".join([found, *rest[1:]]))
        if len(rest) > 1 and isinstance(found, ast.ClassDef) and not _class_has(found, rest[1], module):
            return f"{rest[0]}.{rest[1]!r} is not defined in {module} ({path.relative_to(REPO)})"
        return None
    return f"no module of {dotted!r} exists"


def _class_has(cls: ast.ClassDef, member: str, module: str) -> bool:
    """``member`` is defined in the class body (a method, a field, an enum member) or may be inherited."""
    if _binding(cls.body, member, module) is not None:
        return True
    for base in cls.bases:
        if not isinstance(base, ast.Name) or base.id in ("object", "Protocol"):
            continue
        found = _binding(_tree(_module_file(module)).body, base.id, module)
        if isinstance(found, ast.ClassDef):
            if _class_has(found, member, module):
                return True
        elif isinstance(found, str) and found.startswith(PACKAGES):
            if _resolve(f"{found}.{member}") is None:
                return True
        else:  # a base from outside the tree (Enum, Exception, ...): it may define the member
            return True
    return False


def _docstrings_and_comments(path: Path):
    source = path.read_text(encoding="utf-8")
    for node in ast.walk(_tree(path)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                yield node.body[0].lineno, doc
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            yield tok.start[0], tok.string


def _texts():
    for folder in (*PACKAGES, "benchmarks", "tests"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for line, text in _docstrings_and_comments(path):
                yield path, line, text
    for path in DOCS:
        for line, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            yield path, line, text


def _broken() -> list[str]:
    broken = []
    for path, line, text in _texts():
        where = f"{path.relative_to(REPO)}:{line}"
        for m in DOTTED.finditer(text):
            ref = m.group(1)
            if ref.endswith(FILE_SUFFIXES) or (str(path.relative_to(REPO)), ref) in KNOWN_STALE:
                continue
            problem = _resolve(ref)
            if problem:
                broken.append(f"{where}: {ref}: {problem}")
        for m in PATH.finditer(text):
            ref = m.group(1).split("::")[0]
            if not any(c in ref for c in "*<{") and not (REPO / ref).exists():
                broken.append(f"{where}: {ref}: no such file")
    return broken


def test_references_in_docstrings_comments_and_docs_exist():
    broken = _broken()
    assert not broken, "stale references (rename them to what exists now):\n" + "\n".join(broken)


@pytest.mark.parametrize("ref, ok", [
    ("yolo_edge.remote.health.Health", True),
    ("yolo_edge.Detector", True),  # a name the package exports (imported in its __init__)
    ("yolo_edge.remote.wire.ServiceInfo.to_dict", True),
    ("edge_agent.core.DeviceCore.handle", True),
    ("edge_agent.health", False),
    ("yolo_edge.remote.health.NoSuchThing", False),
    ("edge_agent.core.DeviceCore.no_such_method", False),
])
def test_the_resolver_tells_what_exists(ref, ok):
    assert (_resolve(ref) is None) == ok, _resolve(ref)
