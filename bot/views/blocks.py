"""Block Kit building blocks: user text made inert for Slack, and Slack's limits kept.

Nothing a user (or an attacker, through a GuardDuty finding or a resource tag) writes may
render as a mention, a link or formatting. In order of preference:

1. Structure. Text standing alone goes in a `plain_text` object (`plain`, `plain_section`,
   `plain_context`) or in a `rich_text` block (`rich`), whose `text` elements carry their
   style explicitly (`styled("Owner", bold=True)`, `styled(instance_id, code=True)`,
   `person(user_id)` for a mention): Slack shows their text literally.
2. Identifiers in mrkdwn (instance ids, ARNs, keys, finding types) go in a code span,
   `code(...)`: Slack formats nothing inside one, so the id stays exactly copyable; only a
   backtick, which would end the span, is neutralised.
3. User text mixed into mrkdwn (beside mentions, dates, bold labels) goes through `esc`:
   - `&`, `<`, `>` become the three entities Slack decodes, so no `<@U…>`, `<!channel>` or
     `<https://…|label>` can be formed;
   - mrkdwn has no escape for `*`, `_`, `~` and `` ` ``. Slack opens a span only at a
     delimiter that follows the start, whitespace or punctuation, and closes it only at one
     that precedes the end, whitespace or punctuation (that is why `snake_case_name` is not
     italic). U+2060 WORD JOINER is none of those and is invisible, so each of the four
     characters is flanked by one (`WJ*WJ`): it can neither open nor close a span, shows as
     typed, and copies with two invisible characters around it.

`authored` is for sentences the bot wrote whose markup is meant (a `UserError`'s
`` `/incident note INC-1 <text>` ``): only the entities; user text placed in such a sentence
must go through `inert` where it is put in. `cut` keeps every result within Slack's limits
without splitting an entity or a neutralised character.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

# Slack's documented limits (Block Kit reference and chat.postMessage).
MESSAGE_TEXT = 3_900  # chat.postMessage truncates past 4,000; stay under with room for "…"
SECTION_TEXT = 3_000
FIELD_TEXT = 2_000
HEADER_TEXT = 150
CONTEXT_ELEMENTS = 10
BUTTON_TEXT = 75
BUTTON_VALUE = 2_000
OPTION_TEXT = 75
MODAL_TITLE = 24
MESSAGE_BLOCKS = 50
VIEW_BLOCKS = 100

ELLIPSIS = "…"
WORD_JOINER = "\u2060"
FORMATTING = "*_~`"  # mrkdwn's bold, italic, strike and code delimiters
_FORMATTING = re.compile(r"[*_~`]")
_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{2,}$")


def entities(text: object) -> str:
    """`&`, `<`, `>` as the three entities Slack decodes in mrkdwn (and only those)."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def inert(text: object) -> str:
    """Each mrkdwn delimiter (`*_~` and backtick) flanked by word joiners: never a span's end."""
    return _FORMATTING.sub(lambda m: f"{WORD_JOINER}{m.group()}{WORD_JOINER}", str(text))


def esc(text: object) -> str:
    """User text for mrkdwn: shown as typed, never a mention, link or formatting."""
    return inert(entities(text))


def authored(text: object) -> str:
    """A sentence the bot wrote, its `code` and *bold* meant: only the entities escaped."""
    return entities(text)


def cut(text: str, limit: int) -> str:
    """`text` shortened to at most `limit` characters, ending in … when cut.

    Never splits an entity produced by `esc` (a dangling `&am` would show as garbage), nor
    a neutralised delimiter (`WJ*` without its closing joiner could end a span before `…`).
    """
    if len(text) <= limit:
        return text
    head = text[: limit - len(ELLIPSIS)]
    amp = head.rfind("&")
    if amp != -1 and ";" not in head[amp:]:
        head = head[:amp]
    if len(head) >= 2 and head[-2] == WORD_JOINER and head[-1] in FORMATTING:
        head = head[:-2]
    return head + ELLIPSIS


