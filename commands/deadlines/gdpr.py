"""The GDPR regulator clock: where it stands, its reminders, starting it from tags."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from commands.deadlines.delivery import Delivery, cancel_claimed
from commands.deadlines.policy import DeadlinePolicy
from commands.deadlines.queue import GDPR_KINDS, LIVE_STATUSES, cancel_reminders, schedule_reminder
from commands.deadlines.tags import personal_data_tag
from commands.incidents import mark_personal_data, record_notified
from storage.db import clock_of
from storage.models import Incident, Reminder


@dataclass(frozen=True)
class ClockStatus:
    state: str  # none | running | overdue | notified
    deadline: dt.datetime | None = None
    remaining: dt.timedelta | None = None  # negative when overdue


def regulator_clock(incident: Incident, *, now: dt.datetime, policy: DeadlinePolicy) -> ClockStatus:
    """Where an incident's regulator clock stands (for cards, status and reminders)."""
    if not incident.personal_data or incident.aware_at is None:
        return ClockStatus("none")
    deadline = incident.aware_at + policy.gdpr
    if incident.notified_at is not None:
        return ClockStatus("notified", deadline, deadline - incident.notified_at)
    remaining = deadline - now
    state = "running" if remaining.total_seconds() > 0 else "overdue"
    return ClockStatus(state, deadline, remaining)


def running_clock_keys(*, session: Session) -> list[str]:
    """Keys of live incidents with a running regulator clock and a card to keep current."""
    numbers = session.scalars(
        select(Incident.number)
        .where(
            Incident.personal_data.is_(True),
            Incident.notified_at.is_(None),
            Incident.status.in_(LIVE_STATUSES),
            Incident.card_ts.is_not(None),
        )
        .order_by(Incident.number)
    ).all()
    return [f"INC-{n}" for n in numbers]


def _hours_key(hours: float) -> str:
    return f"{hours:g}"


def schedule_gdpr_clock(
    *,
    session: Session,
    incident: Incident,
    policy: DeadlinePolicy,
    now: dt.datetime | None = None,
) -> list[Reminder]:
    """The reminders before the deadline and the deadline itself (idempotent).

    A reminder whose time has already passed when the clock starts (aware_at back-dated) is
    not scheduled: "48 h left" is wrong when 10 are left. The deadline always is.
    """
    if not incident.personal_data or incident.aware_at is None or incident.notified_at:
        return []
    pol = policy
    now = now or clock_of(session).now()
    deadline = incident.aware_at + pol.gdpr
    rows = []
    for hours in pol.reminder_hours_before:
        due = deadline - dt.timedelta(hours=hours)
        if hours >= pol.gdpr_hours or due <= now:
            continue
        rows.append(
            schedule_reminder(
                session=session,
                incident=incident,
                kind="gdpr",
                due_at=due,
                dedupe_key=f"gdpr:{incident.id}:before:{_hours_key(hours)}",
                message=f"{_hours_key(hours)} h before the regulator deadline",
                payload={"stage": "before", "hours_before": hours},
            )
        )
    rows.append(
        schedule_reminder(
            session=session,
            incident=incident,
            kind="gdpr",
            due_at=deadline,
            dedupe_key=f"gdpr:{incident.id}:deadline",
            message="regulator deadline",
            payload={"stage": "deadline"},
        )
    )
    return rows


def start_clock(
    *,
    session: Session,
    incident: Incident,
    actor: str,
    policy: DeadlinePolicy,
    aware_at: dt.datetime | None = None,
    reason: str = "marked personal-data",
) -> bool:
    """Mark personal data involved and schedule the clock's reminders in one transaction.

    Returns False when the clock was already running (nothing scheduled then).
    """
    started = mark_personal_data(
        session=session, incident=incident, actor=actor, aware_at=aware_at, reason=reason
    )
    if started:
        schedule_gdpr_clock(session=session, incident=incident, policy=policy)
    return started


def record_notice(*, session: Session, incident: Incident, actor: str, reference: str) -> Incident:
    """The regulator notice was sent: record it on the incident and stop the GDPR alerts."""
    record_notified(session=session, incident=incident, actor=actor, reference=reference)
    cancel_reminders(
        session=session,
        incident=incident,
        kinds=GDPR_KINDS,
        actor=actor,
        reason="regulator notified",
    )
    return incident


