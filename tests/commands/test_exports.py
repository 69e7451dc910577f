"""The JSON export writes each event's stored details text as it is (no decode/re-encode)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from commands.exports import export_timeline
from commands.incidents import open_incident
from storage.db import Database
from storage.migrate import upgrade
from storage.models import Incident, TimelineEvent
from storage.timeline import append_event, iso

pytestmark = pytest.mark.dates

AWKWARD = [
    ("U1", "note", 'quotes "inside", a comma, and a colon: here', {"a": 1, "b": [1, 2.5, None]}),
    (
        "U2",
        "note",
        "Grüße, 日本語 and an emoji 🚨",
        {"text": "ünïcode \u2028 line sep", "ok": True},
    ),
    ("system", "aws", "line one\nline two\ttab \\ backslash", {"nested": {"z": 'a,"b":c'}}),
    ("U1", "note", "control \x01 char", {}),
]


@pytest.fixture
def db(db_url: str, clock) -> Iterator[Database]:
    upgrade(db_url)
    database = Database(db_url, clock=clock)
    yield database
    database.dispose()


def _incident(db: Database) -> int:
    with db.session() as s:
        inc = open_incident(session=s, title="Export «title»", created_by="U1")
        for actor, kind, summary, details in AWKWARD:
            append_event(
                session=s, incident=inc, actor=actor, kind=kind, summary=summary, details=details
            )
        return inc.id


def _export(db: Database, incident_id: int) -> str:
    out = io.StringIO()
    with db.read_session() as s:
        n = export_timeline(session=s, incident=s.get(Incident, incident_id), fmt="json", out=out)
    assert n == 1 + len(AWKWARD)
    return out.getvalue()


def _decoded_reference(db: Database, incident_id: int) -> list[dict]:
    """What the export held when it decoded and re-encoded every row through the ORM."""
    with db.read_session() as s:
        rows = s.query(TimelineEvent).filter_by(incident_id=incident_id).order_by("seq").all()
        return [
            {
                "seq": r.seq,
                "at": iso(r.occurred_at),
                "actor": r.actor,
                "kind": r.kind,
                "summary": r.summary,
                "details": json.loads(r.details),
                "prev_hash": r.prev_hash,
                "hash": r.hash,
            }
            for r in rows
        ]


def test_the_json_export_holds_the_same_values_and_the_hashed_details_text(db) -> None:
    iid = _incident(db)
    out = _export(db, iid)
    data = json.loads(out)
    assert data["incident"] == "INC-1" and data["title"] == "Export «title»"
    assert data["events"] == _decoded_reference(db, iid)
    with db.read_session() as s:
        stored = [
            (r.details, r.prev_hash)
            for r in s.query(TimelineEvent).filter_by(incident_id=iid).order_by("seq")
        ]
    for details, _ in stored:  # byte for byte what the chain hashed
        assert f'"details": {details}, "prev_hash"' in out
    # The layout around the details is the one the export always had.
    assert out.startswith('{"incident": "INC-1", "title": "Export \\u00abtitle\\u00bb", ')
    assert '"summary": "Grüße, 日本語 and an emoji 🚨"' in out
    assert out.endswith("]}\n")


def test_a_damaged_details_value_is_exported_as_a_string_and_the_file_stays_json(db) -> None:
    iid = _incident(db)
    with db.session() as s:
        s.execute(
            text("UPDATE timeline_events SET details = :bad WHERE incident_id = :i AND seq = 2"),
            {"bad": '{"half": ', "i": iid},
        )
    data = json.loads(_export(db, iid))
    assert data["events"][1]["details"] == '{"half": '
    assert data["events"][2]["details"] == AWKWARD[1][3]


def test_an_event_time_stored_without_microseconds_exports_like_any_other(
    sqlite_url: str, clock
) -> None:
    upgrade(sqlite_url)
    db = Database(sqlite_url, clock=clock)
    try:
        iid = _incident(db)
        with db.session() as s:  # as a hand-made row or an old writer might have stored it
            s.execute(
                text("UPDATE timeline_events SET occurred_at = '2026-11-27 12:00:05' WHERE seq = 3")
            )
        events = json.loads(_export(db, iid))["events"]
        assert events[2]["at"] == "2026-11-27T12:00:05.000000Z"
        assert events == _decoded_reference(db, iid)
    finally:
        db.dispose()