def clip(text: str, limit: int) -> str:
    """Literal text (plain or rich, no entities) shortened to `limit`, ending in … when cut."""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + ELLIPSIS


def esc_cut(text: object, limit: int) -> str:
    return cut(esc(text), limit)


def code(text: object, limit: int = SECTION_TEXT - 2) -> str:
    """An identifier as a mrkdwn code span, copyable as it is: Slack formats nothing inside
    code, so only a backtick (which would end the span) is neutralised. A span cannot cross
    a line, nor start or end with whitespace (it would not be one, and its text would be
    parsed): newlines become spaces and the ends are stripped. `limit` is the inner text's."""
    inner = entities(" ".join(str(text).splitlines()).strip())
    if not inner:
        return ""
    inner = inner.replace("`", f"{WORD_JOINER}`{WORD_JOINER}")
    return f"`{cut(inner, limit)}`"


def is_user_id(user_id: str | None) -> bool:
    return bool(user_id and _USER_ID.match(user_id))


def user(user_id: str | None) -> str:
    """A mention for a real Slack user ID; anything else (guardduty, system) as escaped text."""
    if not user_id:
        return "nobody"
    return f"<@{user_id}>" if _USER_ID.match(user_id) else esc(user_id)


def subteam(group: str | None) -> str | None:
    """`<!subteam^S123>` for a user-group ID; a handle as escaped text (Slack needs the ID);
    None without one."""
    if not group or not group.strip():
        return None
    group = group.strip()
    if group.startswith("S") and group[1:].isalnum() and group.isupper():
        return f"<!subteam^{group}>"
    return esc("@" + group.lstrip("@"))


def channel(channel_id: str | None) -> str:
    if channel_id and _CHANNEL_ID.match(channel_id):
        return f"<#{channel_id}>"
    return esc(channel_id or "?")


def plain(text: str, limit: int = SECTION_TEXT) -> dict[str, Any]:
    """A plain_text object: Slack parses no mentions or links in it, so no escaping."""
    return {"type": "plain_text", "text": cut(text or " ", limit), "emoji": True}


def mrkdwn(text: str, limit: int = SECTION_TEXT) -> dict[str, Any]:
    """A mrkdwn object for text already escaped; verbatim stops auto-linking and @-parsing."""
    return {"type": "mrkdwn", "text": cut(text or " ", limit), "verbatim": True}


def header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": plain(text, HEADER_TEXT)}


def section(text: str, *, fields: list[str] | None = None, accessory: Any = None) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "section", "text": mrkdwn(text)}
    if fields:
        block["fields"] = [mrkdwn(f, FIELD_TEXT) for f in fields[:10]]
    if accessory is not None:
        block["accessory"] = accessory
    return block


def plain_section(text: str) -> dict[str, Any]:
    """A section of plain_text: user text shown exactly as typed (emoji codes still render)."""
    return {"type": "section", "text": plain(text)}


def plain_context(*texts: str) -> dict[str, Any]:
    """A context line of plain_text elements."""
    return {
        "type": "context",
        "elements": [plain(t) for t in texts[:CONTEXT_ELEMENTS] if t] or [plain(" ")],
    }


def styled(
    text: str, *, bold: bool = False, italic: bool = False, code: bool = False
) -> dict[str, Any]:
    """A rich_text `text` element: its style is explicit, its text shown literally."""
    element: dict[str, Any] = {"type": "text", "text": text}
    style = {k: True for k, on in (("bold", bold), ("italic", italic), ("code", code)) if on}
    if style:
        element["style"] = style
    return element


def person(user_id: str | None) -> dict[str, Any]:
    """A rich_text mention of a real Slack user ID; anything else as literal text."""
    if user_id and _USER_ID.match(user_id):
        return {"type": "user", "user_id": user_id}
    return styled(user_id or "nobody")


