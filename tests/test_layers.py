"""The import graph of the app's code: no two modules import each other (directly or round a
loop), and imports point down the layers, bot > commands > containment > storage.

Imports inside functions count (a lazy import is still a dependency a reader has to follow).
Imports under `if TYPE_CHECKING:` count for the layers but not for cycles: they are erased at
run time, and naming a type across modules is not a loop a reader has to untangle. A script's
`if __name__ == "__main__":` block is its entry point, not a dependency. Importing `a.b.c` is
an edge to module `a.b.c` only (not to the packages `a` and `a.b` initialised on the way).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("storage", "containment", "commands", "bot")  # each may import only those before it


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for layer in LAYERS for p in (ROOT / layer).rglob("*.py")}


def _is_main_guard(node: ast.AST) -> bool:
    """`if __name__ == "__main__":` — a script's entry point, not a dependency of the module."""
    return (
        isinstance(node, ast.If)
        and isinstance(node.test, ast.Compare)
        and isinstance(node.test.left, ast.Name)
        and node.test.left.id == "__name__"
    )


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def imported_names(
    tree: ast.AST, module: str, is_package: bool, *, types: bool = True
) -> Iterator[str]:
    """Every dotted name an import statement anywhere in `tree` may refer to (entry-point
    blocks left out; `if TYPE_CHECKING:` blocks too unless `types`)."""
    if isinstance(tree, ast.Module):
        tree.body = [
            node
            for node in tree.body
            if not _is_main_guard(node) and (types or not _is_type_checking(node))
        ]
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


def import_graph(*, types: bool = True) -> dict[str, set[str]]:
    known = modules()

    def resolve(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in known.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        names = imported_names(tree, module, path.name == "__init__.py", types=types)
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


def test_no_import_cycles() -> None:
    assert sorted(map(sorted, cycles(import_graph(types=False)))) == [], "import cycle(s)"


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


# -- Slack text only in bot/views/ ----------------------------------------------------------
#
# Listeners ack, parse and delegate; what a user reads is written in bot/views/. The rule, as
# the syntax tree sees it, for every module under bot/listeners/:
# 1. no string literal and no f-string in what goes to Slack: the arguments of `Reply`,
#    `UserError`, `ack`, `respond`, `say`, `send`, `refresh_incident`, the Block Kit builders
#    and the Web API calls (`chat_*`, `files_upload_v2`, `upload`), except in the keywords
#    that are not shown (`response_action`, ids, timeline fields);
# 2. no f-string anywhere else either (a sentence assigned to a variable and passed on is
#    still built here), except as an argument of what is not Slack text: logging, Python
#    exceptions, background-job descriptions, timeline records, and the subcommand table.

LISTENERS = ROOT / "bot" / "listeners"
TO_SLACK = {
    "Reply",
    "UserError",
    "ack",
    "respond",
    "say",
    "send",
    "refresh_incident",
    "upload",
    "files_upload_v2",
    "modal",
    "text_input",
    "section",
    "context",
    "header",
    "plain",
    "mrkdwn",
    "button",
    "message",
}
NOT_SHOWN = {  # keywords whose value Slack never shows
    "response_action",
    "action_id",
    "callback_id",
    "block_id",
    "description",
    "kind",
    "summary",
    "details",
    "actor",
}
NOT_SLACK = {  # callees whose string arguments are not Slack text
    "debug",
    "info",
    "warning",
    "error",
    "exception",
    "RuntimeError",
    "ValueError",
    "defer",
    "submit",
    "record_on_timeline",
    "append_event",
    "record_card",
    "add_note",
    "spec",
    "action_invocation",
    "view_invocation",
    "take_incident",
    "_read",
    "compile",
}


def _callee(call: ast.Call) -> str:
    func = call.func
    return func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")


def _texts(node: ast.AST) -> Iterator[ast.AST]:
    """String literals and f-strings in `node` (dict keys left out: ids, not text; an
    f-string's literal parts are reported as the f-string)."""
    skip: set[int] = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Dict):
            skip.update(id(t) for key in sub.keys if key is not None for t in ast.walk(key))
        if isinstance(sub, ast.JoinedStr):
            skip.update(id(part) for part in sub.values)
        if id(sub) in skip:
            continue
        if isinstance(sub, ast.JoinedStr) or (
            isinstance(sub, ast.Constant) and isinstance(sub.value, str) and sub.value
        ):
            yield sub


def listener_text(source: str) -> list[str]:
    """`line: code` of every place the source builds text for Slack (the rule above)."""
    tree = ast.parse(source)
    found: dict[int, str] = {}
    allowed: set[int] = set()  # ids of f-strings in calls that are not Slack text
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _callee(node)
        shown = [*node.args, *(k.value for k in node.keywords if k.arg not in NOT_SHOWN)]
        if name in TO_SLACK or name.startswith("chat_"):
            for arg in shown:
                for text in _texts(arg):
                    found[text.lineno] = ast.unparse(text)
        if name in NOT_SLACK:
            allowed.update(id(t) for arg in shown for t in ast.walk(arg))
        allowed.update(
            id(t) for k in node.keywords if k.arg in NOT_SHOWN for t in ast.walk(k.value)
        )
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr) and id(node) not in allowed:
            found.setdefault(node.lineno, ast.unparse(node))
    return [f"{line}: {code[:100]}" for line, code in sorted(found.items())]


def test_listeners_build_no_slack_text() -> None:
    offenders = {
        path.name: found
        for path in sorted(LISTENERS.glob("*.py"))
        if (found := listener_text(path.read_text()))
    }
    assert not offenders, offenders


def test_the_listener_text_check_sees_what_it_should() -> None:
    seen = listener_text(
        "def f(inv, key, ack):\n"
        "    ack(response_action='errors', errors={'note': 'Write the note first.'})\n"
        "    line = f'Noted on {key}.'\n"
        "    raise UserError('Say which incident.')\n"
    )
    assert [s.split(":")[0] for s in seen] == ["2", "3", "4"], seen
    quiet = listener_text(
        "def f(inv, key, ack, log):\n"
        "    log.warning(f'{key} failed')\n"
        "    ack(response_action='errors', errors=views.note_errors())\n"
        "    inv.defer(f'note on {key}', lambda: None)\n"
        "    raise UserError(replies.note_needed(key))\n"
    )
    assert quiet == [], quiet
