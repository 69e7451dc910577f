"""Keyed timeline chains: HMAC under a key kept outside the database, and the head seal."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import text

from commands.incidents import open_incident
from storage.db import Database
from storage.migrate import upgrade
from storage.models import Incident
from storage.timeline import (
    KeyNeeded,
    TimelineKey,
    TimelineKeyError,
    append_event,
    event_hash,
    head_seal,
    stream_event_rows,
    verify_chain,
)

pytestmark = pytest.mark.dates

KEY = TimelineKey.from_secret("k" * 32)
OTHER = TimelineKey.from_secret("o" * 32)


@pytest.fixture
def keyed(db_url: str, clock) -> Iterator[Database]:
    upgrade(db_url)
    db = Database(db_url, clock=clock, timeline_key=KEY)
    yield db
    db.dispose()


def _incident_with_notes(db: Database, n: int = 9) -> int:
    with db.session() as s:
        inc = open_incident(session=s, title="c2", created_by="U1")
        for i in range(n):
            append_event(session=s, incident=inc, actor="U1", kind="note", summary=f"n{i}")
        return inc.id


def _verify(db: Database, incident_id: int, key: TimelineKey | None = KEY):
    with db.read_session() as s:
        return verify_chain(conn=s, incident=s.get(Incident, incident_id), key=key)


def test_a_new_incident_records_the_key_id_and_verifies_keyed(keyed) -> None:
    iid = _incident_with_notes(keyed)
    report = _verify(keyed, iid)
    assert report.ok and report.keyed and report.key_id == KEY.id and report.events == 10
    with keyed.read_session() as s:
        inc = s.get(Incident, iid)
        assert inc.timeline_key_id == KEY.id and KEY.id.startswith("env:")
        assert "k" * 32 not in repr(KEY) + KEY.id


def test_truncation_with_a_rewritten_head_breaks_the_seal(keyed) -> None:
    iid = _incident_with_notes(keyed)
    with keyed.read_session() as s:
        hashes = [r.hash for r in stream_event_rows(conn=s, incident_id=iid)]
    # Delete the newest six and point the head at what is now the last event.
    with keyed.engine.begin() as conn:
        conn.execute(
            text("DELETE FROM timeline_events WHERE incident_id = :i AND seq > 4"), {"i": iid}
        )
        conn.execute(
            text("UPDATE incidents SET timeline_head = :h, timeline_count = 4 WHERE id = :i"),
            {"h": hashes[3], "i": iid},
        )
    report = _verify(keyed, iid)
    assert not report.ok and report.first_bad_seq == 4
    assert "seal" in (report.reason or "")


def test_an_unkeyed_recomputation_of_a_middle_event_is_caught(keyed) -> None:
    iid = _incident_with_notes(keyed)
    with keyed.read_session() as s:
        inc = s.get(Incident, iid)
        rows = list(stream_event_rows(conn=s, incident_id=iid))
        number = inc.number
    # Whoever holds only the database rewrites #5 and recomputes the chain from there.
    prev = rows[3].hash
    with keyed.engine.begin() as conn:
        for row in rows[4:]:
            summary = "nothing happened" if row.seq == 5 else row.summary
            digest = event_hash(
                prev_hash=prev,
                incident_number=number,
                seq=row.seq,
                occurred_at=row.occurred_at,
                actor=row.actor,
                kind=row.kind,
                summary=summary,
                details=row.details,
            )
            conn.execute(
                text(
                    "UPDATE timeline_events SET summary = :s, prev_hash = :p, hash = :h "
                    "WHERE incident_id = :i AND seq = :q"
                ),
                {"s": summary, "p": prev, "h": digest, "i": iid, "q": row.seq},
            )
            prev = digest
        conn.execute(
            text("UPDATE incidents SET timeline_head = :h WHERE id = :i"), {"h": prev, "i": iid}
        )
    report = _verify(keyed, iid)
    assert not report.ok and report.first_bad_seq == 5
    assert "keyed hash" in (report.reason or "")


def test_a_replaced_key_is_named_with_both_ids(keyed, clock) -> None:
    iid = _incident_with_notes(keyed)
    report = _verify(keyed, iid, key=OTHER)
    assert not report.ok
    assert KEY.id in report.reason and OTHER.id in report.reason
    with pytest.raises(KeyNeeded, match="INCIDENT_BOT_TIMELINE_KEY"):
        _verify(keyed, iid, key=None)


def test_appending_to_a_keyed_chain_without_its_key_is_refused(keyed, db_url, clock) -> None:
    iid = _incident_with_notes(keyed, 1)
    unkeyed = Database(db_url, clock=clock)
    try:
        with (
            pytest.raises(TimelineKeyError, match="set INCIDENT_BOT_TIMELINE_KEY"),
            unkeyed.session() as s,
        ):
            append_event(
                session=s, incident=s.get(Incident, iid), actor="U1", kind="n", summary="x"
            )
    finally:
        unkeyed.dispose()
    assert _verify(keyed, iid).events == 2  # nothing half-written


def test_a_legacy_chain_keeps_plain_sha256_and_verifies_unkeyed(db_url, clock) -> None:
    upgrade(db_url)
    legacy = Database(db_url, clock=clock)
    iid = _incident_with_notes(legacy, 2)
    legacy.dispose()
    keyed = Database(db_url, clock=clock, timeline_key=KEY)
    try:
        with keyed.session() as s:  # a keyed process goes on appending to the legacy chain
            append_event(
                session=s, incident=s.get(Incident, iid), actor="U1", kind="n", summary="x"
            )
        report = _verify(keyed, iid)
        assert report.ok and not report.keyed and report.events == 4
        with keyed.read_session() as s:
            assert s.get(Incident, iid).timeline_seal is None
    finally:
        keyed.dispose()


def test_the_seal_binds_count_and_head() -> None:
    a = head_seal(key=KEY, incident_number=1, count=4, head="a" * 64)
    assert a != head_seal(key=KEY, incident_number=1, count=3, head="a" * 64)
    assert a != head_seal(key=OTHER, incident_number=1, count=4, head="a" * 64)
