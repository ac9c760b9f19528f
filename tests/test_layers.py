"""The library's layers, checked on the source: imports only point down.

``cxrlib.book`` (the chapters' tables, figures and experiments) may import everything;
``seg`` and ``tb`` import ``data``, ``preprocess`` and the shared modules (``tb`` also uses
``seg`` for its lung masks); ``data``, ``synthetic`` and ``preprocess`` import only the shared
modules and each other as listed; nothing outside ``book`` and ``cli`` imports ``book``. The
check reads every ``import`` statement, including those inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cxrlib"
SHARED = {"errors", "atomic", "paths", "precision", "runs", "stats", "lock"}
#: Which top-level parts of cxrlib each part may import (besides itself).
ALLOWED: dict[str, set[str]] = {
    "shared": set(),
    "data": {"shared"},
    "preprocess": {"shared", "data"},
    "synthetic": {"shared", "data"},
    "seg": {"shared", "data", "preprocess"},
    "tb": {"shared", "data", "preprocess", "seg"},
    "cli": {"shared", "data", "preprocess", "synthetic", "seg", "tb", "book"},
    "book": {"shared", "data", "preprocess", "synthetic", "seg", "tb"},
}


def _part(module: str) -> str:
    """``cxrlib.seg.train`` -> ``seg``; shared modules -> ``shared``."""
    parts = module.split(".")
    if len(parts) < 2:
        return "root"
    return "shared" if parts[1] in SHARED else parts[1]


def _module_name(path: Path) -> str:
    relative = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported cxrlib module) of every import in a file, relative ones resolved."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("cxrlib")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("cxrlib"):
                continue
            if target == "cxrlib":  # from cxrlib import seg
                found += [(node.lineno, f"cxrlib.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, target))
    return found


FILES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_belongs_to_a_known_part():
    parts = {_part(_module_name(p)) for p in FILES} - {"root"}
    assert parts <= set(ALLOWED), f"unknown parts of cxrlib: {parts - set(ALLOWED)}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: _module_name(p))
def test_imports_point_down_the_layers(path):
    here = _part(_module_name(path))
    if here == "root":
        return
    wrong = [
        f"line {line}: {target}"
        for line, target in _imports(path)
        if _part(target) not in ALLOWED[here] | {here}
    ]
    assert not wrong, f"{_module_name(path)} ({here}) imports across the layers: {wrong}"


def test_no_import_cycles_between_modules():
    graph = {_module_name(p): {t for _, t in _imports(p)} for p in FILES}
    known = set(graph)
    graph = {m: {t for t in targets if t in known and t != m} for m, targets in graph.items()}
    # a package's __init__ importing its own modules is not a cycle between concepts
    for module, targets in graph.items():
        graph[module] = {t for t in targets if not t.startswith(module + ".")}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(node: str, trail: list[str]) -> bool:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycle.extend(trail[trail.index(target) :] + [target] if target in trail else [])
                return True
            if state.get(target) is None and visit(target, [*trail, target]):
                return True
        state[node] = 2
        return False

    for start in sorted(graph):
        if state.get(start) is None and visit(start, [start]):
            break
    assert not cycle, f"import cycle: {' -> '.join(cycle)}"


def test_the_checker_sees_a_violation(tmp_path):
    """A book import from the data layer is caught (the test can fail)."""
    fake = PACKAGE / "data" / "_layer_probe.py"
    fake.write_text("from cxrlib.book import plots\n")
    try:
        here = _part(_module_name(fake))
        targets = [_part(t) for _, t in _imports(fake)]
        assert here == "data" and "book" in targets and "book" not in ALLOWED[here]
    finally:
        fake.unlink()


@pytest.mark.parametrize("path", FILES, ids=lambda p: _module_name(p))
def test_modules_stay_small(path):
    lines = len(path.read_text().splitlines())
    assert lines <= 600, f"{_module_name(path)} has {lines} lines: split it by concept"
