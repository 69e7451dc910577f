"""The daily digest: open incidents, pending approvals and the next 24 h of deadlines."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from commands.deadlines.delivery import Delivery
from commands.deadlines.gdpr import regulator_clock
from commands.deadlines.policy import DeadlinePolicy
from commands.deadlines.queue import LIVE_STATUSES, aware, schedule_reminder
from storage.db import clock_of
from storage.models import ContainmentRequest, Incident, Reminder


def next_digest_at(*, now: dt.datetime, policy: DeadlinePolicy) -> dt.datetime:
    """The next digest_time in the configured timezone, as UTC (DST handled by zoneinfo)."""
    pol = policy
    tz = ZoneInfo(pol.timezone)
    hour, minute = (int(p) for p in pol.digest_time.split(":"))
    local_now = now.astimezone(tz)
    day = local_now.date()
    for _ in range(3):
        candidate = dt.datetime.combine(day, dt.time(hour, minute), tzinfo=tz)
        # Round-trip through UTC so a time skipped by a DST jump lands on a real instant.
        candidate_utc = candidate.astimezone(dt.UTC)
        if candidate_utc > now:
            return candidate_utc
        day += dt.timedelta(days=1)
    raise AssertionError("unreachable: a digest time exists within three days")


def digest_key(due_at: dt.datetime, policy: DeadlinePolicy) -> str:
    return f"digest:{due_at.astimezone(ZoneInfo(policy.timezone)).date().isoformat()}"


def ensure_digest(
    *, session: Session, now: dt.datetime | None = None, policy: DeadlinePolicy
) -> Reminder:
    """Make sure a digest is pending (the next one, unless one is already waiting)."""
    pol = policy
    now = now or clock_of(session).now()
    existing = session.scalars(
        select(Reminder)
        .where(Reminder.kind == "digest", Reminder.status == "pending")
        .order_by(Reminder.due_at)
        .limit(1)
    ).first()
    if existing is not None:
        return existing
    due = next_digest_at(now=now, policy=pol)
    return schedule_reminder(
        session=session,
        incident=None,
        kind="digest",
        due_at=due,
        dedupe_key=digest_key(due, pol),
        payload={},
    )


@dataclass(frozen=True)
class DigestIncident:
    incident_id: int
    key: str
    severity: str
    status: str
    title: str
    owner: str | None


@dataclass(frozen=True)
class DigestApproval:
    incident_key: str
    kind: str
    target_id: str
    requested_by: str | None
    expires_at: dt.datetime | None


@dataclass(frozen=True)
class DigestDeadline:
    at: dt.datetime
    incident_key: str
    # approval_expires (subject: the target) | regulator_due | regulator_overdue |
    # a reminder kind such as followup or abuse (subject: its message)
    what: str
    subject: str = ""


@dataclass(frozen=True)
class Digest:
    """The day's digest as data; bot/views/reminders.py renders it."""

    at: dt.datetime
    timezone: str
    incidents: list[DigestIncident]
    approvals: list[DigestApproval]
    deadlines: list[DigestDeadline]  # soonest first


def build_digest(*, session: Session, now: dt.datetime, policy: DeadlinePolicy) -> Digest:
    """Open incidents, pending approvals and deadlines due within 24 h; drills left out."""
    horizon = now + dt.timedelta(hours=24)
    incidents = session.scalars(
        select(Incident)
        .where(Incident.status.in_(LIVE_STATUSES), Incident.is_drill.is_(False))
        .order_by(Incident.number)
    ).all()
    lines = [DigestIncident(i.id, i.key, i.severity, i.status, i.title, i.owner) for i in incidents]
    requests = session.execute(
        select(ContainmentRequest, Incident)
        .join(Incident, Incident.id == ContainmentRequest.incident_id)
        .where(ContainmentRequest.status == "pending", Incident.is_drill.is_(False))
        .order_by(ContainmentRequest.requested_at)
    ).all()
    approvals = []
    deadlines: list[DigestDeadline] = []
    for req, inc in requests:
        expires = aware(req.expires_at)
        approvals.append(
            DigestApproval(inc.key, req.kind, req.target_id, req.requested_by, expires)
        )
        if expires and now < expires <= horizon:
            deadlines.append(DigestDeadline(expires, inc.key, "approval_expires", req.target_id))
    for inc in incidents:
        clock = regulator_clock(inc, now=now, policy=policy)
        if clock.deadline and clock.state in ("running", "overdue") and clock.deadline <= horizon:
            what = "regulator_overdue" if clock.state == "overdue" else "regulator_due"
            deadlines.append(DigestDeadline(clock.deadline, inc.key, what))
    others = session.execute(
        select(Reminder, Incident)
        .join(Incident, Incident.id == Reminder.incident_id)
        .where(
            Reminder.kind.in_(("followup", "abuse")),
            Reminder.status == "pending",
            Reminder.due_at <= horizon,
            Incident.is_drill.is_(False),
        )
    ).all()
    for rem, inc in others:
        deadlines.append(DigestDeadline(aware(rem.due_at), inc.key, rem.kind, rem.message or ""))  # type: ignore[arg-type]
    deadlines.sort(key=lambda d: d.at)
    return Digest(now, policy.timezone, lines, approvals, deadlines)


def digest_delivery(
    *,
    session: Session,
    reminder: Reminder,
    incident: Incident | None,
    now: dt.datetime,
    policy: DeadlinePolicy,
    base: Delivery,
) -> Delivery:
    """What the `digest` reminder says, and tomorrow's (a kind handler, see delivery.py)."""
    pol = policy
    digest = build_digest(session=session, now=now, policy=pol)
    due = next_digest_at(now=max(now, reminder.due_at), policy=pol)
    schedule_reminder(
        session=session,
        incident=None,
        kind="digest",
        due_at=due,
        dedupe_key=digest_key(due, pol),
    )
    return replace(
        base,
        notice=digest,
        channel=None,
        thread_ts=None,
        owner=None,
        mention_contacts=False,
        timeline_incident_ids=tuple(line.incident_id for line in digest.incidents),
    )
