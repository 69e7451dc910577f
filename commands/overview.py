"""What a responder needs at a glance per incident: pending approvals and the next deadline.

Read-only; used by the incident card, `/incident status|list` and the App Home tab.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.models import ContainmentRequest, Incident


@dataclass(frozen=True)
class Deadline:
    what: str  # "regulator notice", "approval expires"
    due_at: dt.datetime


@dataclass(frozen=True)
class IncidentOverview:
    incident: Incident
    pending_approvals: int
    next_deadline: Deadline | None


def regulator_deadline(incident: Incident, *, gdpr_hours: float) -> Deadline | None:
    """When the regulator must be told, while the clock runs (personal data, not yet notified)."""
    if not incident.personal_data or incident.aware_at is None or incident.notified_at:
        return None
    return Deadline("regulator notice", incident.aware_at + dt.timedelta(hours=gdpr_hours))


def overview(
    *, session: Session, incidents: Sequence[Incident], gdpr_hours: float
) -> list[IncidentOverview]:
    """One IncidentOverview per incident, in the given order, with two grouped queries."""
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
    out = []
    for incident in incidents:
        count, expires = pending.get(incident.id, (0, None))
        candidates = [d for d in (regulator_deadline(incident, gdpr_hours=gdpr_hours),) if d]
        if expires is not None:
            if expires.tzinfo is None:  # func.min bypasses the column type on SQLite
                expires = expires.replace(tzinfo=dt.UTC)
            candidates.append(Deadline("approval expires", expires))
        soonest = min(candidates, key=lambda d: d.due_at) if candidates else None
        out.append(IncidentOverview(incident, count, soonest))
    return out
