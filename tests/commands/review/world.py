"""A reviewed incident written the way the bot writes one: a GuardDuty finding, the opening,
a responder's note, an approved containment with its steps and evidence, the regulator clock
and its (late) notice, resolution and the review. Times are set on a ManualClock."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select

from commands import incidents as svc
from commands.review.report import record_review
from storage.db import Database
from storage.facts import set_origin
from storage.models import ActionStep, ContainmentRequest, Finding, Incident
from storage.timeline import append_event
from tests.clock import T0, manual

HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned=2">'
TITLE = f"C2 beacon from i-0abc & {HOSTILE}"
ANSWERS = {
    "summary": f"Instance beaconed to a C2 domain. {HOSTILE}",
    "root_cause": "An outdated web framework with a public RCE.",
    "went_well": "Containment within minutes of approval.",
    "to_improve": "The regulator notice went out late | tables must survive pipes.",
    "lessons": "Patch SLAs for internet-facing hosts.",
}
CONSOLE_SHA = "a" * 64
SCREENSHOT_SHA = "b" * 64


def at(**delta: float) -> dt.datetime:
    return T0 + dt.timedelta(**delta)


def build(url: str, *, key_number: int | None = None, drill: bool = False) -> Database:
    """Write the incident into the migrated database at `url`; returns the Database."""
    clock = manual(T0)
    db = Database(url, clock=clock)
    with db.session() as session:
        incident = svc.open_incident(
            session=session,
            title=TITLE,
            created_by="guardduty",
            severity="high",
            resource_id="i-0abc",
            resource_type="Instance",
            is_drill=drill,
        )
        set_origin(incident, source="guardduty", sample=False, tags={})
        session.add(
            Finding(
                finding_id=f"f-{incident.number}",
                type="Backdoor:EC2/C&CActivity.B!DNS",
                severity=8.0,
                resource_id="i-0abc",
                first_seen=at(minutes=-10),
                raw={},
                incident_id=incident.id,
            )
        )
        key = incident.key
    steps = _events(db, clock, key)
    _containment(db, key, steps)
    return db


def _events(db: Database, clock: Any, key: str) -> list[tuple[str, dt.datetime, dt.datetime]]:
    def write(when: dt.datetime, fn: Any) -> None:
        clock.set(when)
        with db.session() as session:
            fn(session, svc.get_incident(session=session, key=key))

    write(
        at(minutes=1),
        lambda s, i: svc.mark_personal_data(session=s, incident=i, actor="system"),
    )
    write(
        at(minutes=4),
        lambda s, i: svc.add_note(session=s, incident=i, actor="U0RESPONDER", text="looking"),
    )
    write(
        at(minutes=8),
        lambda s, i: append_event(
            session=s,
            incident=i,
            actor="U0APPROVER",
            kind="containment.approved",
            summary="Approved contain of i-0abc (request #1, requested by guardduty)",
            details={"request_id": 1},
        ),
    )
    write(
        at(minutes=20),
        lambda s, i: svc.set_status(
            session=s, incident=i, actor="system", status="contained", summary="contained"
        ),
    )
    write(
        at(hours=80),
        lambda s, i: svc.record_notified(
            session=s, incident=i, actor="U0RESPONDER", reference="DPA-1 <b>"
        ),
    )
    write(
        at(days=4),
        lambda s, i: svc.resolve_incident(
            session=s, incident=i, actor="U0RESPONDER", summary="rebuilt"
        ),
    )
    write(
        at(days=5),
        lambda s, i: record_review(session=s, incident=i, actor="U0RESPONDER", answers=ANSWERS),
    )
    return [
        ("capture", at(minutes=9), at(minutes=10)),
        ("isolate", at(minutes=10), at(minutes=12)),
        ("snapshot", at(minutes=10), at(minutes=15)),
        ("evidence", at(minutes=10), at(minutes=11)),
    ]


def _containment(db: Database, key: str, steps: list[tuple[str, Any, Any]]) -> None:
    evidence = {
        "capture": {
            "console_output_sha256": CONSOLE_SHA,
            "screenshot": {"available": True, "sha256": SCREENSHOT_SHA, "bytes": 10},
        },
        "isolate": {},
        "snapshot": {"snapshots": [{"id": "snap-1", "volume_id": "vol-1"}]},
        "evidence": {
            "bucket": "ir-evidence",
            "key": f"incidents/{key}/instance/i-0abc/capture.json",
            "version_id": "v1",
            "etag": '"e"',
        },
    }
    with db.session() as session:
        incident = session.scalars(select(Incident).where(Incident.number == int(key[4:]))).one()
        request = ContainmentRequest(
            incident_id=incident.id,
            kind="contain",
            target_type="instance",
            target_id="i-0abc",
            requested_by="guardduty",
            requested_at=at(minutes=2),
            status="succeeded",
            decided_by="U0APPROVER",
            decided_at=at(minutes=8),
            started_at=at(minutes=9),
            finished_at=at(minutes=15),
            plan={},
        )
        session.add(request)
        session.flush()
        for position, (action, started, finished) in enumerate(steps):
            session.add(
                ActionStep(
                    request_id=request.id,
                    position=position,
                    action=action,
                    status="succeeded",
                    started_at=started,
                    finished_at=finished,
                    result={"action": action, "evidence": evidence[action]},
                )
            )
