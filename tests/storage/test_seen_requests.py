"""storage/seen_requests.py: the replay check's store of keys already seen, on each backend."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path

import lmdb
import pytest
from sqlalchemy import select

from storage import seen_requests
from storage.db import Database, sqlite_file
from storage.migrate import upgrade
from storage.models import Cursor
from storage.seen_requests import LmdbSeen, TableSeen
from tests.clock import TEST_CLOCK


@pytest.fixture
def boot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The machine's boot id, as a file the test can change (a reboot)."""
    path = tmp_path / "boot_id"
    path.write_text("boot-1\n")
    monkeypatch.setattr(seen_requests, "BOOT_ID", path)
    return path


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


def test_prune_works_through_more_keys_than_one_transaction_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(seen_requests, "PRUNE_CHUNK", 7)
    store = LmdbSeen(str(tmp_path / "x-seen.lmdb"))
    for n in range(30):
        assert store.add(f"k{n:02d}", seen=n)
    store.prune(before=24)
    assert sorted(store.keys("k")) == [f"k{n}" for n in range(24, 30)]
    store.close()


def test_a_sqlite_database_keeps_its_keys_in_a_file_beside_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bot.db'}"
    upgrade(url)
    db = Database(url, clock=TEST_CLOCK)
    try:
        store = db.seen_requests()
        assert isinstance(store, LmdbSeen)
        assert store.add("sig:x", seen=1)
        assert (tmp_path / "bot.db-seen.lmdb").is_file()
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


def test_stores_of_one_file_in_one_process_share_it(tmp_path: Path) -> None:
    """LMDB's locks break when a process opens a file twice and closes one of the two: two
    Databases on one file (the bot's and a check's) share one environment."""
    path = str(tmp_path / "x-seen.lmdb")
    first, second = LmdbSeen(path), LmdbSeen(path)
    assert first._env is second._env
    assert first.add("k", seen=1)
    first.close()
    assert not second.add("k", seen=2)  # still open, and the same keys
    assert second.add("k2", seen=2)
    second.close()
    with pytest.raises(lmdb.Error):
        first.add("k3", seen=3)


def test_a_database_without_its_own_file_keeps_its_keys_in_its_cursors(
    database: Database, tmp_path: Path
) -> None:
    """PostgreSQL, shared by replicas on many hosts; on SQLite, the same store over the
    database's own engine is what an in-memory database uses."""
    store = TableSeen(database.engine)
    if not database.is_sqlite:  # a SQLite file's store is its `-seen.lmdb` file (above)
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
    store = LmdbSeen(str(tmp_path / "x-seen.lmdb"))
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
    store = LmdbSeen(path)
    start.wait()
    out.put(sum(store.add(f"k{i}", seen=i) for i in range(300)))
    store.close()


def test_processes_never_both_record_one_key(tmp_path: Path) -> None:
    path = str(tmp_path / "x-seen.lmdb")
    LmdbSeen(path).close()  # created before the race
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


def test_a_forked_child_of_a_process_that_opened_the_file_is_told_so(tmp_path: Path) -> None:
    """LMDB's handles never cross a fork: a child of a process that had the file open cannot
    use the parent's nor open its own, and says why (each gunicorn worker opens the file
    after the fork). The parent's store is untouched by the child."""
    url = f"sqlite:///{tmp_path / 'bot.db'}"
    upgrade(url)
    db = Database(url, clock=TEST_CLOCK)
    parents = db.seen_requests()
    assert parents.add("before-fork", seen=1)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without running the parent's cleanup
        answer = b"?"
        try:
            db.seen_requests()
            answer = b"opened"
        except lmdb.Error as exc:
            answer = str(exc).encode()
        finally:
            os.write(write_end, answer)
            os._exit(0)
    os.close(write_end)
    try:
        told = os.read(read_end, 1000).decode()
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    assert told.endswith("bot.db-seen.lmdb was opened before this process was forked"), told
    assert db.seen_requests() is parents
    assert not parents.add("before-fork", seen=3)
    assert parents.add("after-fork", seen=3)
    db.dispose()


