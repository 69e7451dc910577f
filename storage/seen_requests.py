"""Keys already seen: signed Slack requests' signatures and Slack event ids (the replay check).

Every signed request to `/slack/events` adds its signature here before its ack, so a replay
is recognised by whichever process or replica it reaches. A signature covers its timestamp
and Slack refuses to sign for longer than five minutes, so a key is only needed for minutes:
`prune` deletes the old ones.

Beside a SQLite database the keys live in an LMDB file of their own, `<database>-seen.lmdb`
(and its `-lock`). Not in the database: SQLite keeps one change counter per file, so a row
per request there made every other connection, in every process, drop its page cache
before its next read. Not in a SQLite file beside it either: an autocommit INSERT there
(file locks, a WAL frame, the statement machinery) was the largest single cost of an ack
(bench/ack.py). An LMDB write transaction between processes is a mutex in shared memory
and copy-on-write pages: a few microseconds. The keys are disposable: a lost or damaged
file forgets only the last minutes' signatures, and is replaced. On PostgreSQL they are rows
of the `cursors` table, shared by every replica like the rest of the database.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import lmdb
from sqlalchemy import Engine, delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from storage.models import Cursor

log = logging.getLogger(__name__)

SEEN_SUFFIX = "-seen.lmdb"
# What the previous version kept beside the database (a SQLite file): removed on open.
_OLD_SUFFIXES = ("-seen", "-seen-wal", "-seen-shm", "-seen.lock")
TABLE_PREFIX = "seen:"
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
# The most the file may grow to (LMDB maps it whole; the file grows as it fills). A key costs
# about 310 bytes in both tables: 1 GiB holds 20 minutes at 2,000 requests a second.
MAP_SIZE = 1 << 30
PRUNE_CHUNK = 5_000  # deletions per write transaction: acks wait behind one chunk at most

# Errors of the store itself (a full, damaged or unwritable file), which the replay check
# survives; TableSeen raises SQLAlchemy's.
STORE_ERRORS: tuple[type[BaseException], ...] = (lmdb.Error, OSError)


class SeenRequests(Protocol):
    def add(self, key: str, *, seen: int) -> bool:
        """Record `key` as seen at `seen` (epoch seconds); False when it was there already.
        Raises the store's error when it cannot write."""
        ...

    def prune(self, *, before: int) -> None:
        """Forget keys seen before `before` (now and then, off the ack's path)."""
        ...

    def tidy(self) -> None:
        """What the inserts leave to be done later, off the ack's path."""
        ...

    def keys(self, prefix: str) -> dict[str, int]:
        """Keys starting with `prefix`, with when each was seen (for checks and tests)."""
        ...

    def close(self) -> None: ...


MAX_BATCH = 200  # keys recorded in one write transaction


@dataclass
class _Ask:
    """One thread's key, waiting for its turn in a batch, then its answer."""

    key: str
    seen: int
    new: bool | None = None
    error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self.new is not None or self.error is not None

    def answer(self) -> bool:
        if self.error is not None:
            raise self.error
        return bool(self.new)


class _Opened:
    """One LMDB environment per file per process, shared by every store on it: LMDB's own
    locks break when one process opens a file twice and closes one of the two."""

    lock = threading.Lock()
    by_path: dict[tuple[int, str], tuple[_Tables, int]] = {}


@dataclass(frozen=True)
class _Tables:
    """An open file and its two named databases. Named databases are opened once, with the
    file: py-lmdb opens one in a write transaction begun with the GIL held, which would wait
    forever on a sibling thread that holds LMDB's writer lock and waits for the GIL."""

    env: lmdb.Environment
    keys: object  # py-lmdb's _Database handles
    by_time: object


