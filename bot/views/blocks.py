"""Block Kit building blocks: escaping user text for mrkdwn and keeping within Slack's limits.

Every piece of user-supplied text goes through `esc` before it lands in a mrkdwn field, so a
title like `<!channel> <https://evil|click>` shows literally and never pings or links, and
through `cut` so Slack never rejects a message for being too long.
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
_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{2,}$")


def esc(text: object) -> str:
    """Escape text for mrkdwn: Slack decodes exactly these three entities."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def cut(text: str, limit: int) -> str:
    """`text` shortened to at most `limit` characters, ending in … when cut.

    Never splits an entity produced by `esc` (a dangling `&am` would show as garbage).
    """
    if len(text) <= limit:
        return text
    head = text[: limit - len(ELLIPSIS)]
    amp = head.rfind("&")
    if amp != -1 and ";" not in head[amp:]:
        head = head[:amp]
    return head + ELLIPSIS


def esc_cut(text: object, limit: int) -> str:
    return cut(esc(text), limit)


def user(user_id: str | None) -> str:
    """A mention for a real Slack user ID; anything else (guardduty, system) as escaped text."""
    if not user_id:
        return "nobody"
    return f"<@{user_id}>" if _USER_ID.match(user_id) else esc(user_id)


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