def _open_in_a_child(url: str, out: multiprocessing.Queue) -> None:
    db = Database(url, clock=TEST_CLOCK)
    out.put((db.seen_requests().add("from-child", seen=2), db.seen_requests().add("k", seen=2)))
    db.dispose()


def test_a_process_that_opens_the_file_after_its_start_shares_the_keys(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bot.db'}"
    upgrade(url)
    db = Database(url, clock=TEST_CLOCK)
    assert db.seen_requests().add("k", seen=1)
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    child = ctx.Process(target=_open_in_a_child, args=(url, out))
    child.start()
    assert out.get(timeout=60) == (True, False)  # its own key new, the parent's seen
    child.join(30)
    assert not db.seen_requests().add("from-child", seen=3)
    db.dispose()


def _read_and_wait(path: str, ready: multiprocessing.synchronize.Event) -> None:
    store = LmdbSeen(path)
    txn = store._env.begin()  # holds a read slot until the process dies
    txn.stat(store._keys)
    ready.set()
    time.sleep(60)


def test_tidy_frees_the_read_slots_of_processes_that_died(tmp_path: Path) -> None:
    path = str(tmp_path / "x-seen.lmdb")
    store = LmdbSeen(path)
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=_read_and_wait, args=(path, ready))
    proc.start()
    try:
        assert ready.wait(30)
        assert f" {proc.pid} " in f" {store._env.readers()} "
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(30)
    store.tidy()
    assert f" {proc.pid} " not in f" {store._env.readers()} "
    store.close()


def test_threads_asking_together_are_recorded_in_one_transaction(tmp_path: Path) -> None:
    """Group commit: while one transaction is written, the keys asked meanwhile wait for the
    next; the same key twice in one batch (a replay racing its original) is new for one
    asker only."""
    store = LmdbSeen(str(tmp_path / "x-seen.lmdb"))
    batches: list[list[str]] = []
    release = threading.Event()
    real_write = store._write

    def slow_first(batch):  # hold the first batch until every other thread is waiting
        batches.append([ask.key for ask in batch])
        if len(batches) == 1:
            release.wait(5)
        real_write(batch)

    store._write = slow_first  # type: ignore[method-assign]
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
    assert len(batches) == 2, batches  # the first key alone, then the seven that waited
    assert [answers[n] for n in range(6)] == [True] * 6
    assert sorted([answers[6], answers[7]]) == [False, True]


def test_a_full_file_is_every_askers_error_and_pruning_frees_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(seen_requests, "MAP_SIZE", 64 * 1024)
    store = LmdbSeen(str(tmp_path / "x-seen.lmdb"))
    added = 0
    with pytest.raises(lmdb.MapFullError):
        for n in range(10_000):
            store.add(f"k{n:05d}", seen=n)
            added += 1
    assert 0 < added < 10_000
    assert not store._writing and store._waiting == []  # the next asker is not stuck
    assert len(store.keys("k")) == added  # the failed batch wrote nothing
    store.prune(before=added)
    assert store.add("k-after", seen=added + 1)
    store.close()


