"""The Slack text of a timeline anchor, and reading one back for `incident-bot verify`.

The line is meant for people (what was witnessed) and for verify (it parses the same line), so
both directions live here, next to each other.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from typing import Any

from commands.anchors import Anchor

_LINE = re.compile(
    r"Timeline anchor for INC-(?P<n>\d+) \((?P<milestone>[a-z]+)\): (?P<count>\d+) events?, "
    r"head `(?P<head>[0-9a-f]{64})`, key `(?P<key>[^`]+)`, at (?P<at>\S+)"
)


def anchor_text(anchor: Anchor) -> str:
    at = anchor.at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    plural = "" if anchor.count == 1 else "s"
    return (
        f"🔏 Timeline anchor for {anchor.incident_key} ({anchor.milestone}): "
        f"{anchor.count} event{plural}, head `{anchor.head}`, key `{anchor.key_id}`, at {at}. "
        "_`incident-bot verify` compares the database against this message._"
    )


def parse_anchor(text: str) -> Anchor | None:
    m = _LINE.search(text or "")
    if m is None:
        return None
    return Anchor(
        incident_number=int(m["n"]),
        count=int(m["count"]),
        head=m["head"],
        key_id=m["key"],
        milestone=m["milestone"],
        at=dt.datetime.fromisoformat(m["at"].rstrip(".").replace("Z", "+00:00")),
    )


def anchors_in(messages: Iterable[Mapping[str, Any]], *, incident_number: int) -> list[Anchor]:
    """The anchors of one incident among a thread's messages (others' messages are ignored)."""
    found = (parse_anchor(str(m.get("text") or "")) for m in messages)
    return [a for a in found if a is not None and a.incident_number == incident_number]
