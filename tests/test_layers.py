"""The package's floors (SPEC section 1): no module imports one from a higher floor, and no cycle.

Every ``import`` of every module of ``django_workers`` counts, function-local ones included (the
few left are of optional dependencies). The floors, lowest first:

0. ``core`` (the engine; the package root only re-exports it)
1. ``observability``, ``models``, ``db``
2. ``settings``
3. ``history``, ``health``, ``control``, ``fleet``
4. ``runtime`` (the composition root), ``http``
5. ``runner``, ``admin``, ``apps``, ``checks``, ``management``, ``migrations`` and the public
   re-exports ``metrics``, ``tracing``, ``probe``
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "django_workers"

FLOORS = {
    "core": 0,
    "observability": 1,
    "models": 1,
    "db": 1,
    "settings": 2,
    "history": 3,
    "health": 3,
    "control": 3,
    "fleet": 3,
    "runtime": 4,
    "http": 4,
    "runner": 5,
    "admin": 5,
    "apps": 5,
    "checks": 5,
    "management": 5,
    "migrations": 5,
    "metrics": 5,
    "tracing": 5,
    "probe": 5,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def floor_of(module: str) -> int:
    parts = module.split(".")
    return 0 if len(parts) == 1 else FLOORS[parts[1]]


def imports_of(path: Path) -> set[str]:
    """The django_workers modules (or packages) that the module at ``path`` imports."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "django_workers")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.split(".")[0] != "django_workers":
                continue
            for alias in node.names:  # `from . import checks` imports a module
                candidate = f"{target}.{alias.name}"
                as_module = PACKAGE.parent / Path(*candidate.split("."))
                found.add(candidate if as_module.with_suffix(".py").exists() or as_module.is_dir() else target)
    found.discard(name)
    return found


GRAPH = {module_name(path): imports_of(path) for path in sorted(PACKAGE.rglob("*.py"))}


def test_the_graph_was_read() -> None:
    assert "django_workers.core.pool" in GRAPH["django_workers.runtime"]
    assert "django_workers.settings" in GRAPH["django_workers.runtime"]
    assert len(GRAPH) > 50


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_module_imports_from_a_higher_floor(module: str) -> None:
    higher = sorted(target for target in GRAPH[module] if floor_of(target) > floor_of(module))
    assert not higher, f"{module} (floor {floor_of(module)}) imports {higher}"


def test_no_import_cycle() -> None:
    # A module imported as a package (`from .settings import x`) depends on that package's __init__.
    def edges(module: str) -> set[str]:
        return {target for target in GRAPH[module] if target in GRAPH}

    visiting: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> None:
        if module in done:
            return
        if module in visiting:
            cycle = [*visiting[visiting.index(module) :], module]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        visiting.append(module)
        for target in sorted(edges(module)):
            # A package's own modules importing their __init__'s names is not a cycle of concepts,
            # but it is still a cycle of imports: report it too.
            visit(target)
        visiting.pop()
        done.add(module)

    for module in sorted(GRAPH):
        visit(module)
