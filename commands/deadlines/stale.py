"""Stale incidents: a nudge when a live incident has been quiet for stale_after_hours."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.orm import Session

from commands.deadlines.delivery import Delivery, cancel_claimed
from commands.deadlines.policy import DeadlinePolicy
from commands.deadlines.queue import (
    LIVE_STATUSES,
    SCHEDULER,
    aware,
    insert_for,
    note_scheduled,
    schedule_reminder,
)
from storage.db import clock_of
from storage.models import Incident, Reminder, TimelineEvent


def _last_activity_query() -> Select[Any]:
    """Per incident, the newest timeline event not written by the scheduler itself."""
    return (
        select(TimelineEvent.incident_id, func.max(TimelineEvent.occurred_at).label("last"))
        .where(TimelineEvent.actor != SCHEDULER)
        .group_by(TimelineEvent.incident_id)
    )


def last_activity(*, session: Session, incident: Incident) -> dt.datetime:
    last = session.scalar(
        select(func.max(TimelineEvent.occurred_at)).where(
            TimelineEvent.incident_id == incident.id, TimelineEvent.actor != SCHEDULER
        )
    )
    return aware(last) or incident.created_at


def stale_key(incident_id: int, due_at: dt.datetime) -> str:
    return f"stale:{incident_id}:{int(due_at.timestamp())}"


def ensure_stale_checks(
    *,
    session: Session,
    now: dt.datetime | None = None,
    policy: DeadlinePolicy,
    limit: int | None = None,
) -> int:
    """Give live, non-drill incidents without one a pending stale check; returns how many.

    One multi-row INSERT per call; `limit` bounds the transaction so a sweep over thousands
    of incidents never holds SQLite's write lock long enough to delay a due reminder.
    """
    pol = policy
    now = now or clock_of(session).now()
    pending = select(Reminder.incident_id).where(
        Reminder.kind == "stale", Reminder.status == "pending", Reminder.incident_id.is_not(None)
    )
    activity = _last_activity_query().subquery()
    stmt = (
        select(Incident.id, Incident.created_at, activity.c.last)
        .outerjoin(activity, activity.c.incident_id == Incident.id)
        .where(
            Incident.status.in_(LIVE_STATUSES),
            Incident.is_drill.is_(False),
            Incident.id.not_in(pending),
        )
        .order_by(Incident.id)
    )
    if limit is not None:
        stmt = stmt.limit(limit)
    rows = session.execute(stmt).all()
    if not rows:
        return 0
    created = clock_of(session).now()
    values = []
    for incident_id, created_at, last in rows:
        due = max((aware(last) or aware(created_at)) + pol.stale_after, now)  # type: ignore[operator]
        values.append(
            {
                "incident_id": incident_id,
                "kind": "stale",
                "due_at": due,
                "status": "pending",
                "dedupe_key": stale_key(incident_id, due),
                "late": False,
                "message": None,
                "payload": {},
                "created_at": created,
            }
        )
    session.execute(
        insert_for(session)(Reminder).on_conflict_do_nothing(index_elements=["dedupe_key"]),
        values,
    )
    note_scheduled(session, min(v["due_at"] for v in values))
    return len(rows)


@dataclass(frozen=True)
class StaleNotice:
    """A live incident has been quiet since `last`."""

    last: dt.datetime
    quiet_for: dt.timedelta


def stale_delivery(
    *,
    session: Session,
    reminder: Reminder,
    incident: Incident | None,
    now: dt.datetime,
    policy: DeadlinePolicy,
    base: Delivery,
) -> Delivery | None:
    """What a `stale` reminder says (a kind handler, see delivery.py)."""
    pol = policy
    if incident is None or incident.status not in LIVE_STATUSES or incident.is_drill:
        cancel_claimed(session, reminder, "incident no longer live")
        return None
    # Another replica's sweep may have raced ours: one nudge per incident at a time.
    session.execute(
        update(Reminder)
        .where(
            Reminder.incident_id == incident.id,
            Reminder.kind == "stale",
            Reminder.status == "pending",
        )
        .values(status="cancelled")
        .execution_options(synchronize_session=False)
    )
    last = last_activity(session=session, incident=incident)
    quiet_until = last + pol.stale_after
    if quiet_until > now + dt.timedelta(seconds=1):
        # Someone worked on it since this check was scheduled: look again later.
        cancel_claimed(session, reminder, "activity since scheduled")
        schedule_reminder(
            session=session,
            incident=incident,
            kind="stale",
            due_at=quiet_until,
            dedupe_key=stale_key(incident.id, quiet_until),
        )
        return None
    nxt = now + pol.stale_after
    schedule_reminder(
        session=session,
        incident=incident,
        kind="stale",
        due_at=nxt,
        dedupe_key=stale_key(incident.id, nxt),
    )
    return replace(base, notice=StaleNotice(last=last, quiet_for=now - last))
