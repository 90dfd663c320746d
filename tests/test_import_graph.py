"""The package's modules import one another in one direction: no cycle, not even through imports inside
functions or under ``TYPE_CHECKING`` (they are how cycles hide)."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

PACKAGES = ("edge_anomaly", "edge_anomaly.runtime", "edge_anomaly.export", "edge_anomaly.benchmarks")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for folder in importlib.util.find_spec(package).submodule_search_locations:
            for path in Path(folder).glob("*.py"):
                found[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return found


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules of ``modules`` it imports anywhere in its text (``from a import b`` counts as
    ``a.b`` where that is a module, else as ``a``; a package ``__init__`` counts only when named)."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.stem == "__init__" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                graph[name] |= {alias.name for alias in node.names if alias.name in modules}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                for alias in node.names:
                    target = f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    if target in modules and target != name:
                        graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path that ends where it starts, or None (depth-first search, white/grey/black)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_package_has_no_import_cycle():
    graph = import_graph(_modules())
    assert len(graph) > 60 and "edge_anomaly.runtime.stream" in graph  # every package was walked
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_a_cycle_through_a_function_level_or_type_checking_import_is_found(tmp_path):
    (tmp_path / "a.py").write_text("from pkg import b\n")
    (tmp_path / "b.py").write_text("def f():\n    from .c import thing\n")
    (tmp_path / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import x\n")
    (tmp_path / "d.py").write_text("import pkg.a\n")
    graph = import_graph({f"pkg.{n}": tmp_path / f"{n}.py" for n in "abcd"})
    assert graph == {"pkg.a": {"pkg.b"}, "pkg.b": {"pkg.c"}, "pkg.c": {"pkg.a"}, "pkg.d": {"pkg.a"}}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.c", "pkg.a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_result_and_wording_are_plain_data_that_import_nothing_above_them():
    graph = import_graph(_modules())
    assert graph["edge_anomaly.result"] == set()
    assert graph["edge_anomaly.verdict_wording"] <= {"edge_anomaly.result", "edge_anomaly.findings"}
    for low in ("edge_anomaly.result", "edge_anomaly.findings", "edge_anomaly.grounding", "edge_anomaly.overlay"):
        assert "edge_anomaly.inspector" not in graph[low]
