"""commands/overview.py: the status/list reads on the ack path, on SQLite and PostgreSQL.

They run as prepared statements on raw DBAPI connections (storage/fastread.py), so these tests
check they return what the ORM sees: aware UTC datetimes, booleans, pending approvals and the
soonest deadline."""

from __future__ import annotations

import datetime as dt

import pytest

from commands.incidents import mark_personal_data, open_incident, set_status
from commands.overview import live_overviews, overview, overview_by_channel, overview_by_number
from storage.models import ContainmentRequest, Incident

pytestmark = pytest.mark.dates  # CI reruns these with the clock shifted (.ci/run)


def seed(database) -> None:
    with database.session() as session:
        first = open_incident(session=session, title="First <b>", created_by="U1", severity="high")
        second = open_incident(session=session, title="Second", created_by="U2")
        second.channel_id = "C0OWN"
        third = open_incident(session=session, title="Done", created_by="U3")
        set_status(session=session, incident=third, actor="U3", status="closed", summary="ok")
        mark_personal_data(session=session, incident=first, actor="U1")
        soon = database.clock.now() + dt.timedelta(minutes=10)
        for expires in (soon, soon + dt.timedelta(minutes=5)):
            session.add(
                ContainmentRequest(
                    incident_id=second.id,
                    target_type="ec2_instance",
                    target_id="i-1",
                    requested_by="U2",
                    expires_at=expires,
                    status="pending",
                )
            )
        session.add(
            ContainmentRequest(
                incident_id=second.id,
                target_type="ec2_instance",
                target_id="i-2",
                requested_by="U2",
                expires_at=soon - dt.timedelta(minutes=5),
                status="rejected",
            )
        )


def test_by_number_matches_the_orm(database):
    seed(database)
    view = overview_by_number(database=database, number=1, gdpr_hours=72)
    with database.read_session() as session:
        orm = session.get(Incident, 1)
        expected = overview(session=session, incidents=[orm], gdpr_hours=72)[0]
        for field in (
            "key",
            "title",
            "severity",
            "status",
            "owner",
            "created_at",
            "aware_at",
            "personal_data",
            "is_drill",
            "notified_at",
        ):
            assert getattr(view.incident, field) == getattr(orm, field), field
    assert view.incident.created_at.tzinfo is not None
    assert view.incident.personal_data is True and view.incident.is_drill is False
    assert view.next_deadline == expected.next_deadline
    assert view.next_deadline.what == "regulator notice"
    assert overview_by_number(database=database, number=99, gdpr_hours=72) is None


def test_pending_approvals_and_soonest_expiry(database):
    seed(database)
    view = overview_by_number(database=database, number=2, gdpr_hours=72)
    assert view.pending_approvals == 2
    assert view.next_deadline.what == "approval expires"
    assert (
        dt.timedelta(minutes=9)
        < view.next_deadline.due_at - database.clock.now()
        <= dt.timedelta(minutes=10)
    )


def test_by_channel_and_live_list(database):
    seed(database)
    assert (
        overview_by_channel(database=database, channel_id="C0OWN", gdpr_hours=72).incident.key
        == "INC-2"
    )
    assert overview_by_channel(database=database, channel_id="C0NONE", gdpr_hours=72) is None
    assert [v.incident.key for v in live_overviews(database=database, gdpr_hours=72)] == [
        "INC-1",
        "INC-2",
    ]


def test_a_row_converts_what_is_read_and_equals_what_core_returns(database):
    """LazyRow: each column converted on first read (a status answer never parses `facts`),
    and as a mapping the row is every selected column, converted as Core converts it."""
    from sqlalchemy import select

    from commands.overview import _BY_NUMBER
    from storage.fastread import prepared

    seed(database)
    read = prepared(database.engine, _BY_NUMBER)
    row = read.first(number=1)
    assert row["title"] == "First <b>" and row._done == {"title": "First <b>"}
    with database.engine.connect() as conn:
        core = conn.execute(select(Incident.__table__).where(Incident.number == 1)).mappings().one()
    assert {k: row[k] for k in core} == dict(core)
    assert set(row) == set(core) | {"_pending", "_expires"} and len(row) == len(core) + 2
    with pytest.raises(KeyError):
        row["nope"]


def test_sqlite_reads_reuse_kept_connections_until_dispose(tmp_path):
    """SQLite prepared reads skip the pool: the warmest kept connection is reused, a failed
    read's connection is dropped, and Database.dispose closes them."""
    from commands.overview import _BY_NUMBER
    from storage import fastread
    from storage.db import Database
    from storage.migrate import upgrade
    from tests.clock import TEST_CLOCK

    url = f"sqlite:///{tmp_path / 'kept.db'}"
    upgrade(url)
    database = Database(url, clock=TEST_CLOCK)
    seed(database)
    read = fastread.prepared(database.engine, _BY_NUMBER)
    assert read.first(number=1)["number"] == 1
    kept = fastread._kept(database.engine)
    assert len(kept.idle) == 1 and len(kept.opened) == 1
    conn = kept.idle[0]
    assert read.first(number=2)["number"] == 2 and kept.idle == [conn]  # the same one again
    assert database.engine.pool.checkedout() == 0  # none borrowed from the pool meanwhile
    broken = fastread.PreparedRead.__new__(fastread.PreparedRead)
    broken.__dict__.update(read.__dict__, sql="SELECT nope FROM incidents WHERE number = ?")
    with pytest.raises(Exception, match="no such column"):
        broken.all(number=1)  # fails on the kept connection...
    assert kept.idle == [] and kept.opened == {}  # ...which is closed, not reused
    with pytest.raises(Exception, match="closed"):
        conn.execute("SELECT 1")
    assert read.first(number=1) is not None
    database.dispose()
    assert fastread._kept_by_pool.get(database.engine.pool) is None
    assert read.first(number=1)["number"] == 1  # reopened after dispose, like the pool
    database.dispose()


def test_an_unchanged_row_gives_the_same_overview_until_the_database_changes(
    sqlite_database,
):
    """The status answer's overview is built once per kept row (storage/fastread.py keeps a
    SQLite read's rows while nothing commits); a commit gives a new row and a new overview."""
    db = sqlite_database
    with db.session() as session:
        incident = open_incident(session=session, title="Beacon", created_by="U1")
    first = overview_by_number(database=db, number=1, gdpr_hours=72)
    assert overview_by_number(database=db, number=1, gdpr_hours=72) is first
    assert overview_by_number(database=db, number=1, gdpr_hours=24) is not first  # its policy
    with db.session() as session:
        mark_personal_data(session=session, incident=session.get(Incident, incident.id), actor="U1")
    changed = overview_by_number(database=db, number=1, gdpr_hours=72)
    assert changed is not first
    assert first.next_deadline is None
    assert changed.next_deadline is not None and changed.next_deadline.what == "regulator notice"
