"""storage/seen_requests.py: the replay check's store of keys already seen, on each backend."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from storage import seen_requests
from storage.db import Database, sqlite_file
from storage.migrate import upgrade
from storage.models import Cursor
from storage.seen_requests import SqliteSeen, TableSeen
from tests.clock import TEST_CLOCK

_TABLE = "CREATE TABLE seen (key TEXT PRIMARY KEY, seen INTEGER NOT NULL) WITHOUT ROWID"


def test_a_key_is_new_once_then_seen(database: Database) -> None:
    store = database.seen_requests()
    assert store.add("sig:a", seen=1_000)
    assert not store.add("sig:a", seen=1_001)  # a replay: the first sighting is kept
    assert store.add("sig:b", seen=1_002)
    assert store.add("event:a", seen=1_002)  # another prefix, another key
    assert store.keys("sig:") == {"sig:a": 1_000, "sig:b": 1_002}


def test_prune_forgets_only_keys_before_the_horizon(database: Database) -> None:
    store = database.seen_requests()
    for n, seen in enumerate((100, 199, 200, 5_000)):
        assert store.add(f"sig:{n}", seen=seen)
    store.prune(before=200)
    assert store.keys("sig:") == {"sig:2": 200, "sig:3": 5_000}
    assert store.add("sig:0", seen=6_000)  # forgotten keys are new again


def test_a_sqlite_database_keeps_its_keys_in_a_file_beside_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bot.db'}"
    upgrade(url)
    db = Database(url, clock=TEST_CLOCK)
    try:
        store = db.seen_requests()
        assert isinstance(store, SqliteSeen)
        assert store.add("sig:x", seen=1)
        assert (tmp_path / "bot.db-seen").is_file()
        with db.session() as session:  # the database itself is not written
            assert session.scalars(select(Cursor.name)).all() == []
        assert db.seen_requests() is store  # one per process
    finally:
        db.dispose()
    again = Database(url, clock=TEST_CLOCK)  # another process's view: the same keys
    try:
        assert not again.seen_requests().add("sig:x", seen=2)
    finally:
        again.dispose()


def test_a_database_without_its_own_file_keeps_its_keys_in_its_cursors(
    database: Database, tmp_path: Path
) -> None:
    """PostgreSQL, shared by replicas on many hosts; on SQLite, the same store over the
    database's own engine is what an in-memory database uses."""
    store = TableSeen(database.engine)
    if not database.is_sqlite:  # a SQLite file's store is its `-seen` file (below)
        assert isinstance(database.seen_requests(), TableSeen)
    assert store.add("sig:x", seen=1)
    with database.session() as session:
        assert session.scalars(select(Cursor.name)).all() == ["seen:sig:x"]


def test_an_in_memory_sqlite_database_uses_its_own_table() -> None:
    db = Database("sqlite://", clock=TEST_CLOCK)
    try:
        assert sqlite_file(db.engine.url) is None
        assert isinstance(db.seen_requests(), TableSeen)
    finally:
        db.dispose()


