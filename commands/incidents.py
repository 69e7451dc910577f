"""Incident lifecycle: open, find, annotate, change severity/status, the regulator clock.

Each function validates its input, changes state in the caller's session, appends to the
timeline and returns the incident. The caller owns the transaction (Database.session()),
so a failure anywhere leaves nothing half-written.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import Any, TypedDict, Unpack

from sqlalchemy import select
from sqlalchemy.orm import Session

from commands.deadlines.queue import cancel_reminders
from commands.errors import NotFound, UserError
from storage.db import clock_of
from storage.keys import next_value
from storage.models import SEVERITIES, Incident, IncidentTask
from storage.timeline import NewEvent, append_event, append_events

TITLE_MAX = 300
NOTE_MAX = 3000
KEY_RE = re.compile(r"^INC-(\d{1,9})$", re.IGNORECASE)

# Allowed moves; `contained` is optional, and any live incident may be closed.
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "open": ("contained", "resolved", "closed"),
    "contained": ("open", "resolved", "closed"),
    "resolved": ("open", "closed"),
    "closed": (),
}
SEVERITY_FROM_BAND = {s: s for s in SEVERITIES}


def parse_key(text: str) -> int | None:
    m = KEY_RE.match(text.strip())
    return int(m.group(1)) if m else None


def looks_like_key(text: str) -> bool:
    return parse_key(text) is not None


def _clean(text: str, *, limit: int, what: str) -> str:
    text = " ".join(text.split()) if what == "title" else text.strip()
    if not text:
        raise UserError(f"The {what} is empty: add some text after the command.")
    return text if len(text) <= limit else text[: limit - 1] + "…"


class IncidentFields(TypedDict, total=False):
    """`new_incident`'s optional fields, so `open_incident` passes them on unlisted."""

    severity: str
    channel_id: str | None
    account_id: str | None
    region: str | None
    resource_id: str | None
    resource_type: str | None
    is_drill: bool
    details: dict[str, Any] | None


def open_incident(
    *, session: Session, title: str, created_by: str, **fields: Unpack[IncidentFields]
) -> Incident:
    """`new_incident` with its `incident.opened` event appended at once."""
    incident, opened = new_incident(session=session, title=title, created_by=created_by, **fields)
    append_events(session=session, incident=incident, events=[opened])
    return incident


def new_incident(
    *,
    session: Session,
    title: str,
    created_by: str,
    severity: str = "medium",
    channel_id: str | None = None,
    account_id: str | None = None,
    region: str | None = None,
    resource_id: str | None = None,
    resource_type: str | None = None,
    is_drill: bool = False,
    details: dict[str, Any] | None = None,
) -> tuple[Incident, NewEvent]:
    """A numbered incident added to the session, and its `incident.opened` event, which the
    caller appends (`open_incident` at once; intake together with a batch's other events)."""
    title = _clean(title, limit=TITLE_MAX, what="title")
    if severity not in SEVERITIES:
        raise UserError(f"Severity must be one of {', '.join(SEVERITIES)}.")
    incident = Incident(
        number=next_value(session=session, name="incident"),
        title=title,
        severity=severity,
        status="open",
        channel_id=channel_id,
        created_by=created_by,
        owner=created_by if created_by not in ("guardduty", "system", "scheduler") else None,
        account_id=account_id,
        region=region,
        resource_id=resource_id,
        resource_type=resource_type,
        is_drill=is_drill,
        facts={},
    )
    session.add(incident)
    opened = NewEvent(
        created_by,
        "incident.opened",
        f"{'[DRILL] ' if is_drill else ''}Opened {incident.key}: {title}",
        {"severity": severity, "resource_id": resource_id, **(details or {})},
    )
    return incident, opened


def require_key(key: str) -> int:
    """The incident number in key, or a UserError showing the form a key takes."""
    number = parse_key(key)
    if number is None:
        raise UserError("{key!s} is not an incident key: use the form INC-42.", key=key)
    return number


def get_incident(*, session: Session, key: str, for_update: bool = False) -> Incident:
    number = require_key(key)
    stmt = select(Incident).where(Incident.number == number)
    if for_update and session.get_bind().dialect.name != "sqlite":
        stmt = stmt.with_for_update()
    incident = session.scalars(stmt).first()
    if incident is None:
        raise NotFound(f"No incident INC-{number}. /incident list shows the open ones.")
    return incident


def find_by_channel(
    *, session: Session, channel_id: str, thread_ts: str | None = None
) -> Incident | None:
    """The incident a channel or thread belongs to, so its key may be implied."""
    if thread_ts:
        inc = session.scalars(
            select(Incident).where(
                Incident.channel_id == channel_id, Incident.thread_ts == thread_ts
            )
        ).first()
        if inc:
            return inc
    # A per-incident channel (no thread_ts recorded; the whole channel is the incident).
    return session.scalars(
        select(Incident).where(Incident.channel_id == channel_id, Incident.thread_ts.is_(None))
    ).first()


def find_open_for_resource(*, session: Session, resource_id: str) -> Incident | None:
    return session.scalars(
        select(Incident)
        .where(Incident.resource_id == resource_id, Incident.status.in_(("open", "contained")))
        .order_by(Incident.number.desc())
    ).first()


def list_open(*, session: Session, include_drills: bool = True) -> Sequence[Incident]:
    stmt = (
        select(Incident).where(Incident.status.in_(("open", "contained"))).order_by(Incident.number)
    )
    if not include_drills:
        stmt = stmt.where(Incident.is_drill.is_(False))
    return session.scalars(stmt).all()


