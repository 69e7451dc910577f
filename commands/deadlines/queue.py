"""The reminder queue: schedule and cancel rows, claim what is due, exactly once.

`claim_due` flips rows pending -> sent in one UPDATE, so of any number of processes sharing
the database exactly one gets each row, and only that one posts it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from storage.db import clock_of
from storage.models import Incident, Reminder
from storage.timeline import append_event

KINDS = (
    "gdpr",
    "gdpr_overdue",
    "approval_expiry",
    "stale",
    "digest",
    "abuse",
    "unowned",
    "task",
    "followup",
)
GDPR_KINDS = ("gdpr", "gdpr_overdue")
LIVE_STATUSES = ("open", "contained")
SCHEDULER = "scheduler"
# A reminder claimed this long after it was due counts as late even with a process running
# (a hung process, or every replica down). Start-up catch-up marks late explicitly.
LATE_AFTER = dt.timedelta(seconds=60)
# A claimed reminder not posted after this long was claimed by a process that died.
STALLED_AFTER = dt.timedelta(minutes=5)

# The earliest due time scheduled in a session's transaction; a scheduler running in this
# process reads it after commit (Database.on_commit) to wake its timer at once.
_INFO_KEY = "deadlines.earliest_due"


def note_scheduled(session: Session, due_at: dt.datetime) -> None:
    current = session.info.get(_INFO_KEY)
    if current is None or due_at < current:
        session.info[_INFO_KEY] = due_at


def scheduled_due(session: Session) -> dt.datetime | None:
    """The earliest due time this session scheduled, or None (read after its commit).

    Kept in `session.info`, which lives as long as the Session: the app opens one Session per
    transaction (Database.session), so it never speaks for an earlier transaction.
    """
    return session.info.get(_INFO_KEY)


def aware(ts: dt.datetime | None) -> dt.datetime | None:
    # Aggregates bypass the column type on SQLite and come back naive (stored as UTC).
    if ts is None:
        return None
    if isinstance(ts, str):
        ts = dt.datetime.fromisoformat(ts)
    return ts.replace(tzinfo=dt.UTC) if ts.tzinfo is None else ts.astimezone(dt.UTC)


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def insert_for(session: Session) -> Any:
    return postgresql.insert if _dialect(session) == "postgresql" else sqlite.insert


def schedule_reminder(
    *,
    session: Session,
    incident: Incident | None,
    kind: str,
    due_at: dt.datetime,
    dedupe_key: str | None,
    message: str | None = None,
    payload: Mapping[str, Any] | None = None,
) -> Reminder:
    """Add a pending reminder; a second call with the same dedupe_key returns the first row.

    Safe against concurrent callers on PostgreSQL (INSERT ... ON CONFLICT DO NOTHING), so two
    replicas scheduling the same deadline end up with one row.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown reminder kind {kind!r}")
    if due_at.tzinfo is None:
        raise ValueError("due_at must be an aware datetime")
    if incident is not None and incident.id is None:
        session.flush()
    values = {
        "incident_id": incident.id if incident is not None else None,
        "kind": kind,
        "due_at": due_at,
        "status": "pending",
        "dedupe_key": dedupe_key,
        "late": False,
        "message": message,
        "payload": dict(payload or {}),
        "created_at": clock_of(session).now(),
    }
    stmt = insert_for(session)(Reminder).values(**values)
    if dedupe_key is not None:
        stmt = stmt.on_conflict_do_nothing(index_elements=["dedupe_key"])
    new_id = session.execute(stmt.returning(Reminder.id)).scalar()
    if new_id is not None:
        note_scheduled(session, due_at)
        return session.get(Reminder, new_id)  # type: ignore[return-value]
    return session.scalars(select(Reminder).where(Reminder.dedupe_key == dedupe_key)).one()


def cancel_reminders(
    *,
    session: Session,
    incident: Incident,
    kinds: Sequence[str],
    actor: str,
    reason: str,
) -> int:
    """Cancel an incident's pending reminders of `kinds`; a timeline event says how many."""
    result = session.execute(
        update(Reminder)
        .where(
            Reminder.incident_id == incident.id,
            Reminder.kind.in_(kinds),
            Reminder.status == "pending",
        )
        .values(status="cancelled")
        .execution_options(synchronize_session=False)
    )
    count = result.rowcount or 0  # type: ignore[attr-defined]
    if count:
        append_event(
            session=session,
            incident=incident,
            actor=actor,
            kind="reminders.cancelled",
            summary=f"Cancelled {count} pending reminder(s): {reason}",
            details={"kinds": list(kinds), "count": count, "reason": reason},
        )
    return count


@dataclass(frozen=True)
class Claim:
    id: int
    incident_id: int | None
    kind: str
    due_at: dt.datetime
    late: bool
    claimed_at: dt.datetime