@pytest.mark.parametrize("batch", [1, 3, seen_requests.MAX_BATCH])
def test_threads_of_one_process_never_both_record_one_key(
    tmp_path: Path, batch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each key is new for exactly one thread, however the waiting keys are batched (a
    writer whose own key is not in the first batch writes the next ones too)."""
    monkeypatch.setattr(seen_requests, "MAX_BATCH", batch)
    store = SqliteSeen(str(tmp_path / "x-seen"), busy_timeout_ms=5_000)
    won: list[int] = []
    gate = threading.Barrier(8)

    def race(n: int) -> None:
        gate.wait()
        for i in range(100):
            if store.add(f"k{i}", seen=i):
                won.append(n)

    threads = [threading.Thread(target=race, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.close()
    assert len(won) == 100


def _add_all(path: str, start: multiprocessing.synchronize.Event, out: multiprocessing.Queue):
    store = SqliteSeen(path, busy_timeout_ms=30_000)
    start.wait()
    out.put(sum(store.add(f"k{i}", seen=i) for i in range(300)))
    store.close()


def test_processes_never_both_record_one_key(tmp_path: Path) -> None:
    path = str(tmp_path / "x-seen")
    SqliteSeen(path, busy_timeout_ms=1_000).close()  # created before the race
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_add_all, args=(path, start, out)) for _ in range(3)]
    for p in procs:
        p.start()
    start.set()
    totals = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    assert sum(totals) == 300, totals


def test_a_forked_child_opens_its_own_and_dispose_closes_only_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'bot.db'}"
    upgrade(url)
    db = Database(url, clock=TEST_CLOCK)
    parents = db.seen_requests()
    real_pid = os.getpid()
    monkeypatch.setattr(os, "getpid", lambda: real_pid + 1)  # as in a forked worker
    childs = db.seen_requests()
    assert childs is not parents  # never the parent's connection across a fork
    db.dispose()
    with pytest.raises((sqlite3.ProgrammingError, OSError)):  # its connection and lock, closed
        childs.add("k", seen=1)
    assert parents.add("k", seen=1)  # the parent's own is left to the parent
    parents.close()


def test_tidy_copies_the_inserts_into_the_file_itself(tmp_path: Path) -> None:
    """Inserts never checkpoint (not on an ack's path); `tidy`, run off it, does."""
    import shutil

    path = tmp_path / "x-seen"
    store = SqliteSeen(str(path), busy_timeout_ms=5_000)

    def rows_in_the_file_alone() -> int:
        copy = tmp_path / "copy"  # the file without its -wal: what a checkpoint wrote
        shutil.copyfile(path, copy)
        conn = sqlite3.connect(copy)
        try:
            if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'seen'").fetchone():
                return 0  # not even the table: it is still in the WAL
            return conn.execute("SELECT count(*) FROM seen").fetchone()[0]
        finally:
            conn.close()
            copy.unlink()

    for n in range(50):
        assert store.add(f"k{n}", seen=n)
    assert rows_in_the_file_alone() == 0
    store.tidy()
    assert rows_in_the_file_alone() == 50
    store.close()


def test_threads_asking_together_are_recorded_in_one_insert(tmp_path: Path) -> None:
    """Group commit: while one INSERT runs, the keys asked meanwhile wait for the next; the
    same key twice in one batch (a replay racing its original) is new for one asker only."""
    store = SqliteSeen(str(tmp_path / "x-seen"), busy_timeout_ms=5_000)
    inserts: list[str] = []
    store._conn.set_trace_callback(
        lambda sql: inserts.append(sql) if sql.startswith("INSERT") else None
    )
    release = threading.Event()
    real_insert = store._insert

    def slow_first(batch):  # hold the first batch until every other thread is waiting
        if not inserts:
            release.wait(5)
        real_insert(batch)

    store._insert = slow_first  # type: ignore[method-assign]
    answers: dict[int, bool] = {}

    def ask(n: int) -> None:
        answers[n] = store.add("dup" if n >= 6 else f"k{n}", seen=1)

    first = threading.Thread(target=ask, args=(0,))
    first.start()
    while not store._writing:
        time.sleep(0.001)
    others = [threading.Thread(target=ask, args=(n,)) for n in range(1, 8)]
    for t in others:
        t.start()
    while len(store._waiting) < 7:
        time.sleep(0.001)
    release.set()
    for t in (first, *others):
        t.join(5)
    store.close()
    assert len(inserts) == 2, inserts  # the first key alone, then the seven that waited
    assert [answers[n] for n in range(6)] == [True] * 6
    assert sorted([answers[6], answers[7]]) == [False, True]


def test_a_failed_insert_is_every_askers_error(tmp_path: Path) -> None:
    store = SqliteSeen(str(tmp_path / "x-seen"), busy_timeout_ms=5_000)
    store._conn.execute("DROP TABLE seen")  # as a broken disk would answer
    with pytest.raises(sqlite3.OperationalError):
        store.add("k", seen=1)
    assert not store._writing and store._waiting == []  # the next asker is not stuck
    store._conn.execute(_TABLE)
    assert store.add("k", seen=1)
    store.close()