def rich(*parts: str | dict[str, Any], block_id: str | None = None) -> dict[str, Any]:
    """A rich_text block of one paragraph: a `str` part is unstyled literal text, a dict part
    an element from `styled` or `person`. Slack parses no mrkdwn in any of it, so user text
    needs no escaping; empty parts are left out (Slack refuses empty text elements) and the
    text is kept within a section's limit."""
    elements: list[dict[str, Any]] = []
    room = SECTION_TEXT
    for part in parts:
        element = styled(part) if isinstance(part, str) else dict(part)
        if element.get("type") == "text":
            if not element["text"] or room <= 0:
                continue
            element["text"] = clip(element["text"], room)
            room -= len(element["text"])
        elements.append(element)
    block: dict[str, Any] = {
        "type": "rich_text",
        "elements": [
            {"type": "rich_text_section", "elements": elements or [styled(" ")]},
        ],
    }
    if block_id:
        block["block_id"] = block_id
    return block


def fields_section(fields: list[str]) -> dict[str, Any]:
    return {"type": "section", "fields": [mrkdwn(f, FIELD_TEXT) for f in fields[:10]]}


def context(*texts: str) -> dict[str, Any]:
    return {
        "type": "context",
        "elements": [mrkdwn(t) for t in texts[:CONTEXT_ELEMENTS] if t] or [mrkdwn(" ")],
    }


def divider() -> dict[str, Any]:
    return {"type": "divider"}


def button(
    text: str,
    action_id: str,
    value: str = "",
    *,
    style: str | None = None,
    confirm: dict[str, Any] | None = None,
) -> dict[str, Any]:
    el: dict[str, Any] = {
        "type": "button",
        "text": plain(text, BUTTON_TEXT),
        "action_id": action_id,
        "value": value[:BUTTON_VALUE],
    }
    if style:
        el["style"] = style
    if confirm:
        el["confirm"] = confirm
    return el


def actions(elements: list[dict[str, Any]], *, block_id: str | None = None) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "actions", "elements": elements[:25]}
    if block_id:
        block["block_id"] = block_id
    return block


def text_input(
    block_id: str,
    label: str,
    *,
    multiline: bool = True,
    max_length: int = 3000,
    placeholder: str | None = None,
    optional: bool = False,
) -> dict[str, Any]:
    element: dict[str, Any] = {
        "type": "plain_text_input",
        "action_id": block_id,
        "multiline": multiline,
        "max_length": max_length,
    }
    if placeholder:
        element["placeholder"] = plain(placeholder, 150)
    return {
        "type": "input",
        "block_id": block_id,
        "label": plain(label, 2000),
        "element": element,
        "optional": optional,
    }


def modal(
    callback_id: str,
    title: str,
    blocks: list[dict[str, Any]],
    *,
    submit: str = "Submit",
    private_metadata: str = "",
) -> dict[str, Any]:
    return {
        "type": "modal",
        "callback_id": callback_id,
        "title": plain(title, MODAL_TITLE),
        "submit": plain(submit, MODAL_TITLE),
        "close": plain("Cancel", MODAL_TITLE),
        "private_metadata": private_metadata[:3000],
        "blocks": blocks[:VIEW_BLOCKS],
    }


def message(text: str, blocks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """chat.postMessage/chat.update/respond kwargs; `text` (escaped) is the notification."""
    out: dict[str, Any] = {"text": cut(text, MESSAGE_TEXT)}
    if blocks is not None:
        out["blocks"] = limit_blocks(blocks, MESSAGE_BLOCKS)
    return out


def limit_blocks(blocks: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    if len(blocks) <= limit:
        return blocks
    return [*blocks[: limit - 1], context(f"{len(blocks) - limit + 1} more not shown")]


def age(since: dt.datetime, now: dt.datetime) -> str:
    """A short human age: 45s, 12m, 3h 5m, 2d 4h."""
    seconds = max(0, int((now - since).total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h" if hours else f"{days}d"


def when(ts: dt.datetime) -> str:
    """A UTC time plus Slack's localized date token (shown in each reader's time zone)."""
    epoch = int(ts.timestamp())
    fallback = ts.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{epoch}^{{date_short_pretty}} {{time}}|{fallback}>"


def utc(ts: dt.datetime) -> str:
    return ts.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