def claim_due(
    *,
    session: Session,
    now: dt.datetime,
    worker_id: str,
    limit: int = 50,
    late_before: dt.datetime | None = None,
) -> list[Claim]:
    """Atomically take up to `limit` due reminders: pending -> sent, owned by `worker_id`.

    One UPDATE ... WHERE status = 'pending' RETURNING: a row another process took first no
    longer matches, so each row goes to exactly one claimer. On PostgreSQL the candidate rows
    are locked with SKIP LOCKED so replicas share the work instead of queueing on each other.
    Rows due before `late_before` (default: now - LATE_AFTER) are marked late.
    """
    cut = late_before if late_before is not None else now - LATE_AFTER
    candidates = (
        select(Reminder.id)
        .where(Reminder.status == "pending", Reminder.due_at <= now)
        .order_by(Reminder.due_at, Reminder.id)
        .limit(limit)
    )
    if _dialect(session) == "postgresql":
        # Picked once, in a materialized CTE: as a plain `IN (subquery)` PostgreSQL may run
        # the LIMIT ... SKIP LOCKED subquery again for each row it updates, each run skipping
        # the rows the last one locked, so one claim took every due row (seen: 6 with a
        # limit of 2), and a second replica found none to share.
        picked = candidates.with_for_update(skip_locked=True).cte("picked")
        picked = picked.prefix_with("MATERIALIZED")
        chosen = select(picked.c.id).scalar_subquery()
    else:
        chosen = candidates.scalar_subquery()
    stmt = (
        update(Reminder)
        .where(Reminder.id.in_(chosen), Reminder.status == "pending")
        .values(
            status="sent",
            claimed_by=worker_id,
            sent_at=now,
            late=or_(Reminder.late, Reminder.due_at < cut),
        )
        .returning(Reminder.id, Reminder.incident_id, Reminder.kind, Reminder.due_at, Reminder.late)
        .execution_options(synchronize_session=False)
    )
    rows = session.execute(stmt).all()
    claims = [Claim(r[0], r[1], r[2], aware(r[3]), bool(r[4]), now) for r in rows]  # type: ignore[arg-type]
    return sorted(claims, key=lambda c: (c.due_at, c.id))


def _delivered_or_closed(payload: Mapping[str, Any] | None) -> bool:
    payload = payload or {}
    return bool(payload.get("ts") or payload.get("posted_at") or payload.get("failed"))


def recover_stalled(
    *,
    session: Session,
    now: dt.datetime,
    worker_id: str,
    lease: dt.timedelta = STALLED_AFTER,
    horizon: dt.timedelta = dt.timedelta(days=2),
) -> list[Claim]:
    """Take over reminders whose claimer died between claiming and posting.

    A claimed row records its post (`payload.ts`) right after Slack accepts it; a row
    claimed longer than `lease` ago without one belonged to a process that was killed
    mid-delivery. Each is re-claimed with a compare-and-swap on (claimed_by, sent_at), so one
    process takes it over, and it is marked `recovered` (the post says it may repeat: the
    dead process may have reached Slack just before it died). `lease` must exceed the
    longest delivery, Slack's rate-limit retries included.
    """
    rows = session.execute(
        select(Reminder.id, Reminder.claimed_by, Reminder.sent_at, Reminder.payload).where(
            Reminder.status == "sent",
            Reminder.sent_at < now - lease,
            Reminder.sent_at > now - horizon,
        )
    ).all()
    claims: list[Claim] = []
    for rid, owner, sent_at, payload in rows:
        if _delivered_or_closed(payload):
            continue
        taken = session.execute(
            update(Reminder)
            .where(
                Reminder.id == rid,
                Reminder.status == "sent",
                Reminder.claimed_by == owner,
                Reminder.sent_at == sent_at,
            )
            .values(
                claimed_by=worker_id,
                sent_at=now,
                late=True,
                payload={**(payload or {}), "recovered_from": owner},
            )
            .returning(Reminder.id, Reminder.incident_id, Reminder.kind, Reminder.due_at)
            .execution_options(synchronize_session=False)
        ).first()
        if taken is not None:
            claims.append(Claim(taken[0], taken[1], taken[2], aware(taken[3]), True, now))  # type: ignore[arg-type]
    return claims


def mark_late(*, session: Session, before: dt.datetime) -> int:
    """Flag pending rows due before `before` (start-up: they came due while we were down)."""
    result = session.execute(
        update(Reminder)
        .where(Reminder.status == "pending", Reminder.due_at < before, Reminder.late.is_(False))
        .values(late=True)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount or 0  # type: ignore[attr-defined]


def next_due(*, session: Session) -> dt.datetime | None:
    """The earliest pending due time: what the scheduler's one timer is armed for."""
    return aware(
        session.scalar(select(func.min(Reminder.due_at)).where(Reminder.status == "pending"))
    )
