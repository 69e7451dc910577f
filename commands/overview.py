"""What a responder needs at a glance per incident: pending approvals and the next deadline.

Read-only; used by the incident card, `/incident status|list` and the App Home tab. These
sit on the ack path of the busiest command, so each read is one prepared statement (the
pending approvals are correlated subqueries; storage/fastread.py) and the row is wrapped,
not turned into an ORM object.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, or_, select
from sqlalchemy.orm import Session

from storage.db import Database
from storage.fastread import prepared
from storage.models import ContainmentRequest, Incident

LIVE_STATUSES = ("open", "contained")


@dataclass(frozen=True)
class Deadline:
    what: str  # "regulator notice", "approval expires"
    due_at: dt.datetime


class IncidentRow:
    """An incidents row with the model's attribute names (and `key`), read-only.

    Two wrappers of one row are equal: a SQLite read hands out the same kept row while the
    database is unchanged (storage/fastread.py), so overviews built from it are equal and
    what was rendered from one can be reused for the other (bot/views/cards.py).
    """

    __slots__ = ("_row",)

    def __init__(self, row: Mapping[str, Any]) -> None:
        self._row = row

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IncidentRow) and other._row is self._row

    def __hash__(self) -> int:
        return id(self._row)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._row[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def key(self) -> str:
        return f"INC-{self._row['number']}"


@dataclass(frozen=True)
class IncidentOverview:
    incident: Incident | IncidentRow
    pending_approvals: int
    next_deadline: Deadline | None
    gdpr_hours: float  # the policy's, so the card can say where the regulator clock stands


def regulator_deadline(incident: Incident | IncidentRow, *, gdpr_hours: float) -> Deadline | None:
    """When the regulator must be told, while the clock runs (personal data, not yet notified)."""
    if not incident.personal_data or incident.aware_at is None or incident.notified_at:
        return None
    return Deadline("regulator notice", incident.aware_at + dt.timedelta(hours=gdpr_hours))


def _pending(column: Any) -> Any:
    return (
        select(column)
        .where(
            ContainmentRequest.incident_id == Incident.id,
            ContainmentRequest.status == "pending",
        )
        .scalar_subquery()
    )


_WITH_PENDING = select(
    Incident.__table__,
    _pending(func.count()).label("_pending"),
    _pending(func.min(ContainmentRequest.expires_at)).label("_expires"),
)
_BY_NUMBER = _WITH_PENDING.where(Incident.number == bindparam("number"))
_BY_CHANNEL = _WITH_PENDING.where(
    Incident.channel_id == bindparam("channel_id"), Incident.thread_ts.is_(None)
).limit(1)
# or_ rather than in_: an IN list compiles to an expanding parameter a prepared read cannot bind.
_LIVE = _WITH_PENDING.where(or_(*(Incident.status == s for s in LIVE_STATUSES))).order_by(
    Incident.number
)


# Overviews by the row they were built from. A SQLite read hands out the same kept row while
# the database is unchanged (storage/fastread.py), so a repeated `/incident status` reuses
# its overview; the row is held beside it, so its id cannot be another row's meanwhile.
_BUILT: dict[tuple[int, float], tuple[Mapping[str, Any], IncidentOverview]] = {}
_BUILT_LIMIT = 1024


def _build(row: Mapping[str, Any], gdpr_hours: float) -> IncidentOverview:
    key = (id(row), gdpr_hours)
    found = _BUILT.get(key)
    if found is not None and found[0] is row:
        return found[1]
    incident = IncidentRow(row)
    view = _assemble(incident, int(row["_pending"] or 0), row["_expires"], gdpr_hours)
    if len(_BUILT) >= _BUILT_LIMIT:
        _BUILT.clear()  # many distinct rows (a changing database): start over
    _BUILT[key] = (row, view)
    return view


def _assemble(
    incident: Incident | IncidentRow, count: int, expires: dt.datetime | None, gdpr_hours: float
) -> IncidentOverview:
    candidates = [d for d in (regulator_deadline(incident, gdpr_hours=gdpr_hours),) if d]
    if expires is not None:
        if isinstance(expires, str):  # a scalar subquery loses the column type on SQLite
            expires = dt.datetime.fromisoformat(expires)
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=dt.UTC)
        candidates.append(Deadline("approval expires", expires))
    soonest = min(candidates, key=lambda d: d.due_at) if candidates else None
    return IncidentOverview(incident, count, soonest, gdpr_hours)


def overview_by_number(
    *, database: Database, number: int, gdpr_hours: float
) -> IncidentOverview | None:
    row = prepared(database.engine, _BY_NUMBER).first(number=number)
    return _build(row, gdpr_hours) if row is not None else None


def overview_by_channel(
    *, database: Database, channel_id: str, gdpr_hours: float
) -> IncidentOverview | None:
    """The incident that owns a channel (channel_per_incident), as `find_by_channel` does."""
    row = prepared(database.engine, _BY_CHANNEL).first(channel_id=channel_id)
    return _build(row, gdpr_hours) if row is not None else None


def live_overviews(*, database: Database, gdpr_hours: float) -> list[IncidentOverview]:
    """Every open or contained incident, oldest first."""
    return [_build(row, gdpr_hours) for row in prepared(database.engine, _LIVE).all()]


def overview(
    *, session: Session, incidents: Sequence[Incident], gdpr_hours: float
) -> list[IncidentOverview]:
    """One IncidentOverview per already-loaded incident, in order, with one grouped query."""
    ids = [i.id for i in incidents]
    pending: dict[int, tuple[int, dt.datetime | None]] = {}
    if ids:
        rows = session.execute(
            select(
                ContainmentRequest.incident_id,
                func.count(),
                func.min(ContainmentRequest.expires_at),
            )
            .where(
                ContainmentRequest.incident_id.in_(ids),
                ContainmentRequest.status == "pending",
            )
            .group_by(ContainmentRequest.incident_id)
        ).all()
        pending = {r[0]: (int(r[1]), r[2]) for r in rows}
    return [
        _assemble(incident, *pending.get(incident.id, (0, None)), gdpr_hours)
        for incident in incidents
    ]
