from __future__ import annotations

import threading

import pytest
from sqlalchemy import select, text

from commands.incidents import open_incident
from storage.models import Incident, TimelineEvent
from storage.timeline import append_event, latest_events, verify_chain

pytestmark = pytest.mark.dates  # CI reruns these with the clock shifted (.ci/run)


def _open(database, title: str = "c2 traffic") -> Incident:
    with database.session() as s:
        return open_incident(session=s, title=title, created_by="U1")


def test_four_threads_append_2000_events_and_chain_verifies(database) -> None:
    incident = _open(database)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(500):
                with database.session() as s:
                    inc = s.get(Incident, incident.id)
                    append_event(
                        session=s, incident=inc, actor=f"U{n}", kind="note", summary=f"{n}-{i}"
                    )
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with database.read_session() as s:
        inc = s.get(Incident, incident.id)
        report = verify_chain(conn=s, incident=inc)
        seqs = s.scalars(select(TimelineEvent.seq).where(TimelineEvent.incident_id == inc.id)).all()
    # 2,000 notes plus the "opened" event, numbered 1..2001 with no gap.
    assert report.ok, report
    assert report.events == 2001
    assert sorted(seqs) == list(range(1, 2002))


def test_tampering_with_one_row_is_found_at_that_event(database) -> None:
    incident = _open(database)
    with database.session() as s:
        inc = s.get(Incident, incident.id)
        for i in range(10):
            append_event(session=s, incident=inc, actor="U1", kind="note", summary=f"n{i}")
    with database.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE timeline_events SET summary = 'nothing happened' "
                "WHERE incident_id = :i AND seq = 6"
            ),
            {"i": incident.id},
        )
    with database.read_session() as s:
        report = verify_chain(conn=s, incident=s.get(Incident, incident.id))
    assert not report.ok
    assert report.first_bad_seq == 6


def test_deleting_the_newest_event_is_detected(database) -> None:
    incident = _open(database)
    with database.session() as s:
        inc = s.get(Incident, incident.id)
        for i in range(3):
            append_event(session=s, incident=inc, actor="U1", kind="note", summary=f"n{i}")
    with database.engine.begin() as conn:
        conn.execute(
            text("DELETE FROM timeline_events WHERE incident_id = :i AND seq = 4"),
            {"i": incident.id},
        )
    with database.read_session() as s:
        report = verify_chain(conn=s, incident=s.get(Incident, incident.id))
    assert not report.ok
    assert report.first_bad_seq == 4


def test_latest_events_newest_first(database) -> None:
    incident = _open(database)
    with database.session() as s:
        inc = s.get(Incident, incident.id)
        for i in range(30):
            append_event(session=s, incident=inc, actor="U1", kind="note", summary=f"n{i}")
    with database.read_session() as s:
        got = latest_events(session=s, incident=s.get(Incident, incident.id), limit=20)
    assert [e.summary for e in got][:2] == ["n29", "n28"]
    assert len(got) == 20


def test_details_roundtrip_is_canonical_and_times_are_utc(database) -> None:
    incident = _open(database)
    with database.session() as s:
        inc = s.get(Incident, incident.id)
        ev = append_event(
            session=s,
            incident=inc,
            actor="guardduty",
            kind="finding",
            summary="x",
            details={"b": 1, "a": [1, 2]},
        )
    with database.read_session() as s:
        row = s.scalars(
            select(TimelineEvent).where(
                TimelineEvent.incident_id == ev.incident_id, TimelineEvent.seq == ev.seq
            )
        ).one()
        assert row.hash == ev.hash
        assert row.details == '{"a":[1,2],"b":1}'
        assert row.occurred_at.utcoffset().total_seconds() == 0


def test_one_transaction_appends_to_new_and_existing_incidents_in_one_go(database) -> None:
    from commands.incidents import new_incident
    from storage.timeline import NewEvent, append_to_timelines

    existing = _open(database)
    with database.session() as s:
        old = s.get(Incident, existing.id)
        fresh, opened = new_incident(session=s, title="second host", created_by="guardduty")
        append_to_timelines(
            session=s,
            batches=[
                (fresh, [opened, NewEvent("guardduty", "finding.joined", "joined")]),
                (old, [NewEvent("U1", "note", "first")]),
            ],
        )
        # Later appends in the same transaction continue from the tails just written.
        append_event(session=s, incident=old, actor="U1", kind="note", summary="second")
        append_event(session=s, incident=fresh, actor="U1", kind="note", summary="third")
    with database.read_session() as s:
        for incident_id, kinds in (
            (existing.id, ["incident.opened", "note", "note"]),
            (fresh.id, ["incident.opened", "finding.joined", "note"]),
        ):
            incident = s.get(Incident, incident_id)
            assert verify_chain(conn=s, incident=incident).ok
            assert incident.timeline_count == len(kinds)
            assert [e.kind for e in reversed(latest_events(session=s, incident=incident))] == kinds


def test_a_rolled_back_savepoint_leaves_no_stale_tail(database) -> None:
    incident = _open(database)
    with database.session() as s:
        inc = s.get(Incident, incident.id)
        append_event(session=s, incident=inc, actor="U1", kind="note", summary="kept")
        savepoint = s.begin_nested()
        append_event(session=s, incident=inc, actor="U1", kind="note", summary="undone")
        savepoint.rollback()
        s.refresh(inc)
        append_event(session=s, incident=inc, actor="U1", kind="note", summary="after")
    with database.read_session() as s:
        inc = s.get(Incident, incident.id)
        assert verify_chain(conn=s, incident=inc).ok
        summaries = [e.summary for e in reversed(latest_events(session=s, incident=inc))]
        assert summaries[1:] == ["kept", "after"]
