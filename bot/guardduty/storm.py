"""Storm grouping: when new incidents outrun what the channel can take one card at a time.

Slack lets a channel take about one message a second. When more than `threshold` new
incidents open within `window` seconds, the publisher stops waiting for each card: it posts
one storm card listing every incident of the storm (grouped by finding type and severity,
most severe first), keeps it current with `chat.update` every `refresh` seconds at most, and
posts the incidents' own cards behind it, most severe first, at the channel's pace; each
entry links to its card once posted. A storm ends when `window` seconds pass without a new
incident; its card is refreshed until every entry links to its card, at the live pace until
every incident of the storm is on it (one that joined while the card was being written, or
while a stalled worker could not write, must not wait for the quiet refresh).

`StormWatch` is the per-process state (the publisher's lock guards it); `storm_view` reads
what the card shows. Several serving processes each keep their own storm card.
"""

from __future__ import annotations

import datetime as dt
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.views.storm import StormEntry, StormGroup, StormView
from commands.findings.normalize import severity_band
from storage.models import Finding, Incident

THRESHOLD = 5  # new incidents per window that get their own card at once
WINDOW = 60.0  # seconds
REFRESH = 2.0  # seconds between storm card writes (Tier 3 leaves room for card updates)
QUIET_REFRESH = 10.0  # once the storm is over and its cards are being posted


@dataclass
class Storm:
    started: float  # publisher clock
    started_at: dt.datetime
    last_new: float
    last_opened_at: dt.datetime
    members: list[int] = field(default_factory=list)
    member_set: set[int] = field(default_factory=set)
    channel: str | None = None
    ts: str | None = None  # the storm card, once posted
    dirty: bool = True
    shown_live: bool = True  # the last write showed it taking new incidents
    last_write: float = float("-inf")
    listed: set[int] = field(default_factory=set)  # members shown by a successful write
    done: bool = False  # every member linked to its card on a written storm card

    def add(self, incident_id: int) -> None:
        if incident_id not in self.member_set:
            self.member_set.add(incident_id)
            self.members.append(incident_id)
            self.dirty = True


class StormWatch:
    """When a storm starts and ends, and who is on its card; see the module docstring."""

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        now: Callable[[], dt.datetime],
        threshold: int = THRESHOLD,
        window: float = WINDOW,
        refresh: float = REFRESH,
    ) -> None:
        self.clock = clock
        self.now = now
        self.threshold = threshold
        self.window = window
        self.refresh = refresh
        self.storm: Storm | None = None
        self._opened: deque[tuple[float, int]] = deque()

    def opened(self, incident_id: int) -> None:
        """A new incident: it joins the live storm, or starts one past the threshold."""
        t = self.clock()
        self._opened.append((t, incident_id))
        while self._opened and t - self._opened[0][0] > self.window:
            self._opened.popleft()
        storm = self.live()
        if storm is None and len(self._opened) > self.threshold:
            if self.storm is not None and not self.storm.done:
                storm = self.storm  # the last storm's card is still catching up: reuse it
            else:
                at = self.now()
                storm = self.storm = Storm(started=t, started_at=at, last_new=t, last_opened_at=at)
            for _, member in self._opened:  # the window that made it a storm is on its card
                storm.add(member)
        if storm is not None:
            storm.add(incident_id)
            storm.last_new = t
            storm.last_opened_at = self.now()

    def live(self) -> Storm | None:
        """The storm still taking new incidents (None: none now)."""
        storm = self.storm
        if storm is None or self.clock() - storm.last_new > self.window:
            return None
        return storm

    def in_storm(self, incident_id: int) -> bool:
        return self.storm is not None and incident_id in self.storm.member_set

    def touched(self, incident_id: int) -> None:
        """A member's findings or card changed: its storm card is stale."""
        if self.in_storm(incident_id):
            assert self.storm is not None
            self.storm.dirty = True
            self.storm.done = False

    def due(self) -> float | None:
        """Seconds until the storm card should be written (None: nothing to write).

        A pure read: both workers and `wait_idle` ask it while the card is being written."""
        storm = self.storm
        if storm is None or storm.done:
            return None
        if storm.ts is None:
            return 0.0
        live = self.live() is not None
        ended_unshown = not live and storm.shown_live  # the card must say it ended
        if not (storm.dirty or ended_unshown):
            return None
        missing = len(storm.listed) < len(storm.member_set)  # members the card never showed
        refresh = self.refresh if live or missing else max(self.refresh, QUIET_REFRESH)
        return max(0.0, storm.last_write + refresh - self.clock())


def storm_view(
    session: Session,
    storm: Storm,
    members: list[int],
    *,
    live: bool,
    link: Callable[[str, str], str | None],
) -> StormView:
    """What the storm card shows now; `link(channel, ts)` makes a card's permalink."""
    incidents = {
        row.id: row
        for row in session.execute(
            select(Incident.id, Incident.number, Incident.channel_id, Incident.card_ts).where(
                Incident.id.in_(members)
            )
        )
    }
    groups: dict[tuple[str, str], dict[int, float]] = {}
    for incident_id, finding_type, severity in session.execute(
        select(Finding.incident_id, Finding.type, Finding.severity).where(
            Finding.incident_id.in_(members)
        )
    ):
        members = groups.setdefault((finding_type, severity_band(severity)), {})
        members[incident_id] = max(severity, members.get(incident_id, 0.0))
    posted = sum(1 for row in incidents.values() if row.card_ts)

    def entry(incident_id: int) -> StormEntry:
        row = incidents[incident_id]
        url = link(row.channel_id, row.card_ts) if row.channel_id and row.card_ts else None
        return StormEntry(f"INC-{row.number}", url)

    return StormView(
        count=len(incidents),
        posted=posted,
        started=storm.started_at,
        last_opened=storm.last_opened_at,
        live=live,
        groups=[
            StormGroup(
                finding_type=finding_type,
                band=band,
                entries=[
                    entry(i)
                    for i in sorted(members, key=lambda i: (-members[i], incidents[i].number))
                    if i in incidents
                ],
            )
            for (finding_type, band), members in groups.items()
        ],
    )


def permalink(workspace_url: str | None, channel: str, ts: str) -> str | None:
    """Slack's permalink of a message (None without the workspace's URL)."""
    if not workspace_url:
        return None
    return f"{workspace_url.rstrip('/')}/archives/{channel}/p{ts.replace('.', '')}"
