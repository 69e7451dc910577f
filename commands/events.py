"""Timeline events recorded on the side of something else."""

from __future__ import annotations

import logging
from typing import Any

from commands.incidents import get_incident
from storage.db import Database
from storage.models import Incident
from storage.timeline import append_event

log = logging.getLogger(__name__)


def record_quietly(
    database: Database,
    *,
    kind: str,
    summary: str,
    details: dict[str, Any],
    incident_id: int | None = None,
    incident_key: str | None = None,
    actor: str = "system",
) -> bool:
    """Append one timeline event; never raises (a record must not undo what it records,
    and the database may be what failed). The incident by id or by key. Whether it was
    written: callers must not say "recorded" when it was not."""
    try:
        with database.session() as session:
            incident = (
                session.get(Incident, incident_id)
                if incident_id is not None
                else get_incident(session=session, key=incident_key or "")
            )
            if incident is None:
                return False
            append_event(
                session=session,
                incident=incident,
                actor=actor,
                kind=kind,
                summary=summary,
                details=details,
            )
    except Exception:
        log.exception("could not record %s on incident %s", kind, incident_id or incident_key)
        return False
    return True
