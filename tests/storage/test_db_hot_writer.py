"""Database.hot_writer: one kept SQLite connection per process for the replay check's INSERT."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from storage.db import Database
from storage.migrate import upgrade
from tests.clock import TEST_CLOCK


@pytest.fixture
def sqlite_db(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'hot.db'}"
    upgrade(url)
    db = Database(url, clock=TEST_CLOCK)
    yield db
    db.dispose()


def pragma(conn, name: str):
    return conn.execute(f"PRAGMA {name}").fetchone()[0]


def test_one_connection_kept_without_the_wal_checkpoint(sqlite_db: Database) -> None:
    with sqlite_db.hot_writer() as first:
        first.execute("INSERT INTO cursors (name, value, updated_at) VALUES ('a', '1', '2024')")
    with sqlite_db.hot_writer() as again:
        assert again is first  # kept, not checked out of the pool each time
        assert pragma(again, "wal_autocheckpoint") == 0  # never a checkpoint on the ack's path
        assert pragma(again, "journal_mode") == "wal"  # configured like every pooled one
        assert pragma(again, "busy_timeout") == 30_000
        assert not again.in_transaction  # each statement commits on its own
    pooled = sqlite_db.engine.raw_connection()
    try:  # the other connections keep SQLite's checkpoint, and see the committed row
        assert pragma(pooled.driver_connection, "wal_autocheckpoint") == 1000
        assert pooled.driver_connection.execute("SELECT value FROM cursors").fetchall() == [("1",)]
    finally:
        pooled.close()


def test_threads_take_turns(sqlite_db: Database) -> None:
    inside: list[int] = []
    overlaps: list[int] = []

    def insert(n: int) -> None:
        for i in range(50):
            with sqlite_db.hot_writer() as conn:
                inside.append(n)
                if len(inside) > 1:
                    overlaps.append(n)
                conn.execute(
                    "INSERT INTO cursors (name, value, updated_at) VALUES (?, '1', '2024')",
                    (f"{n}-{i}",),
                )
                inside.remove(n)

    threads = [threading.Thread(target=insert, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert overlaps == []
    with sqlite_db.hot_writer() as conn:
        assert conn.execute("SELECT count(*) FROM cursors").fetchone()[0] == 200


def test_a_forked_child_opens_its_own_and_dispose_closes_it(
    sqlite_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    with sqlite_db.hot_writer() as parents:
        pass
    real_pid = os.getpid()
    monkeypatch.setattr(os, "getpid", lambda: real_pid + 1)  # as in a forked worker
    with sqlite_db.hot_writer() as childs:
        assert childs is not parents  # never the parent's connection across a fork
        childs.execute("SELECT 1")
    sqlite_db.dispose()  # the child's own is closed; the parent's is left to the parent
    with pytest.raises(Exception, match="closed"):
        childs.execute("SELECT 1")
    assert parents.execute("SELECT 1").fetchone() == (1,)
    parents.close()
    with sqlite_db.hot_writer() as reopened:  # usable again after dispose, like the engine
        assert reopened.execute("SELECT 1").fetchone() == (1,)


def test_not_for_postgresql() -> None:
    db = Database("postgresql+psycopg://nobody@127.0.0.1:1/none", clock=TEST_CLOCK)
    with pytest.raises(TypeError, match="SQLite"), db.hot_writer():
        pass
