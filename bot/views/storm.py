"""The storm card: one message standing for many new GuardDuty incidents at once.

Grouped by finding type and severity band, most severe first; each incident by its key,
linked to its own card once that is posted. Finding types are attacker-influenced text and
are escaped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bot.views import blocks as bk

ICON = {"low": "🟢", "medium": "🟡", "high": "🟠", "critical": "🔴"}
BAND_ORDER = {"critical": 0, "high": 1, "medium": 2, "low": 3}
ENTRY_ROOM = bk.SECTION_TEXT - 200  # a section's list of incidents; the rest is its title


@dataclass(frozen=True)
class StormEntry:
    key: str
    link: str | None  # the permalink of its own card (None: not posted yet)


@dataclass(frozen=True)
class StormGroup:
    finding_type: str
    band: str
    entries: Sequence[StormEntry]


@dataclass(frozen=True)
class StormView:
    count: int  # incidents on the card
    posted: int  # of which have their own card
    started: dt.datetime
    last_opened: dt.datetime
    live: bool  # still growing
    groups: Sequence[StormGroup]


def span_text(view: StormView) -> str:
    seconds = (view.last_opened - view.started).total_seconds()
    if seconds <= 60:
        return "in the last minute" if view.live else "within a minute"
    return f"in {max(2, round(seconds / 60))} minutes"


def storm_message(view: StormView) -> dict[str, Any]:
    noun = "incident" if view.count == 1 else "incidents"
    title = f"{view.count} new GuardDuty {noun} {span_text(view)}"
    status = (
        f"More than Slack lets the channel take one card at a time. Their own cards follow, "
        f"most severe first: {view.posted} of {view.count} posted. Since {bk.utc(view.started)}."
    )
    if view.posted == view.count:
        status = f"Every one has its own card (linked). Since {bk.utc(view.started)}."
    blocks: list[dict[str, Any]] = [bk.header(f"🌩️ {title}"), bk.context(status)]
    room = bk.MESSAGE_BLOCKS - len(blocks) - 1  # one left for "…and N more"
    unlisted = 0
    for group in sorted(view.groups, key=lambda g: (BAND_ORDER.get(g.band, 9), g.finding_type)):
        for part, chunk in enumerate(_chunks(group.entries)):
            if room <= 0:
                unlisted += len(chunk)
                continue
            blocks.append(bk.section(_group_title(group, part) + "\n" + " · ".join(chunk)))
            room -= 1
    if unlisted:
        blocks.append(bk.context(f"…and {unlisted} more: `/incident list` shows every one."))
    return bk.message(f"🌩️ {title}", blocks)


def _group_title(group: StormGroup, part: int) -> str:
    kind = bk.code(group.finding_type, 150)
    band = group.band.capitalize()
    if part:
        return f"{ICON.get(group.band, '')} *{band}* · {kind} (continued)"
    n = len(group.entries)
    return f"{ICON.get(group.band, '')} *{band}* · {kind} · {n} incident{'s' if n != 1 else ''}"


def _entry(entry: StormEntry) -> str:
    return f"<{entry.link}|{entry.key}>" if entry.link else entry.key


def _chunks(entries: Sequence[StormEntry]) -> list[list[str]]:
    chunks: list[list[str]] = [[]]
    size = 0
    for entry in entries:
        text = _entry(entry)
        if chunks[-1] and size + len(text) + 3 > ENTRY_ROOM:
            chunks.append([])
            size = 0
        chunks[-1].append(text)
        size += len(text) + 3
    return chunks if chunks[0] else []
