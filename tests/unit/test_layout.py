"""The house's layout holds: no import circles in handlers/ or servekit/, and the folders depend on each other
in one direction only (runtime <- build/serve <- examples <- measure <- cli), read from the code's own imports."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("handlers", "servekit")
# Which parts may not import which (prefixes of module names).
FORBIDDEN = {
    "handlers": ("servekit",),
    "servekit.build": ("servekit.examples", "servekit.measure", "servekit.cli"),
    "servekit.serve": ("servekit.examples", "servekit.measure", "servekit.cli", "servekit.build"),
    "servekit.examples": ("servekit.measure", "servekit.cli"),
    "servekit.measure": ("servekit.cli",),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    """Every module of the two packages by dotted name."""
    return {module_name(p): p for package in PACKAGES for p in (REPO / package).rglob("*.py")}


def _type_checking_only(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def imported(path: Path, known: set[str]) -> set[str]:
    """The project modules a file imports, at the top or inside functions (not under TYPE_CHECKING)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _type_checking_only(node):
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return {name for name in found if name in known}


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports."""
    mods = modules()
    known = set(mods)
    return {name: {m for m in imported(path, known) if m != name}
            for name, path in mods.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_the_cycle_finder_finds_a_planted_circle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles() -> None:
    assert cycles(import_graph()) == []


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_each_part_imports_only_what_it_stands_on(part: str) -> None:
    graph = import_graph()
    wrong = sorted(f"{module} imports {target}" for module, targets in graph.items()
                   if module == part or module.startswith(part + ".")
                   for target in targets for banned in FORBIDDEN[part]
                   if target == banned or target.startswith(banned + "."))
    assert wrong == []


def test_the_parts_exist() -> None:
    names = set(modules())
    for part in ("servekit.build", "servekit.serve", "servekit.measure", "servekit.examples", "servekit.cli",
                 "handlers.bodies", "handlers.handler"):
        assert part in names
