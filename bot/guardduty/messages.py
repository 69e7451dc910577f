"""Findings posted into the incident channel by trusted bots (AWS Chatbot, SNS-to-Slack).

Only messages from the bot IDs in `slack.trusted_bot_ids`, in the incident channel, are
read; anyone else's message is never treated as a finding, whatever it contains. The JSON
may sit in the text or in an attachment (text, fallback, pretext or a field), possibly in a
code block and with Slack's escaping and link formatting applied.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Collection, Iterator, Mapping
from typing import Any

log = logging.getLogger(__name__)

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)
# Slack's link markup: <url|label> shows the label (the text the sender wrote), <url> the url.
_LINK = re.compile(r"<((?:https?|mailto):[^|>]+)(?:\|([^>]*))?>")
MAX_TEXT = 256 * 1024


def is_trusted_finding_message(
    event: Mapping[str, Any], *, trusted_bot_ids: Collection[str], channel_id: str | None
) -> bool:
    """A plain new message from a trusted bot in the incident channel."""
    if event.get("type") != "message" or not trusted_bot_ids:
        return False
    if event.get("subtype") not in (None, "bot_message"):
        return False  # edits, deletions, joins...
    if channel_id and event.get("channel") != channel_id:
        return False
    return event.get("bot_id") in trusted_bot_ids


def _texts(event: Mapping[str, Any]) -> Iterator[str]:
    if isinstance(event.get("text"), str):
        yield event["text"]
    for attachment in event.get("attachments") or []:
        if not isinstance(attachment, Mapping):
            continue
        for key in ("text", "fallback", "pretext"):
            if isinstance(attachment.get(key), str):
                yield attachment[key]
        for field in attachment.get("fields") or []:
            if isinstance(field, Mapping) and isinstance(field.get("value"), str):
                yield field["value"]


def _unescape(text: str) -> str:
    text = _LINK.sub(lambda m: m.group(2) if m.group(2) is not None else m.group(1), text)
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _candidates(text: str) -> Iterator[str]:
    text = _unescape(text[:MAX_TEXT])
    fenced = _FENCE.findall(text)
    yield from fenced
    if not fenced:
        start, end = text.find("{"), text.rfind("}")
        if 0 <= start < end:
            yield text[start : end + 1]


def finding_payloads(event: Mapping[str, Any]) -> list[Any]:
    """Every JSON object found in the message, in order (duplicates dropped)."""
    found: list[Any] = []
    seen: set[str] = set()
    for text in _texts(event):
        for candidate in _candidates(text):
            try:
                value = json.loads(candidate)
            except (json.JSONDecodeError, RecursionError):
                continue
            key = json.dumps(value, sort_keys=True)
            if isinstance(value, dict) and key not in seen:
                seen.add(key)
                found.append(value)
    return found
