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

import sqlite3
import threading
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
    # No checkpoint on an ack's path: `prune`, off that path, checkpoints passively.
    "PRAGMA wal_autocheckpoint=0",
    "CREATE TABLE IF NOT EXISTS seen (key TEXT PRIMARY KEY, seen INTEGER NOT NULL) WITHOUT ROWID",
)


class SeenRequests(Protocol):
    def add(self, key: str, *, seen: int) -> bool:
        """Record `key` as seen at `seen` (epoch seconds); False when it was there already.
        Raises the driver's error when the store cannot write."""
        ...

    def prune(self, *, before: int) -> None:
        """Forget keys seen before `before`; let the store tidy up off the ack's path."""
        ...

    def keys(self, prefix: str) -> dict[str, int]:
        """Keys starting with `prefix`, with when each was seen (for checks and tests)."""
        ...

    def close(self) -> None: ...


class SqliteSeen:
    """The `-seen` file: one connection per process, one statement at a time.

    Threads queue on a lock that wakes the next at once (SQLite's busy handler sleeps 1, 2,
    5, 10 ms... between tries); processes share SQLite's lock, each holding it for one
    statement, on a file nothing else writes.
    """

    def __init__(self, path: str, *, busy_timeout_ms: int) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(
            path,
            isolation_level=None,  # autocommit: each INSERT is its own transaction
            check_same_thread=False,
            timeout=busy_timeout_ms / 1000,
        )
        for statement in _SQLITE_SETUP:
            self._conn.execute(statement)

    def add(self, key: str, *, seen: int) -> bool:
        with self._lock:
            cursor = self._conn.execute(
                "INSERT INTO seen (key, seen) VALUES (?, ?) ON CONFLICT DO NOTHING", (key, seen)
            )
            return cursor.rowcount == 1

    def prune(self, *, before: int) -> None:
        with self._lock:
            self._conn.execute("DELETE FROM seen WHERE seen < ?", (before,))
        # PASSIVE: copies what it can without waiting on (or blocking) anyone's insert.
        with self._lock:
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

    def close(self) -> None:
        """Nothing of its own to close: it writes through the database's engine."""
