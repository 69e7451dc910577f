"""Approval expiry through the reminder scheduler, so a request expires on time, also after a
restart (the Reminder row is the truth). The bot's sweeper expires overdue requests too; the
atomic `expire_due` lets exactly one of them do it."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any

from sqlalchemy.orm import Session

from commands.approvals.requests import expire_due
from commands.deadlines.delivery import Delivery
from commands.deadlines.queue import schedule_reminder
from storage.models import ContainmentRequest, Incident, Reminder

KIND = "approval_expiry"


def dedupe_key(request_id: int) -> str:
    return f"approval-expiry:{request_id}"


def schedule_expiry(*, session: Session, incident: Incident, request: ContainmentRequest) -> None:
    if request.expires_at is None:
        return
    schedule_reminder(
        session=session,
        incident=incident,
        kind=KIND,
        due_at=request.expires_at,
        dedupe_key=dedupe_key(request.id),
        message=f"Containment request #{request.id} ({request.target_id}) expired "
        "without a decision; request it again if it is still needed.",
        payload={"request_id": request.id},
    )


def request_id_of(reminder: Reminder) -> int | None:
    value = (reminder.payload or {}).get("request_id")
    return int(value) if isinstance(value, int) else None


def deliver_expiry(
    *,
    session: Session,
    reminder: Reminder,
    incident: Incident | None,
    now: dt.datetime,
    policy: Any,
    base: Delivery,
) -> Delivery | None:
    """Expire the request if it is still pending; post nothing when it was decided (or
    another process expired it first)."""
    request_id = request_id_of(reminder)
    if request_id is None:
        return None
    expired = expire_due(session=session, now=now, request_ids=[request_id])
    if not expired:
        return None
    request = expired[0]
    key = f"{incident.key}: " if incident else ""
    return replace(
        base,
        text=f"⌛ {key}{base.text}",
        channel=request.card_channel or base.channel,
        thread_ts=request.card_ts or base.thread_ts,
        mention_contacts=False,
    )
