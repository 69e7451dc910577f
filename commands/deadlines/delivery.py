"""Delivering a claimed reminder: what it says (by kind), and what happened when posted.

What each kind says is decided by a handler from an explicit `{kind: handler}` map the
caller passes (the bot builds it in bot/reminder_kinds.py); a kind without a handler gets
the generic `⏰ INC-N: message`. A handler is called as
`fn(session=, reminder=, incident=, now=, policy=, base=)` in the delivery transaction, with
`base` the default Delivery; it returns a Delivery, or None to post nothing (the reminder is
then recorded as cancelled).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from commands.deadlines.policy import DeadlinePolicy
from commands.deadlines.queue import SCHEDULER, Claim, note_scheduled
from storage.models import Incident, Reminder
from storage.timeline import append_event

# Transient posting failures are retried with this back-off, then given up (and recorded).
RETRY_BACKOFF = (5, 30, 120, 600)


@dataclass(frozen=True)
class Delivery:
    """What to post for one claimed reminder, as data: bot/views/reminders.py renders it
    (mentions included) and the bot posts it."""

    reminder_id: int
    kind: str
    prepared_at: dt.datetime  # the `now` it was decided at (lateness is measured from it)
    message: str | None = None  # the row's own message: plain user text, not escaped
    # What this kind says (GdprNotice, StaleNotice, Digest, AbuseNotice, ...); None: the
    # row's message as a plain reminder.
    notice: object | None = None
    incident_id: int | None = None
    incident_key: str | None = None
    channel: str | None = None  # None: the configured incident channel
    thread_ts: str | None = None
    owner: str | None = None
    mention_contacts: bool = True
    late: bool = False
    # Re-claimed from a process that died while posting it: it may repeat.
    recovered: bool = False
    due_at: dt.datetime | None = None
    # Incidents whose timelines record this firing (the digest lists several).
    timeline_incident_ids: tuple[int, ...] = ()
    refresh_card: bool = False


class KindHandler(Protocol):
    """Decides what a reminder of one kind says (see the module docstring)."""

    def __call__(
        self,
        *,
        session: Session,
        reminder: Reminder,
        incident: Incident | None,
        now: dt.datetime,
        policy: DeadlinePolicy,
        base: Delivery,
    ) -> Delivery | None: ...


def cancel_claimed(session: Session, reminder: Reminder, reason: str) -> None:
    """A claimed reminder that no longer applies: recorded as cancelled, nothing posted."""
    reminder.status = "cancelled"
    reminder.payload = {**(reminder.payload or {}), "cancelled": reason}


def prepare_delivery(
    *,
    session: Session,
    claim: Claim,
    now: dt.datetime,
    policy: DeadlinePolicy,
    kinds: Mapping[str, KindHandler],
) -> Delivery | None:
    """Decide what a claimed reminder says; None when it no longer applies.

    Runs in its own transaction after the claim committed. Follow-ups (the next overdue
    alert, the next stale check, tomorrow's digest) are scheduled here, in the same
    transaction, so a crash cannot lose the chain.
    """
    reminder = session.get(Reminder, claim.id, populate_existing=True)
    if reminder is None or reminder.status != "sent":
        return None
    incident = session.get(Incident, reminder.incident_id) if reminder.incident_id else None
    base = Delivery(
        reminder_id=reminder.id,
        kind=reminder.kind,
        prepared_at=now,
        message=reminder.message,
        incident_id=incident.id if incident else None,
        incident_key=incident.key if incident else None,
        channel=incident.channel_id if incident else None,
        thread_ts=incident.thread_ts if incident else None,
        owner=incident.owner if incident else None,
        # A drill reminds the responders rehearsing it, never the real contacts.
        mention_contacts=not (incident and incident.is_drill),
        late=reminder.late,
        recovered=bool((reminder.payload or {}).get("recovered_from")),
        due_at=reminder.due_at,
        timeline_incident_ids=(incident.id,) if incident else (),
    )
    handler = kinds.get(reminder.kind)
    if handler is not None:
        delivery = handler(
            session=session,
            reminder=reminder,
            incident=incident,
            now=now,
            policy=policy,
            base=base,
        )
        if delivery is None and reminder.status == "sent":
            cancel_claimed(session, reminder, "handler declined")
        return delivery
    if incident is not None and incident.status == "closed":
        cancel_claimed(session, reminder, "incident closed")
        return None
    return base


def record_fired(
    *,
    session: Session,
    delivery: Delivery,
    text: str,
    now: dt.datetime,
    channel: str | None,
    ts: str | None,
) -> None:
    """The reminder was posted: keep where, and write it to the incident timeline(s).

    `text` is what was posted (its first line, as plain as it came, is the summary).
    """
    reminder = session.get(Reminder, delivery.reminder_id, populate_existing=True)
    if reminder is None:
        return
    lateness = (now - reminder.due_at).total_seconds()
    reminder.payload = {
        **(reminder.payload or {}),
        "posted_at": now.isoformat(),
        "channel": channel,
        "ts": ts,
        "lateness_s": round(lateness, 3),
    }
    details = {
        "reminder_id": reminder.id,
        "reminder_kind": reminder.kind,
        "due_at": reminder.due_at.isoformat(),
        "late": reminder.late,
        "lateness_s": round(lateness, 3),
        "channel": channel,
        "ts": ts,
    }
    ids: Iterable[int] = delivery.timeline_incident_ids
    incidents = session.scalars(select(Incident).where(Incident.id.in_(list(ids)))).all()
    for incident in incidents:
        if reminder.kind == "digest":
            summary = "Listed in the daily digest"
        else:
            summary = ("Late reminder posted: " if reminder.late else "Reminder posted: ") + (
                text.split("\n", 1)[0][:300]
            )
        append_event(
            session=session,
            incident=incident,
            actor=SCHEDULER,
            kind=f"reminder.{reminder.kind}",
            summary=summary,
            details=details,
        )


def record_failed(
    *,
    session: Session,
    reminder_id: int,
    now: dt.datetime,
    error: str,
    retry: bool,
) -> dt.datetime | None:
    """Posting failed. Transient: back to pending with back-off (returns the new due time).

    Permanent, or out of retries: stays claimed, marked failed, and the incident's timeline
    says it was not delivered, so the miss is never silent.
    """
    reminder = session.get(Reminder, reminder_id, populate_existing=True)
    if reminder is None:
        return None
    payload = dict(reminder.payload or {})
    attempts = int(payload.get("attempts", 0)) + 1
    payload.update(attempts=attempts, last_error=error)
    if retry and attempts <= len(RETRY_BACKOFF):
        due = now + dt.timedelta(seconds=RETRY_BACKOFF[attempts - 1])
        reminder.payload = payload
        reminder.status = "pending"
        reminder.claimed_by = None
        reminder.sent_at = None
        reminder.due_at = due
        note_scheduled(session, due)
        return due
    payload["failed"] = True
    reminder.payload = payload
    if reminder.incident_id is not None:
        incident = session.get(Incident, reminder.incident_id)
        if incident is not None:
            append_event(
                session=session,
                incident=incident,
                actor=SCHEDULER,
                kind="reminder.failed",
                summary=f"Could not post the {reminder.kind} reminder: {error}",
                details={"reminder_id": reminder.id, "error": error, "attempts": attempts},
            )
    return None