def test_a_file_from_an_earlier_boot_is_started_afresh(
    tmp_path: Path, boot: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Written without fsync, the file may be damaged by a power cut: after a reboot the
    first process to open it starts a new one (the keys are minutes old anyway)."""
    path = str(tmp_path / "x-seen.lmdb")
    store = LmdbSeen(path)
    assert store.add("k", seen=1)
    store.close()
    again = LmdbSeen(path)  # the same boot: the same keys
    assert not again.add("k", seen=2)
    again.close()
    boot.write_text("boot-2\n")
    with caplog.at_level(logging.INFO, logger="storage.seen_requests"):
        rebooted = LmdbSeen(path)
    assert "afresh after a reboot" in caplog.text
    assert rebooted.keys("") == {}
    assert rebooted.add("k", seen=3)
    rebooted.close()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="storage.seen_requests"):
        later = LmdbSeen(path)  # the new file carries the new boot
    assert "afresh" not in caplog.text
    assert not later.add("k", seen=4)
    later.close()


def test_a_damaged_file_is_started_afresh(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "x-seen.lmdb"
    path.write_bytes(b"SQLite format 3\x00" + b"\x00" * 8192)  # not LMDB at all
    with caplog.at_level(logging.WARNING, logger="storage.seen_requests"):
        store = LmdbSeen(str(path))
    assert "damaged file" in caplog.text
    assert store.add("k", seen=1)
    store.close()


def test_the_previous_versions_files_beside_the_database_are_removed(tmp_path: Path) -> None:
    """Until 2026-11-30 the keys were a SQLite file, `<database>-seen` with its WAL files
    and an flock file; nothing reads them any more."""
    old = [tmp_path / f"bot.db{suffix}" for suffix in ("-seen", "-seen-wal", "-seen-shm")]
    old.append(tmp_path / "bot.db-seen.lock")
    for file in old:
        file.write_bytes(b"old")
    store = LmdbSeen(str(tmp_path / "bot.db-seen.lmdb"))
    assert store.add("k", seen=1)
    store.close()
    assert [f.name for f in old if f.exists()] == []
    assert (tmp_path / "bot.db").exists() is False  # nothing else is touched


_OPEN_WHILE_A_SIBLING_WRITES = """
import sys, threading, time
from storage.seen_requests import LmdbSeen

path = sys.argv[1]
first = LmdbSeen(path)
txn = first._env.begin(write=True)  # this thread holds LMDB's writer lock...
opened = threading.Event()
threading.Thread(target=lambda: (LmdbSeen(path), opened.set()), daemon=True).start()
time.sleep(0.3)  # ...and, like a writer between two puts, needs the GIL back to go on
txn.commit()
print("opened" if opened.wait(5) else "not opened")
"""


def test_a_store_opened_while_a_sibling_thread_writes_does_not_hang_the_process(
    tmp_path: Path,
) -> None:
    """A second store on an open file only shares the file's handles: opening a named
    database would begin a write transaction with the GIL held, waiting for the writer
    lock of a sibling that waits for the GIL (a second Database on one file: the bot's
    containment worker beside its Slack listener). Run apart: a hang must fail, not stall."""
    import subprocess
    import sys

    path = str(tmp_path / "x-seen.lmdb")
    LmdbSeen(path).close()
    done = subprocess.run(
        [sys.executable, "-c", _OPEN_WHILE_A_SIBLING_WRITES, path],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.stdout.strip() == "opened", done.stderr


_FILL_A_FULL_DISK = """
import sys
from storage.seen_requests import STORE_ERRORS, LmdbSeen

store = LmdbSeen(sys.argv[1])
n = 0
try:
    while True:
        store.add(f"slack-signature:v0={n:064d}", seen=1)
        n += 1
except STORE_ERRORS as exc:
    print(f"refused after {n} keys: {type(exc).__name__}; kept {len(store.keys('slack'))}")
"""


def test_a_full_disk_refuses_the_next_key_and_the_process_lives(tmp_path: Path) -> None:
    """On a real full filesystem (a tmpfs of 24 MiB): every key is written or refused with
    an error the replay check survives; the process lives (a page of a writable map with no
    disk block behind it would have been a SIGBUS)."""
    import shutil
    import subprocess
    import sys

    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small tmpfs (CI runs as root)")
    disk = tmp_path / "tiny"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(disk)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        done = subprocess.run(
            [sys.executable, "-c", _FILL_A_FULL_DISK, str(disk / "x-seen.lmdb")],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=Path(__file__).resolve().parents[2],
        )
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
    assert done.returncode == 0, (done.returncode, done.stderr)  # -7 would be SIGBUS
    refused, kept = done.stdout.split(":")[0], done.stdout.split("kept ")[1].strip()
    assert refused == f"refused after {kept} keys", done.stdout  # every key written was kept
