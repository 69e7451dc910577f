"""The import graph of the app's code: no two modules import each other (directly or round a
loop), and imports point down the layers, bot > commands > containment > storage.

Every import counts: top-level, inside functions and under `if TYPE_CHECKING:`, since a
lazy import is still a dependency a reader has to follow. Importing `a.b.c` is an edge to
module `a.b.c` only (not to the packages `a` and `a.b` that Python initialises on the way).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("storage", "containment", "commands", "bot")  # each may import only those before it

# Cycles that are known and due to go (issue 14, the Slack writer and wiring work). This list
# can only shrink: a cycle not listed fails the test, and so does a listed one that is gone.
KNOWN_CYCLES: set[frozenset[str]] = {
    # bot.app calls bot.listeners.register_all; bot.listeners types with IncidentBotApp.
    frozenset({"bot.app", "bot.listeners"}),
    # intake hands findings to publisher_for; the publisher asks intake_is_hot (lazily).
    frozenset({"bot.guardduty.intake", "bot.guardduty.publisher"}),
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for layer in LAYERS for p in (ROOT / layer).rglob("*.py")}


def imported_names(tree: ast.AST, module: str, is_package: bool) -> Iterator[str]:
    """Every dotted name an import statement anywhere in `tree` may refer to."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                package = module if is_package else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            # `from a import b` names module a.b when it exists, else something in a.
            yield from (f"{base}.{alias.name}" for alias in node.names)


def import_graph() -> dict[str, set[str]]:
    known = modules()

    def resolve(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in known.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        names = imported_names(tree, module, path.name == "__init__.py")
        graph[module] = {m for n in names if (m := resolve(n)) and m != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            nxt = next(edges, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
    return found


def test_no_import_cycles_beyond_the_known_ones() -> None:
    found = set(cycles(import_graph()))
    assert sorted(map(sorted, found - KNOWN_CYCLES)) == [], "new import cycle(s)"
    assert sorted(map(sorted, KNOWN_CYCLES - found)) == [], "gone: remove from KNOWN_CYCLES"


def test_imports_point_down_the_layers() -> None:
    rank = {layer: i for i, layer in enumerate(LAYERS)}
    upward = sorted(
        f"{module} -> {dep}"
        for module, deps in import_graph().items()
        for dep in deps
        if rank[dep.split(".")[0]] > rank[module.split(".")[0]]
    )
    assert upward == []


def test_the_checks_see_cycles_and_function_level_imports() -> None:
    """The graph is real: a lazy import inside a function is an edge, and a loop is found."""
    source = "def f():\n    from commands.b import g\n"
    tree = ast.parse(source)
    assert list(imported_names(tree, "commands.a", False)) == ["commands.b.g"]
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [frozenset({"a", "b", "c"})]
    assert cycles({"a": {"b"}, "b": set()}) == []
