"""The daily digest: open incidents, pending approvals and the next 24 h of deadlines."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from commands.deadlines.delivery import Delivery, late_note
from commands.deadlines.gdpr import regulator_clock
from commands.deadlines.markup import mention, mrkdwn_escape
from commands.deadlines.policy import DeadlinePolicy
from commands.deadlines.queue import LIVE_STATUSES, aware, schedule_reminder
from commands.deadlines.timefmt import utc_text
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
class DigestLine:
    incident_id: int
    key: str
    text: str


@dataclass(frozen=True)
class Digest:
    incidents: list[DigestLine]
    approvals: list[str]
    deadlines: list[str]

    def render(self, *, now: dt.datetime, policy: DeadlinePolicy) -> str:
        local = now.astimezone(ZoneInfo(policy.timezone))
        out = [f"*Daily incident digest* · {local:%A %d %B %Y} ({policy.timezone})"]
        out.append(f"\n*Open incidents ({len(self.incidents)})*")
        out += [f"• {line.text}" for line in self.incidents] or ["• none"]
        out.append(f"\n*Pending approvals ({len(self.approvals)})*")
        out += [f"• {a}" for a in self.approvals] or ["• none"]
        out.append(f"\n*Deadlines in the next 24 h ({len(self.deadlines)})*")
        out += [f"• {d}" for d in self.deadlines] or ["• none"]
        return "\n".join(out)


def build_digest(*, session: Session, now: dt.datetime, policy: DeadlinePolicy) -> Digest:
    """Open incidents, pending approvals and deadlines due within 24 h; drills left out."""
    pol = policy
    horizon = now + dt.timedelta(hours=24)
    incidents = session.scalars(
        select(Incident)
        .where(Incident.status.in_(LIVE_STATUSES), Incident.is_drill.is_(False))
        .order_by(Incident.number)
    ).all()
    lines = [
        DigestLine(
            i.id,
            i.key,
            f"{i.key} [{i.severity}/{i.status}] {mrkdwn_escape(i.title)}"
            + f" · owner {mention(i.owner)}",
        )
        for i in incidents
    ]
    requests = session.execute(
        select(ContainmentRequest, Incident)
        .join(Incident, Incident.id == ContainmentRequest.incident_id)
        .where(ContainmentRequest.status == "pending", Incident.is_drill.is_(False))
        .order_by(ContainmentRequest.requested_at)
    ).all()
    approvals = []
    deadlines: list[tuple[dt.datetime, str]] = []
    for req, inc in requests:
        expires = aware(req.expires_at)
        tail = f", expires {utc_text(expires)}" if expires else ""
        approvals.append(
            f"{inc.key}: {req.kind} {mrkdwn_escape(req.target_id)} requested by "
            f"{mention(req.requested_by)}{tail}"
        )
        if expires and now < expires <= horizon:
            deadlines.append(
                (expires, f"{inc.key}: approval of {mrkdwn_escape(req.target_id)} expires")
            )
    for inc in incidents:
        clock = regulator_clock(inc, now=now, policy=pol)
        if clock.deadline and clock.state in ("running", "overdue") and clock.deadline <= horizon:
            what = "OVERDUE" if clock.state == "overdue" else "due"
            deadlines.append((clock.deadline, f"{inc.key}: regulator notice {what}"))
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
        deadlines.append(
            (rem.due_at, f"{inc.key}: {rem.kind} {mrkdwn_escape(rem.message or '')}".rstrip())
        )
    deadlines.sort(key=lambda pair: pair[0])
    return Digest(
        incidents=lines,
        approvals=approvals,
        deadlines=[f"{utc_text(at)} · {text}" for at, text in deadlines],
    )


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
    pol, late = policy, late_note(reminder, now)
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
        text=digest.render(now=now, policy=pol) + late,
        channel=None,
        thread_ts=None,
        owner=None,
        mention_contacts=False,
        timeline_incident_ids=tuple(line.incident_id for line in digest.incidents),
    )
