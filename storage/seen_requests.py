"""Keys already seen: signed Slack requests' signatures and Slack event ids (the replay check).

Every signed request to `/slack/events` adds its signature here before its ack, so a replay
is recognised by whichever process or replica it reaches. A signature covers its timestamp
and Slack refuses to sign for longer than five minutes, so a key is only needed for minutes:
`prune` deletes the old ones.

On SQLite the keys live in a file of their own beside the database, `<database>-seen`.
SQLite keeps one change counter per file: a commit to the incident database makes every
other connection, in every process, drop its whole page cache before its next read. With a
row per request there, each ack's insert cost every status read its cache, and the insert
itself doubled (bench/ack.py). The keys are disposable: a lost `-seen` file forgets only
the last minutes' signatures. On PostgreSQL they are rows of the `cursors` table, shared by
every replica like the rest of the database.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import Engine, delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from storage.models import Cursor

SEEN_SUFFIX = "-seen"
TABLE_PREFIX = "seen:"
_SQLITE_SETUP = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",  # in WAL mode: no fsync per commit, as for the database
    # No checkpoint on an ack's path: `tidy`, off that path, checkpoints passively.
    "PRAGMA wal_autocheckpoint=0",
    "CREATE TABLE IF NOT EXISTS seen (key TEXT PRIMARY KEY, seen INTEGER NOT NULL) WITHOUT ROWID",
)


class SeenRequests(Protocol):
    def add(self, key: str, *, seen: int) -> bool:
        """Record `key` as seen at `seen` (epoch seconds); False when it was there already.
        Raises the driver's error when the store cannot write."""
        ...

    def prune(self, *, before: int) -> None:
        """Forget keys seen before `before` (a scan: now and then, off the ack's path)."""
        ...

    def tidy(self) -> None:
        """What the inserts leave to be done later, off the ack's path."""
        ...

    def keys(self, prefix: str) -> dict[str, int]:
        """Keys starting with `prefix`, with when each was seen (for checks and tests)."""
        ...

    def close(self) -> None: ...


MAX_BATCH = 200  # keys recorded in one INSERT (two parameters each; SQLite allows 32766)


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


class SqliteSeen:
    """The `-seen` file: one connection per process, group commit, and an flock.

    The keys of every thread that asks while an INSERT is running are recorded together by
    the next one: under load a process commits once per batch instead of once per request
    (each commit takes SQLite's file locks and writes a WAL frame). Every write, from any
    process, holds an flock on `<file>.lock`, which wakes the next writer as soon as it is
    released: SQLite's own lock is then never contended, and nobody meets its busy handler,
    which sleeps 1, 2, 5, 10 ms... between tries.
    """

    def __init__(self, path: str, *, busy_timeout_ms: int) -> None:
        self.path = path
        self._lock = threading.Lock()  # the connection: one statement at a time
        # Between processes (a file of its own: closing any descriptor of the database
        # itself would drop SQLite's POSIX locks on it).
        self._flock_fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        self._turn = threading.Condition()  # the batch being written, and who waits
        self._waiting: list[_Ask] = []
        self._writing = False
        self._conn = sqlite3.connect(
            path,
            isolation_level=None,  # autocommit: each INSERT is its own transaction
            check_same_thread=False,
            timeout=busy_timeout_ms / 1000,
        )
        for statement in _SQLITE_SETUP:
            self._conn.execute(statement)

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
                    self._insert(batch)
                finally:
                    for other in batch:
                        if not other.done:  # interrupted (a BaseException): answer everyone
                            other.error = RuntimeError("the replay check was interrupted")
        finally:
            with self._turn:
                self._writing = False
                self._turn.notify_all()
        return ask.answer()

    def _insert(self, batch: list[_Ask]) -> None:
        """One INSERT for the batch; RETURNING names the keys that were new. The same key
        twice in one batch (a replay racing its original) is new for its first asker only."""
        values = ", ".join(["(?, ?)"] * len(batch))
        params = [x for ask in batch for x in (ask.key, ask.seen)]
        try:
            with self._writer():
                rows = self._conn.execute(
                    f"INSERT INTO seen (key, seen) VALUES {values} "
                    "ON CONFLICT DO NOTHING RETURNING key",
                    params,
                ).fetchall()
        except Exception as exc:
            for ask in batch:
                ask.error = exc
            return
        inserted = {key for (key,) in rows}
        for ask in batch:
            ask.new = ask.key in inserted
            inserted.discard(ask.key)

    @contextmanager
    def _writer(self) -> Iterator[None]:
        """This thread, of all this file's users in every process, writes now."""
        with self._lock:
            fcntl.flock(self._flock_fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._flock_fd, fcntl.LOCK_UN)

    def prune(self, *, before: int) -> None:
        with self._writer():
            self._conn.execute("DELETE FROM seen WHERE seen < ?", (before,))

    def tidy(self) -> None:
        """Copy the WAL back into the file (between two batches, which wait for it)."""
        with self._writer():
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def keys(self, prefix: str) -> dict[str, int]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT key, seen FROM seen WHERE substr(key, 1, ?) = ?", (len(prefix), prefix)
            ).fetchall()
        return dict(rows)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
            os.close(self._flock_fd)


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
