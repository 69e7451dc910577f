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
import re
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


def _sent_text(tree: ast.AST) -> tuple[dict[int, str], set[int]]:
    """Rule 1: the texts in what goes to Slack, by line; and the ids of the nodes inside
    calls that are not Slack text (for rule 2)."""
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
    return found, allowed


def _report(found: dict[int, str]) -> list[str]:
    return [f"{line}: {code[:100]}" for line, code in sorted(found.items())]


def listener_text(source: str) -> list[str]:
    """`line: code` of every place the source builds text for Slack (the rule above)."""
    tree = ast.parse(source)
    found, allowed = _sent_text(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr) and id(node) not in allowed:
            found.setdefault(node.lineno, ast.unparse(node))
    return _report(found)


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


# The rest of bot/ (pollers, sweepers, the approval service, the wiring) decides what is said
# and hands the one writer what a view built. The rule, for every module under bot/ outside
# bot/views/ and bot/listeners/ (which have their own):
# 1. no string literal and no f-string in what goes to Slack: the message argument and text
#    keywords of the writer's methods (`runtime.slack.post/reply/update/call`), and the
#    arguments of the Web API calls (`chat_*`, `files_upload_v2`), of `UserError`,
#    `refresh_incident`, `send_notice` and `bk.message` (addresses and ids left out);
# 2. no Block Kit written out: no dict literal whose "type" is a Block Kit block, element or
#    text object;
# 3. of bot/views/blocks.py (the escapers and builders) only `message` (kwargs from a view's
#    text and blocks, kept to Slack's limits) and `is_user_id` (a test, no text) are used.
# F-strings elsewhere are not checked here (logs, CLI and drill output, incident titles and
# exception messages abound); a sentence built in a variable and then sent is caught by
# rule 3 when it escapes or mentions anything, which any sentence holding user text has to.
# The offline drill stands in for Slack itself: bot/drill/slack_clicks.py writes the payloads
# Slack would send the app (a clicked button's "type"), so rule 2 leaves it out.

BOT = ROOT / "bot"
OWN_RULES = ("views", "listeners")
BOT_TO_SLACK = {"UserError", "refresh_incident", "send_notice", "message", "files_upload_v2"}
WRITER = {"post": 1, "reply": 2, "update": 2, "call": None}  # where the message argument is
ADDRESS = NOT_SHOWN | {"channel", "thread_ts", "ts", "metadata", "patient", "stats"}
BLOCK_KIT = {
    "section",
    "context",
    "actions",
    "header",
    "divider",
    "image",
    "input",
    "rich_text",
    "rich_text_section",
    "rich_text_list",
    "rich_text_quote",
    "rich_text_preformatted",
    "mrkdwn",
    "plain_text",
    "plain_text_input",
    "button",
    "static_select",
    "users_select",
    "modal",
    "home",
}
PLAYS_SLACK = {"bot/drill/slack_clicks.py"}  # rule 2 only
VIEW_TOOLS = {"message", "is_user_id"}


def _to_slack(call: ast.Call) -> list[ast.AST]:
    """The arguments of `call` whose text Slack shows ([] when it is not a Slack call)."""
    name = _callee(call)
    shown = [k.value for k in call.keywords if k.arg not in ADDRESS]
    if name in WRITER and isinstance(call.func, ast.Attribute):
        if not ast.unparse(call.func.value).endswith("slack"):  # runtime.slack, slack
            return []
        at = WRITER[name]
        return shown + (call.args[at:] if at is not None else [])
    if name in BOT_TO_SLACK or name.startswith("chat_"):
        return shown + call.args
    return []


def _block_kit(tree: ast.AST) -> dict[int, str]:
    return {
        node.lineno: ast.unparse(node)
        for node in ast.walk(tree)
        if isinstance(node, ast.Dict)
        and any(
            isinstance(k, ast.Constant)
            and k.value == "type"
            and isinstance(v, ast.Constant)
            and v.value in BLOCK_KIT
            for k, v in zip(node.keys, node.values, strict=True)
        )
    }


def _view_tools(tree: ast.AST) -> dict[int, str]:
    """Uses of bot/views/blocks.py beyond VIEW_TOOLS, however it was imported."""
    names: set[str] = set()  # local names bound to the module
    found: dict[int, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "bot.views":
            names.update(a.asname or a.name for a in node.names if a.name == "blocks")
        elif isinstance(node, ast.ImportFrom) and node.module == "bot.views.blocks":
            if any(alias.name not in VIEW_TOOLS for alias in node.names):
                found[node.lineno] = ast.unparse(node)
        elif isinstance(node, ast.Import):
            names.update(a.asname or a.name for a in node.names if a.name == "bot.views.blocks")
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and ast.unparse(node.value) in names
            and node.attr not in VIEW_TOOLS
        ):
            found[node.lineno] = ast.unparse(node)
    return found


