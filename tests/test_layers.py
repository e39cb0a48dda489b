"""The package layers: no import cycle between nos' packages, and the runtime imports no component."""

from __future__ import annotations

import ast
from pathlib import Path

import nos

SRC = Path(nos.__file__).parent
COMPONENTS = {"agent", "partitioner", "planner", "sim", "cli", "doctor"}


def package_imports() -> dict[str, set[str]]:
    """Package (or top-level module) -> the other nos packages it imports."""
    edges: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).parts
        pkg = rel[0] if len(rel) > 1 else rel[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] if node.module != "nos" else [f"nos.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                parts = name.split(".")
                if parts[0] == "nos" and len(parts) > 1 and parts[1] != pkg:
                    edges.setdefault(pkg, set()).add(parts[1])
    return edges


def test_no_import_cycle_between_packages() -> None:
    edges = package_imports()

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            for nxt in edges.get(todo.pop(), set()):
                if nxt == goal:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return False

    cycles = sorted({tuple(sorted((a, b))) for a, targets in edges.items() for b in targets if reaches(b, a)})
    assert cycles == []


def test_runtime_and_config_import_no_component() -> None:
    edges = package_imports()
    assert not edges.get("runtime", set()) & COMPONENTS
    assert edges.get("config", set()) <= {"yaml_errors"}
    assert "runtime" not in edges.get("kube", set())  # the adapters sit below the runtime