def _acquire(path: str) -> _Tables:
    pid, real = os.getpid(), os.path.realpath(path)
    with _Opened.lock:
        if any(p != pid and r == real for p, r in _Opened.by_path):
            # LMDB's handles never cross a fork, and py-lmdb will not open the file again
            # in a child of a process that had it open: open it in each process after the
            # fork (gunicorn builds the app in each worker: preload_app stays off).
            raise lmdb.Error(f"{path} was opened before this process was forked")
        found = _Opened.by_path.get((pid, real))
        tables = found[0] if found else _open(path)
        _Opened.by_path[(pid, real)] = (tables, (found[1] if found else 0) + 1)
    return tables


def _release(path: str) -> None:
    key = (os.getpid(), os.path.realpath(path))
    with _Opened.lock:
        tables, users = _Opened.by_path[key]
        if users > 1:
            _Opened.by_path[key] = (tables, users - 1)
            return
        del _Opened.by_path[key]
    tables.env.close()


def _open(path: str) -> _Tables:
    """Open the file, or start it afresh when it may be damaged: written before the machine
    last booted (without fsync, a power cut can leave pages half-written) or not readable as
    LMDB. Under an flock on the file itself, so processes starting together agree."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released when fd is closed
        base = path.removesuffix(SEEN_SUFFIX)
        for suffix in _OLD_SUFFIXES:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(base + suffix)
        boot = _boot_id()
        try:
            env = _environment(path)
            if _stamp_boot(env, boot):
                return _tables(env)
            env.close()
            log.info("starting the replay check's file %s afresh after a reboot", path)
        except (lmdb.InvalidError, lmdb.CorruptedError, lmdb.VersionMismatchError) as exc:
            log.warning("starting the replay check's damaged file %s afresh: %s", path, exc)
        # The lock file first: whoever opens the data file from now on finds a new one.
        for doomed in (f"{path}-lock", path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(doomed)
        env = _environment(path)
        _stamp_boot(env, boot)
        return _tables(env)
    finally:
        os.close(fd)


def _tables(env: lmdb.Environment) -> _Tables:
    return _Tables(env, env.open_db(b"keys"), env.open_db(b"by_time"))


def _boot_id() -> bytes:
    """This boot's id (Linux); elsewhere none, and a file is never thought stale."""
    try:
        return BOOT_ID.read_bytes().strip()
    except OSError:
        return b""


def _stamp_boot(env: lmdb.Environment, boot: bytes) -> bool:
    """Record `boot` in a new file; False when the file was written under another boot."""
    meta = env.open_db(b"meta")
    with env.begin(write=True, db=meta) as txn:
        stored = txn.get(b"boot")
        if stored is None:
            txn.put(b"boot", boot)
            return True
    return bool(stored == boot)


def _environment(path: str) -> lmdb.Environment:
    env = lmdb.open(
        path,
        subdir=False,
        map_size=MAP_SIZE,
        max_dbs=3,
        # No fsync per commit: a process that dies leaves the file whole, but a power cut
        # may damage it, so a file from an earlier boot is started afresh (_open). Pages
        # are written with write calls, not through a writable map (writemap: about 5 µs
        # less per ack), whose sparse pages a full disk answers with SIGBUS: a full disk
        # must be an error the replay check survives, not a dead worker.
        sync=False,
        readahead=False,  # keys are read at random: don't page the file in around each
        meminit=False,
    )
    env.reader_check()  # free the read slots of processes that died holding one
    return env