def add_note(*, session: Session, incident: Incident, actor: str, text: str) -> Incident:
    text = _clean(text, limit=NOTE_MAX, what="note")
    append_event(session=session, incident=incident, actor=actor, kind="note", summary=text)
    return incident


def set_severity(*, session: Session, incident: Incident, actor: str, severity: str) -> Incident:
    severity = severity.strip().lower()
    if severity not in SEVERITIES:
        raise UserError(
            f"Severity must be one of {', '.join(SEVERITIES)}, not {{severity!r}}.",
            severity=severity,
        )
    change = change_severity(incident=incident, actor=actor, severity=severity)
    if change is not None:
        append_events(session=session, incident=incident, events=[change])
    return incident


def change_severity(*, incident: Incident, actor: str, severity: str) -> NewEvent | None:
    """Set a (valid) severity; the `incident.severity` event for the caller to append."""
    if severity == incident.severity:
        return None
    old = incident.severity
    incident.severity = severity
    return NewEvent(
        actor, "incident.severity", f"Severity {old} → {severity}", {"from": old, "to": severity}
    )


def set_status(
    *,
    session: Session,
    incident: Incident,
    actor: str,
    status: str,
    summary: str | None = None,
    details: dict[str, Any] | None = None,
) -> Incident:
    if status == incident.status:
        return incident
    if status not in TRANSITIONS.get(incident.status, ()):
        if incident.status == "closed":
            raise UserError(f"{incident.key} is closed; open a new incident instead.")
        raise UserError(f"{incident.key} is {incident.status} and cannot become {status}.")
    old = incident.status
    incident.status = status
    now = clock_of(session).now()
    if status == "resolved":
        incident.resolved_at = now
    if status == "closed":
        incident.closed_at = now
    if summary:
        incident.resolution = summary
    append_event(
        session=session,
        incident=incident,
        actor=actor,
        kind="incident.status",
        summary=f"Status {old} → {status}" + (f": {summary}" if summary else ""),
        details={"from": old, "to": status, **(details or {})},
    )
    return incident


def resolve_incident(*, session: Session, incident: Incident, actor: str, summary: str) -> Incident:
    summary = _clean(summary, limit=NOTE_MAX, what="summary")
    return set_status(
        session=session, incident=incident, actor=actor, status="resolved", summary=summary
    )


def open_task_numbers(*, session: Session, incident: Incident) -> list[int]:
    """The numbers of the incident's follow-up tasks not yet done."""
    return list(
        session.scalars(
            select(IncidentTask.number)
            .where(IncidentTask.incident_id == incident.id, IncidentTask.done_at.is_(None))
            .order_by(IncidentTask.number)
        )
    )


def refuse_open_tasks(*, session: Session, incident: Incident) -> list[int]:
    """Raise the one-sentence refusal when open follow-up tasks block an unforced close."""
    left = open_task_numbers(session=session, incident=incident)
    if left:
        listed = ", ".join(f"#{n}" for n in left[:10])
        raise UserError(
            f"{incident.key} has {len(left)} open follow-up task(s) ({listed}): mark them done "
            f"on its card, or close anyway with `/incident close {incident.key} <summary> "
            "--force <reason>`."
        )
    return left


def close_incident(
    *,
    session: Session,
    incident: Incident,
    actor: str,
    summary: str,
    force_reason: str | None = None,
) -> Incident:
    """Close; open follow-up tasks refuse it unless forced with a reason (their reminders
    then stop, and the timeline names the tasks left open and why)."""
    summary = _clean(summary, limit=NOTE_MAX, what="summary")
    reason = " ".join((force_reason or "").split())
    left = (
        open_task_numbers(session=session, incident=incident)
        if reason
        else refuse_open_tasks(session=session, incident=incident)
    )
    set_status(session=session, incident=incident, actor=actor, status="closed", summary=summary)
    if left:
        reason = reason[:NOTE_MAX]
        append_event(
            session=session,
            incident=incident,
            actor=actor,
            kind="incident.close_forced",
            summary=f"Closed with {len(left)} open follow-up task(s) "
            f"({', '.join(f'#{n}' for n in left)}): {reason}",
            details={"open_tasks": left, "reason": reason},
        )
        cancel_reminders(
            session=session,
            incident=incident,
            kinds=("task",),
            actor=actor,
            reason="closed with open tasks",
        )
    return incident


def mark_personal_data(
    *,
    session: Session,
    incident: Incident,
    actor: str,
    aware_at: dt.datetime | None = None,
    reason: str = "marked personal-data",
) -> bool:
    """Start the regulator clock. Returns False when it was already running.

    Only the incident's side: commands.deadlines.gdpr.start_clock also schedules the
    reminders (with the caller's policy).
    """
    if incident.personal_data:
        return False
    incident.personal_data = True
    incident.aware_at = aware_at or clock_of(session).now()
    append_event(
        session=session,
        incident=incident,
        actor=actor,
        kind="incident.personal_data",
        summary=f"Personal data involved ({reason}); regulator clock started",
        details={"aware_at": incident.aware_at.isoformat(), "reason": reason},
    )
    return True


def record_notified(
    *, session: Session, incident: Incident, actor: str, reference: str
) -> Incident:
    reference = _clean(reference, limit=300, what="reference")
    if not incident.personal_data:
        raise UserError(
            f"{incident.key} has no regulator clock: mark it with /incident personal-data first."
        )
    incident.notified_at = clock_of(session).now()
    incident.notified_reference = reference
    append_event(
        session=session,
        incident=incident,
        actor=actor,
        kind="incident.notified",
        summary=f"Regulator notified: {reference}",
        details={"reference": reference},
    )
    return incident
