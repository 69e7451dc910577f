"""An incident's milestones, read from its timeline events (the record), and their durations.

- started: when GuardDuty first saw the activity (the earliest `eventFirstSeen` of the
  incident's findings); None for incidents a person opened.
- opened: the `incident.opened` event.
- acknowledged: the first event by a person (a Slack user id) at or after the opening.
- approved: the first `containment.approved` event.
- contained: the first `incident.status` event moving to `contained`.
- resolved: the first `incident.status` event moving to `resolved` or `closed`.
- the regulator clock: `incident.personal_data` (its `aware_at`) + the configured hours,
  against the `incident.notified` event.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

HUMAN_ACTOR = re.compile(r"^[UW][A-Z0-9]{2,}$")  # Slack user ids; bots are named words

RegulatorState = Literal["on time", "late", "overdue", "running"]


@dataclass(frozen=True)
class RegulatorClock:
    aware_at: dt.datetime
    due_at: dt.datetime
    notified_at: dt.datetime | None
    now: dt.datetime

    @property
    def state(self) -> RegulatorState:
        if self.notified_at is not None:
            return "on time" if self.notified_at <= self.due_at else "late"
        return "overdue" if self.now > self.due_at else "running"

    @property
    def met(self) -> bool | None:
        """True: notice sent on time; False: late or overdue; None: still running."""
        return {"on time": True, "late": False, "overdue": False}.get(self.state)


@dataclass(frozen=True)
class Milestones:
    opened_at: dt.datetime
    started_at: dt.datetime | None = None
    acknowledged_at: dt.datetime | None = None
    approved_at: dt.datetime | None = None
    contained_at: dt.datetime | None = None
    resolved_at: dt.datetime | None = None
    regulator: RegulatorClock | None = None

    def durations(self) -> dict[str, dt.timedelta | None]:
        """Time to detect, acknowledge, approve, contain, resolve (None: never happened)."""

        def since(start: dt.datetime | None, end: dt.datetime | None) -> dt.timedelta | None:
            return end - start if start is not None and end is not None else None

        return {
            "detect": since(self.started_at, self.opened_at),
            "acknowledge": since(self.opened_at, self.acknowledged_at),
            "approve": since(self.opened_at, self.approved_at),
            "contain": since(self.opened_at, self.contained_at),
            "resolve": since(self.opened_at, self.resolved_at),
        }


METRIC_LABELS = {
    "detect": "Time to detect",
    "acknowledge": "Time to acknowledge",
    "approve": "Time to approve",
    "contain": "Time to contain",
    "resolve": "Time to resolve",
}


def _details(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw) if raw else {}
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _aware(ts: dt.datetime) -> dt.datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=dt.UTC)


def milestones(
    rows: Iterable[Any],
    *,
    started_at: dt.datetime | None,
    gdpr_hours: float,
    now: dt.datetime,
    fallback_opened_at: dt.datetime,
) -> Milestones:
    """The milestones of one incident from its events (oldest first: seq order)."""
    found: dict[str, dt.datetime] = {}
    aware_at: dt.datetime | None = None
    notified_at: dt.datetime | None = None
    for r in rows:
        at = _aware(r.occurred_at)
        kind = r.kind
        if kind == "incident.opened":
            found.setdefault("opened", at)
        elif kind == "containment.approved":
            found.setdefault("approved", at)
        elif kind == "incident.status":
            to = _details(r.details).get("to")
            if to == "contained":
                found.setdefault("contained", at)
            elif to in ("resolved", "closed"):
                found.setdefault("resolved", at)
        elif kind == "incident.personal_data" and aware_at is None:
            stated = _details(r.details).get("aware_at")
            try:
                aware_at = _aware(dt.datetime.fromisoformat(stated)) if stated else at
            except (TypeError, ValueError):
                aware_at = at
        elif kind == "incident.notified" and notified_at is None:
            notified_at = at
        if "acknowledged" not in found and HUMAN_ACTOR.match(r.actor or ""):
            found["acknowledged"] = at
    opened = found.get("opened", _aware(fallback_opened_at))
    acknowledged = found.get("acknowledged")
    if acknowledged is not None and acknowledged < opened:
        acknowledged = opened
    regulator = None
    if aware_at is not None:
        due = aware_at + dt.timedelta(hours=gdpr_hours)
        regulator = RegulatorClock(aware_at, due, notified_at, now)
    return Milestones(
        opened_at=opened,
        started_at=_aware(started_at) if started_at else None,
        acknowledged_at=acknowledged,
        approved_at=found.get("approved"),
        contained_at=found.get("contained"),
        resolved_at=found.get("resolved"),
        regulator=regulator,
    )


def duration_text(value: dt.timedelta | None) -> str:
    """A short human duration: 45s, 12m 5s, 3h 5m, 2d 4h; "—" when it never happened."""
    if value is None:
        return "—"
    seconds = int(value.total_seconds())
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if seconds < 60:
        return f"{sign}{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{sign}{minutes}m {secs}s" if secs else f"{sign}{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{sign}{hours}h {minutes}m" if minutes else f"{sign}{hours}h"
    days, hours = divmod(hours, 24)
    return f"{sign}{days}d {hours}h" if hours else f"{sign}{days}d"
