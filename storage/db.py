"""Engines and sessions for SQLite and PostgreSQL.

SQLite gets WAL, foreign keys and a busy timeout on every connection, and write sessions
open with BEGIN IMMEDIATE so two writers queue on the lock instead of failing with
"database is locked" half-way through a read-then-write.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.orm import Session, sessionmaker

from storage import fastread
from storage.clock import CLOCK_OPTION, Clock
from storage.errors import StorageError
from storage.seen_requests import SEEN_SUFFIX, LmdbSeen, SeenRequests, TableSeen

log = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 30_000
URL_EXAMPLES = "e.g. sqlite:///incident-bot.db or postgresql+psycopg://user@host:5432/incidents"


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def safe_url(url: str) -> str:
    """The URL with its password masked, fit for an error message or a log line."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        # Unparseable, so mask by hand: everything between user: and the host's @.
        return re.sub(r"(://[^:/@]*:)[^/]*@", r"\1***@", url)


def parse_url(url: str) -> URL:
    """The URL parsed, with a known dialect and driver; StorageError naming what is wrong."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        # The parser's own words ("invalid literal for int()") would not help an operator.
        raise StorageError(
            f"the database URL {safe_url(url)} is malformed (check the port, and percent-encode "
            "special characters in the password): fix DATABASE_URL, " + URL_EXAMPLES
        ) from None
    try:
        parsed.get_dialect()
    except NoSuchModuleError:
        raise StorageError(
            f"the database URL {safe_url(url)} names an unknown database or driver "
            f"{parsed.drivername!r}: fix DATABASE_URL, " + URL_EXAMPLES
        ) from None
    if parsed.get_backend_name() == "sqlite" and (parsed.host or parsed.port):
        raise StorageError(
            f"the database URL {safe_url(url)} is not a SQLite file URL: use three slashes "
            "for a relative path (sqlite:///incident-bot.db) or four for an absolute one"
        )
    return parsed


def sqlite_file(url: URL) -> Path | None:
    """The file a SQLite URL points at (None for an in-memory database)."""
    name = url.database or ""
    if name in ("", ":memory:") or name.startswith("file:"):
        return None
    return Path(name).expanduser().resolve()


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine configured for concurrent writers on either backend."""
    if is_sqlite(url):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            **kwargs,
        )
        _configure_sqlite(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    return create_engine(url, **kwargs)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN itself (pysqlite's implicit transactions are unreliable).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {mode}")


class Database:
    """One engine and the two kinds of session the app uses."""

    def __init__(
        self, url: str, *, clock: Clock, timeline_key: Any = None, **engine_kwargs: Any
    ) -> None:
        self.url = url
        self.clock = clock
        # A storage.timeline.TimelineKey (kept out of the database): new chains are keyed.
        self.timeline_key = timeline_key
        info = {"clock": clock, "timeline_key": timeline_key}
        self._engine = make_engine(url, **engine_kwargs)
        # Every statement carries the clock: column defaults (created_at, ...) read it there.
        self.engine = self._engine.execution_options(**{CLOCK_OPTION: clock})
        self.is_sqlite = is_sqlite(url)
        self._write = sessionmaker(self.engine, expire_on_commit=False, info=info)
        reader = self.engine.execution_options(sqlite_begin="DEFERRED")
        self._reader = reader
        self._read = sessionmaker(reader, expire_on_commit=False, info=dict(info))
        self._seen_lock = threading.Lock()
        self._seen: tuple[int, SeenRequests] | None = None  # the pid that opened it, the store

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A write transaction: committed on success, rolled back on any error."""
        with self._write() as session, session.begin():
            yield session

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        """A read-only transaction that never takes SQLite's write lock."""
        with self._read() as session, session.begin():
            yield session

    def on_commit(self, fn: Callable[[Session], None]) -> Callable[[], None]:
        """Call `fn(session)` after each write transaction of this Database commits.

        Scoped to this Database's sessions (never every Session in the process); returns the
        function that removes the hook again.
        """

        def hook(session: Session) -> None:
            try:
                fn(session)
            except Exception:  # a hook must never break the caller's commit
                log.exception("after-commit hook %r failed", fn)

        event.listen(self._write, "after_commit", hook)
        return lambda: event.remove(self._write, "after_commit", hook)

    def ping(self) -> bool:
        try:
            with self._reader.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            return True
        except Exception:
            return False

    def seen_requests(self) -> SeenRequests:
        """This process's store of request signatures and event ids already received
        (storage/seen_requests.py), opened on first use in each process. (A SQLite file's
        cannot be opened in a child forked from a process that had it open: the error says
        so, and the replay check lets requests by with a warning.)"""
        pid = os.getpid()
        opened = self._seen  # on every ack: no lock once opened in this process
        if opened is not None and opened[0] == pid:
            return opened[1]
        with self._seen_lock:
            if self._seen is None or self._seen[0] != pid:
                # Beside a SQLite file; else (PostgreSQL, SQLite in memory) in the database.
                path = sqlite_file(self._engine.url) if self.is_sqlite else None
                store: SeenRequests = (
                    TableSeen(self.engine) if path is None else LmdbSeen(f"{path}{SEEN_SUFFIX}")
                )
                self._seen = (pid, store)
            return self._seen[1]

    def dispose(self) -> None:
        with self._seen_lock:
            seen, self._seen = self._seen, None
        if seen is not None and seen[0] == os.getpid():  # never a parent's, after a fork
            seen[1].close()
        fastread.release(self._engine)
        self._engine.dispose()


def clock_of(session: Session) -> Clock:
    """The clock of the Database that opened `session`."""
    return session.info["clock"]
