"""No import cycles, between the project's modules or between its top-level packages.

    python -m pytest tests/test_imports.py -q

Every import statement counts, also those inside functions and under ``TYPE_CHECKING``: a cycle hidden in a
function is still two modules that cannot be understood (or moved) one without the other.
"""
from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO_ROOT

# Import edges that another change in flight removes; each must still exist, so that this list is emptied as soon
# as they are gone (issue 12 removed the last two: sandbox.grading -> sandbox.forkserver, sandbox.cli -> rewards).
PENDING_REMOVAL: set[tuple[str, str]] = set()


def project_modules() -> dict[str, Path]:
    """Module name -> file, for launch.py and every package with an __init__.py (tests left out)."""
    modules = {"launch": REPO_ROOT / "launch.py"}
    for init in sorted(REPO_ROOT.glob("*/__init__.py")):
        package = init.parent
        if package.name == "tests":
            continue
        for path in package.rglob("*.py"):
            parts = path.relative_to(REPO_ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports (a name imported from a package counts as that package)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, ()):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def without_pending(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    return {name: targets - {t for s, t in PENDING_REMOVAL if s == name} for name, targets in graph.items()}


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    packages: dict[str, set[str]] = {}
    for name, targets in graph.items():
        top = name.split(".")[0]
        packages.setdefault(top, set()).update(t.split(".")[0] for t in targets if t.split(".")[0] != top)
    return packages


def test_no_import_cycles_between_modules():
    graph = import_graph()
    assert len(graph) > 50 and "train.controller" in graph  # the walk found the project
    assert cycles(without_pending(graph)) == []


def test_no_import_cycles_between_packages():
    assert cycles(package_graph(without_pending(import_graph()))) == []


def test_edges_pending_removal_still_exist():
    """When the change that removes one of them lands, its entry in PENDING_REMOVAL must go too."""
    graph = import_graph()
    assert [edge for edge in sorted(PENDING_REMOVAL) if edge[1] not in graph.get(edge[0], set())] == []


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
