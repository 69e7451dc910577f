"""Approval expiry through the reminder scheduler, so a request expires on time, also after a
restart (the Reminder row is the truth). The reminder is scheduled with the request
(requests.request_containment); this is what it does when it comes due. The bot's sweeper
expires overdue requests too; the atomic `expire_due` lets exactly one of them do it."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any

from sqlalchemy.orm import Session

from commands.approvals.requests import EXPIRY_KIND, expire_due
from commands.deadlines.delivery import Delivery
from storage.models import Incident, Reminder

KIND = EXPIRY_KIND


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
    return replace(
        base,
        channel=request.card_channel or base.channel,
        thread_ts=request.card_ts or base.thread_ts,
        mention_contacts=False,
    )
