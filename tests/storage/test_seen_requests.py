"""storage/seen_requests.py: the replay check's store of keys already seen, on each backend."""

from __future__ import annotations

import multiprocessing
import os
import threading
from pathlib import Path

import pytest
from sqlalchemy import select

from storage.db import Database, sqlite_file
from storage.migrate import upgrade
from storage.models import Cursor
from storage.seen_requests import SqliteSeen, TableSeen
from tests.clock import TEST_CLOCK


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


def test_threads_of_one_process_never_both_record_one_key(tmp_path: Path) -> None:
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
    with pytest.raises(Exception, match="closed"):
        childs.add("k", seen=1)
    assert parents.add("k", seen=1)  # the parent's own is left to the parent
    parents.close()