def bot_text(source: str, *, plays_slack: bool = False) -> list[str]:
    """`line: code` of every place a bot module outside views and listeners builds Slack
    text (the rule above)."""
    tree = ast.parse(source)
    found = {
        text.lineno: ast.unparse(text)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        for arg in _to_slack(node)
        for text in _texts(arg)
    }
    found.update(_view_tools(tree))
    if not plays_slack:
        found.update(_block_kit(tree))
    return _report(found)


def test_bot_builds_no_slack_text_outside_views() -> None:
    offenders = {}
    for path in sorted(BOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.split("/")[1] in OWN_RULES:
            continue
        if found := bot_text(path.read_text(), plays_slack=rel in PLAYS_SLACK):
            offenders[rel] = found
    assert not offenders, offenders


def test_the_bot_text_check_sees_what_it_should() -> None:
    seen = bot_text(
        "from bot.views import blocks as bk\n"
        "def f(runtime, slack, key, who, types):\n"
        "    runtime.slack.reply('C1', '1.2', bk.message(f'{bk.user(who)} joined {key}'))\n"
        "    slack.call('chat_postMessage', channel='C1', text='New findings.')\n"
        "    return {'type': 'section', 'text': {'type': 'mrkdwn', 'text': key}}\n"
        "def g(runtime, key):\n"
        "    refresh_incident(runtime, key, line='✅ Answered.')\n"
        "    raise UserError(f'{key} is closed.')\n"
    )
    assert [s.split(":")[0] for s in seen] == ["3", "4", "5", "7", "8"], seen
    assert any("bk.user" in s for s in seen), seen
    quiet = bot_text(
        "from bot.views import blocks as bk\n"
        "from bot.views.guardduty import findings_joined_message\n"
        "def f(runtime, slack, key, who, types, log, headers):\n"
        "    if bk.is_user_id(who):\n"
        "        runtime.slack.reply('C1', '1.2', bk.message(views.joined(key, who)))\n"
        "    slack.call('chat_postMessage', channel='C1', **findings_joined_message(key, types))\n"
        "    log.warning(f'{key}: {who} not told')\n"
        "    headers.update({'content-type': 'text/plain'})\n"
        "    return {'type': 'block_actions', 'actions': []}\n"
    )
    assert quiet == [], quiet


# commands/ returns structured values: no Slack markup in its strings. Its sentences (a
# `UserError`'s) are shown through bot/views/replies.py (`bk.authored`, entities escaped), so
# a mention, channel link, special mention or link written here would be markup nothing
# escapes. Parsing what Slack sends (a `re.compile` pattern for `<@U…>`) and docstrings are
# not text shown; HTML is not Slack's (the review page's `<!DOCTYPE html>`: Slack's specials
# are lower case). Not checked: `*`, `_`, `~` and backtick spans, which Markdown shares (the
# review's Markdown export, file-name patterns like `_{id}_`, the code spans of usage hints
# such as `/incident note INC-1 <text>` that replies show as meant).

COMMANDS = ROOT / "commands"
# A mention, a channel, a special mention (<!here>, <!subteam^…>, <!date^…>), a link.
SLACK_MARKUP = re.compile(r"<[@#]|<![a-z]|<(?:https?|mailto):")


def _docstrings(tree: ast.AST) -> set[int]:
    return {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }


def commands_slack_syntax(source: str) -> list[str]:
    """`line: code` of Slack markup or Block Kit in a commands/ module's strings."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func) in ("re.compile", "compile"):
            skip.update(id(t) for arg in node.args for t in ast.walk(arg))
    found = _block_kit(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):  # read whole, each placeholder as a word
            skip.update(id(part) for part in node.values)
            text = "".join(v.value if isinstance(v, ast.Constant) else "x" for v in node.values)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        else:
            continue
        if id(node) not in skip and SLACK_MARKUP.search(text):
            found.setdefault(node.lineno, ast.unparse(node))
    return _report(found)


def test_commands_write_no_slack_markup() -> None:
    offenders = {
        path.relative_to(ROOT).as_posix(): found
        for path in sorted(COMMANDS.rglob("*.py"))
        if (found := commands_slack_syntax(path.read_text()))
    }
    assert not offenders, offenders


def test_the_commands_markup_check_sees_what_it_should() -> None:
    seen = commands_slack_syntax(
        "def f(user, key, group):\n"
        "    a = f'Owner: <@{user}>'\n"
        "    b = f'<!subteam^{group}> {key} opened'\n"
        "    c = 'See <https://example.com|the runbook>.'\n"
        "    d = f'Ask in <#{channel}>.'\n"
        "    e = {'type': 'section', 'text': key}\n"
    )
    assert [s.split(":")[0] for s in seen] == ["2", "3", "4", "5", "6"], seen
    quiet = commands_slack_syntax(
        '"""Reads `<@U123>` mentions."""\n'
        "import re\n"
        "MENTION = re.compile(r'^<@([UW][A-Z0-9]{2,})>$')\n"
        "def f(key, arn):\n"
        "    a = f'Add a note: `/incident note {key} <text>`.'\n"
        "    b = '<!DOCTYPE html>'\n"
        "    c = f'{arn}:role/*'\n"
    )
    assert quiet == [], quiet
