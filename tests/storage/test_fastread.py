"""storage/fastread.py: a SQLite read's rows are kept until the database changes."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sqlalchemy import update

from commands.incidents import open_incident
from commands.overview import _BY_NUMBER
from storage import fastread
from storage.db import Database
from storage.models import Incident


@pytest.fixture
def database(sqlite_database: Database) -> Database:
    with sqlite_database.session() as session:
        for title in ("First", "Second"):
            open_incident(session=session, title=title, created_by="U1")
    return sqlite_database


def statements(database: Database) -> list[str]:
    """Every SQL statement the prepared reads' kept connections run from now on."""
    ran: list[str] = []
    for raw in fastread._kept(database.engine).idle:
        raw.set_trace_callback(ran.append)
    return ran


def test_a_read_is_answered_from_kept_rows_while_nobody_commits(database: Database) -> None:
    read = fastread.prepared(database.engine, _BY_NUMBER)
    first = read.first(number=1)
    ran = statements(database)
    assert read.first(number=1) is first  # the same row, not read again
    assert [s for s in ran if s.startswith("SELECT")] == []
    assert ran == ["PRAGMA data_version"]
    assert read.first(number=2)["title"] == "Second"  # other parameters: read once
    assert [s for s in ran if s.startswith("SELECT")] != []


def test_a_commit_on_another_connection_is_seen_at_once(database: Database) -> None:
    read = fastread.prepared(database.engine, _BY_NUMBER)
    assert read.first(number=1)["status"] == "open"
    with database.session() as session:
        session.execute(update(Incident).where(Incident.number == 1).values(status="contained"))
    assert read.first(number=1)["status"] == "contained"


def test_a_commit_by_another_process_is_seen_at_once(database: Database) -> None:
    read = fastread.prepared(database.engine, _BY_NUMBER)
    assert read.first(number=2)["title"] == "Second"
    path = database.engine.url.database
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
            "c.execute(\"UPDATE incidents SET title = 'Renamed' WHERE number = 2\"); c.commit()",
            path,
        ],
        check=True,
    )
    assert read.first(number=2)["title"] == "Renamed"


def test_a_kept_row_never_hands_two_readers_one_mutable_value(database: Database) -> None:
    with database.session() as session:
        session.execute(
            update(Incident).where(Incident.number == 1).values(facts={"resource": {"id": "i-1"}})
        )
    read = fastread.prepared(database.engine, _BY_NUMBER)
    mine = read.first(number=1)["facts"]
    mine["resource"]["id"] = "changed by a careless reader"
    again = read.first(number=1)
    assert again is read.first(number=1)  # still the kept row...
    assert again["facts"]["resource"]["id"] == "i-1"  # ...converted afresh


def test_kept_rows_are_bounded(database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fastread, "KEPT_READS", 3)
    read = fastread.prepared(database.engine, _BY_NUMBER)
    for number in range(1, 10):
        read.first(number=number)
    kept = fastread._kept(database.engine)
    assert all(len(rows) <= 3 for rows in kept.rows.values())