class LmdbSeen:
    """The `-seen.lmdb` file: keys with the second each was seen, and the same by second
    (for `prune`).

    Group commit: the keys of every thread that asks while a transaction is being written
    are recorded together by the next one, so a process writes once per batch rather than
    once per request. It also keeps LMDB's writer lock, shared by every process, from being
    held by several threads of one process in turn: a thread that has taken it must then win
    the GIL back from its siblings before it can write, and each wait stalls every writer.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        tables = _acquire(path)
        self._env, self._keys, self._by_time = tables.env, tables.keys, tables.by_time
        self._closed = False
        self._turn = threading.Condition()  # the batch being written, and who waits
        self._waiting: list[_Ask] = []
        self._writing = False

    def add(self, key: str, *, seen: int) -> bool:
        ask = _Ask(key, seen)
        with self._turn:
            self._waiting.append(ask)
            while self._writing and not ask.done:
                self._turn.wait()
            if ask.done:  # recorded in the batch of the thread that was writing
                return ask.answer()
            self._writing = True  # this thread writes the next batches, up to its own key
        try:
            while not ask.done:
                with self._turn:
                    batch = self._waiting[:MAX_BATCH]
                    del self._waiting[:MAX_BATCH]
                try:
                    self._write(batch)
                finally:
                    for other in batch:
                        if not other.done:  # interrupted (a BaseException): answer everyone
                            other.error = RuntimeError("the replay check was interrupted")
        finally:
            with self._turn:
                self._writing = False
                self._turn.notify_all()
        return ask.answer()

    def _write(self, batch: list[_Ask]) -> None:
        """One transaction for the batch. The same key twice in one batch (a replay racing
        its original) is new for its first asker only."""
        new: list[bool] = []
        try:
            if self._closed:
                raise lmdb.Error("this store of seen keys is closed")
            with self._env.begin(write=True) as txn:
                for ask in batch:
                    name = ask.key.encode()
                    stamp = ask.seen.to_bytes(8, "big")  # big-endian: by_time sorts by second
                    added = txn.put(name, stamp, db=self._keys, overwrite=False)
                    if added:
                        txn.put(stamp + name, b"", db=self._by_time)
                    new.append(added)
        except Exception as exc:  # nothing was committed
            for ask in batch:
                ask.error = exc
            return
        for ask, added in zip(batch, new, strict=True):
            ask.new = added

    def prune(self, *, before: int) -> None:
        horizon = before.to_bytes(8, "big")
        while True:
            done = 0
            with self._env.begin(write=True) as txn:
                cursor = txn.cursor(db=self._by_time)
                while done < PRUNE_CHUNK and cursor.first() and cursor.key() < horizon:
                    txn.delete(cursor.key()[8:], db=self._keys)  # the key after the second
                    cursor.delete()
                    done += 1
            if done < PRUNE_CHUNK:
                return

    def tidy(self) -> None:
        """Free the read slots of processes that died holding one."""
        self._env.reader_check()

    def keys(self, prefix: str) -> dict[str, int]:
        start = prefix.encode()
        found: dict[str, int] = {}
        with self._env.begin(db=self._keys) as txn:
            cursor = txn.cursor()
            if cursor.set_range(start):
                for name, stamp in cursor:
                    if not name.startswith(start):
                        break
                    found[name.decode()] = int.from_bytes(stamp, "big")
        return found

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            _release(self.path)


class TableSeen:
    """PostgreSQL (or SQLite with no file of its own): `cursors` rows named `seen:<key>`,
    valued with the zero-padded second each key was seen (text that sorts as numbers do)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def add(self, key: str, *, seen: int) -> bool:
        insert = sqlite_insert if self._engine.dialect.name == "sqlite" else pg_insert
        statement = (
            insert(Cursor)
            .values(name=TABLE_PREFIX + key, value=f"{seen:012d}")
            .on_conflict_do_nothing(index_elements=[Cursor.name])
            .returning(Cursor.name)  # a row back only when inserted (rowcount is -1 on psycopg)
        )
        with self._engine.begin() as conn:
            return conn.execute(statement).first() is not None

    def prune(self, *, before: int) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                delete(Cursor).where(
                    Cursor.name.startswith(TABLE_PREFIX), Cursor.value < f"{before:012d}"
                )
            )

    def keys(self, prefix: str) -> dict[str, int]:
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(Cursor.name, Cursor.value).where(
                    Cursor.name.startswith(TABLE_PREFIX + prefix)
                )
            ).all()
        return {name.removeprefix(TABLE_PREFIX): int(value) for name, value in rows}

    def tidy(self) -> None:
        """Nothing to do: the database server keeps its own house."""

    def close(self) -> None:
        """Nothing of its own to close: it writes through the database's engine."""