def start_clock_from_tags(
    *,
    session: Session,
    incident: Incident,
    tags: Any,
    policy: DeadlinePolicy,
    actor: str = "system",
    resource_id: str | None = None,
    aware_at: dt.datetime | None = None,
) -> bool:
    """Start the regulator clock when a resource's tags say it holds personal data.

    Returns True when this call started it (False: no such tag, or already running).
    """
    match = personal_data_tag(tags, policy=policy)
    if match is None:
        return False
    where = f" on {resource_id}" if resource_id else ""
    return start_clock(
        session=session,
        incident=incident,
        actor=actor,
        policy=policy,
        aware_at=aware_at,
        reason=f"resource tagged {match[0]}={match[1]}{where}",
    )


# -- what its reminders say ---------------------------------------------------------------


@dataclass(frozen=True)
class GdprNotice:
    """A GDPR reminder: a countdown (`before`), the deadline itself, or an overdue alert."""

    stage: str  # before | deadline | overdue
    deadline: dt.datetime
    remaining: dt.timedelta  # negative once the deadline passed


def gdpr_delivery(
    *,
    session: Session,
    reminder: Reminder,
    incident: Incident | None,
    now: dt.datetime,
    policy: DeadlinePolicy,
    base: Delivery,
) -> Delivery | None:
    """What a `gdpr` / `gdpr_overdue` reminder says (a kind handler, see delivery.py)."""
    pol = policy
    if incident is None or not incident.personal_data or incident.aware_at is None:
        cancel_claimed(session, reminder, "no regulator clock")
        return None
    if incident.notified_at is not None:
        cancel_claimed(session, reminder, "regulator already notified")
        return None
    deadline = incident.aware_at + pol.gdpr
    stage = (reminder.payload or {}).get("stage")
    if reminder.kind == "gdpr" and stage == "before" and now >= deadline:
        # Posted so late the deadline passed: the deadline alert says it, once.
        cancel_claimed(session, reminder, "superseded by the deadline alert")
        return None
    if (
        reminder.kind == "gdpr"
        and stage == "before"
        and _later_reminder_due(session, reminder, now)
    ):
        # Several countdowns came due during an outage: the latest one says it, once.
        cancel_claimed(session, reminder, "superseded by a later reminder")
        return None
    if reminder.kind == "gdpr" and stage == "before":
        notice = GdprNotice("before", deadline, deadline - now)
    else:
        n = int((reminder.payload or {}).get("n", 0))
        _schedule_next_overdue(session, incident, n + 1, now, pol)
        what = "deadline" if reminder.kind == "gdpr" and stage == "deadline" else "overdue"
        notice = GdprNotice(what, deadline, deadline - now)
    return replace(base, notice=notice, refresh_card=True)


def _later_reminder_due(session: Session, reminder: Reminder, now: dt.datetime) -> bool:
    """Another of the incident's GDPR reminders is due after this one but already due."""
    return (
        session.scalar(
            select(func.count())
            .select_from(Reminder)
            .where(
                Reminder.incident_id == reminder.incident_id,
                Reminder.kind == "gdpr",
                Reminder.id != reminder.id,
                Reminder.status != "cancelled",
                Reminder.due_at > reminder.due_at,
                Reminder.due_at <= now,
            )
        )
        or 0
    ) > 0


def _schedule_next_overdue(
    session: Session, incident: Incident, n: int, now: dt.datetime, pol: DeadlinePolicy
) -> None:
    """Overdue alerts repeat every overdue_every_hours after the deadline until notified.

    Periods that passed while the bot was down are skipped (the late alert just posted
    covers them), so a restart never bursts out a backlog of identical alerts.
    """
    deadline = incident.aware_at + pol.gdpr  # type: ignore[operator]
    every = pol.overdue_every.total_seconds()
    n = max(n, int((now - deadline).total_seconds() // every) + 1)
    schedule_reminder(
        session=session,
        incident=incident,
        kind="gdpr_overdue",
        due_at=deadline + pol.overdue_every * n,
        dedupe_key=f"gdpr_overdue:{incident.id}:{n}",
        message=f"regulator notice overdue (alert {n})",
        payload={"n": n},
    )
