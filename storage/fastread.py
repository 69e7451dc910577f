"""Prepared reads for the hot path: a SELECT compiled once, run on a raw DBAPI connection.

`/incident status` is answered inside Slack's ack, thousands of times a minute in an alert
storm. SQLAlchemy's per-execution work (cache key, result metadata, row objects) costs about
four times the query itself there, so the few reads on that path are compiled once per
dialect and executed on a pooled DBAPI connection. SQL and result types stay SQLAlchemy's:
the statement is compiled by the engine's dialect and every column goes through its type's
result processor (aware UTC datetimes, booleans, JSON), so rows look exactly as Core returns
them. Each read is one statement; on SQLite the connection has no open transaction (the
statement is its own snapshot), on PostgreSQL the pool's reset rolls the read back.

On SQLite the reads skip the pool too: its checkout and reset-on-checkin cost about as
much as the query. Each engine keeps its own last-in-first-out stack of connections (the
warmest is reused; as many as reads ever ran at once), configured by the engine's connect
hooks like any other, closed by `release` (Database.dispose) and never used across a fork.
Columns are converted when first read (`LazyRow`): a status answer reads a third of them,
and the facts JSON of a GuardDuty incident is the largest.

On SQLite a read's rows are also kept, per connection, until the database changes: each
read first asks `PRAGMA data_version`, which changes when any other connection (of any
process) has committed since this one last looked, and runs the statement only then or for
new parameters. The pragma is checked before the statement, so a commit between the two
only empties the cache once more; rows are never older than the database was at the pragma.
Kept rows are shared by the threads that read them: they are read-only, and a column whose
value is mutable (JSON) is converted afresh on every read of it.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from sqlalchemy import Engine, Select

# engine -> id(statement) -> its PreparedRead; an engine's entries go when the engine does.
_cache: weakref.WeakKeyDictionary[Engine, dict[int, PreparedRead]] = weakref.WeakKeyDictionary()
_cache_lock = threading.Lock()


class PreparedRead:
    def __init__(self, engine: Engine, stmt: Select[Any]) -> None:
        dialect = engine.dialect
        compiled = stmt.compile(dialect=dialect)
        if "POSTCOMPILE" in compiled.string:
            raise ValueError("a prepared read cannot expand IN lists; use or_() of equalities")
        self._engine = weakref.ref(engine)
        self.sql = compiled.string
        self._compiled = compiled
        self._positions = compiled.positiontup  # None for named paramstyles (psycopg)
        self.names = [c.key for c in stmt.selected_columns]
        self.index = {name: i for i, name in enumerate(self.names)}
        self.processors: list[Callable[[Any], Any] | None] = [
            c.type.dialect_impl(dialect).result_processor(dialect, None)
            for c in stmt.selected_columns
        ]

    def _params(self, values: dict[str, Any]) -> Any:
        params = self._compiled.construct_params(values)
        if self._positions is None:
            return params
        return [params[name] for name in self._positions]

    def all(self, **values: Any) -> list[LazyRow]:
        engine = self._engine()
        if engine is None:
            raise RuntimeError("the engine of this prepared read is gone")
        kept = _kept(engine)
        if kept is None:  # PostgreSQL: the pool (pre-ping, reset) as for every other read
            conn = engine.raw_connection()
            try:
                rows = self._execute(conn, values)
            finally:
                conn.close()  # back to the pool, which rolls back whatever the read opened
            return [LazyRow(self, r) for r in rows]
        raw = kept.take()
        try:
            found = self._kept_rows(kept, raw, values)
        except BaseException:
            kept.drop(raw)  # whatever state the error left it in, it is not reused
            raise
        kept.put(raw)
        return list(found)

    def _kept_rows(self, kept: _Kept, raw: Any, values: dict[str, Any]) -> tuple[LazyRow, ...]:
        rows = kept.rows_of(raw)
        version = raw.execute("PRAGMA data_version").fetchone()[0]
        if rows.version != version:
            rows.clear()
            rows.version = version
        key = (id(self), *sorted(values.items()))
        found = rows.get(key)
        if found is None:
            found = tuple(LazyRow(self, r) for r in self._execute(raw, values))
            if len(rows) >= KEPT_READS:
                rows.clear()  # a burst of distinct parameters: start over rather than grow
            rows[key] = found
        return found

    def _execute(self, conn: Any, values: dict[str, Any]) -> list[tuple[Any, ...]]:
        cursor = conn.cursor()
        try:
            cursor.execute(self.sql, self._params(values))
            return cursor.fetchall()
        finally:
            cursor.close()

    def first(self, **values: Any) -> LazyRow | None:
        rows = self.all(**values)
        return rows[0] if rows else None


class LazyRow(Mapping[str, Any]):
    """A result row by column name, each value converted by its type's result processor
    when first read (then kept): the row as Core would return it, paid for per column."""

    __slots__ = ("_done", "_raw", "_read")

    def __init__(self, read: PreparedRead, raw: tuple[Any, ...]) -> None:
        self._read = read
        self._raw = raw
        self._done: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name in self._done:
            return self._done[name]
        index = self._read.index[name]  # KeyError for a column the read does not select
        value = self._raw[index]
        processor = self._read.processors[index]
        if processor is not None and value is not None:
            value = processor(value)
        if not isinstance(value, dict | list):  # never hand two readers one mutable value
            self._done[name] = value
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._read.names)

    def __len__(self) -> int:
        return len(self._read.names)


KEPT_READS = 1024  # distinct reads kept per connection between two changes of the database


class _KeptRows(dict[tuple[Any, ...], tuple["LazyRow", ...]]):
    """One connection's rows by (read, parameters), valid while its data_version holds."""

    version: int | None = None


class _Kept:
    """An engine's SQLite connections for prepared reads: a LIFO stack (list.pop/append
    are atomic), refilled from the engine's pool on demand, closed on dispose. A connection
    is used by one thread at a time (taken off the stack), and so is its kept rows' dict."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.pid = os.getpid()
        self.idle: list[Any] = []
        self.opened: dict[int, Any] = {}  # id(DBAPI connection) -> the pool's detached fairy
        self.rows: dict[int, _KeptRows] = {}  # id(DBAPI connection) -> its kept rows

    def rows_of(self, raw: Any) -> _KeptRows:
        found = self.rows.get(id(raw))
        if found is None:
            found = self.rows[id(raw)] = _KeptRows()
        return found

    def take(self) -> Any:
        try:
            return self.idle.pop()
        except IndexError:
            fairy = self.engine.raw_connection()
            raw = fairy.driver_connection
            fairy.detach()  # ours from now on; autocommit, WAL, busy timeout already set
            with _cache_lock:
                self.opened[id(raw)] = fairy
            return raw

    def put(self, raw: Any) -> None:
        self.idle.append(raw)

    def drop(self, raw: Any) -> None:
        with _cache_lock:
            self.rows.pop(id(raw), None)
            fairy = self.opened.pop(id(raw), None)
        if fairy is not None:
            fairy.close()

    def close(self) -> None:
        with _cache_lock:
            opened, self.opened, self.idle, self.rows = self.opened, {}, [], {}
        if self.pid == os.getpid():  # never close a parent's connections in a forked child
            for fairy in opened.values():
                fairy.close()


# An engine's pool (shared with its execution-option copies) -> its kept connections.
_kept_by_pool: weakref.WeakKeyDictionary[Any, _Kept] = weakref.WeakKeyDictionary()


def _kept(engine: Engine) -> _Kept | None:
    if engine.dialect.name != "sqlite":
        return None
    found = _kept_by_pool.get(engine.pool)
    if found is not None and found.pid == os.getpid():
        return found
    with _cache_lock:
        found = _kept_by_pool.get(engine.pool)
        if found is None or found.pid != os.getpid():
            found = _kept_by_pool[engine.pool] = _Kept(engine)
    return found


def release(engine: Engine) -> None:
    """Close the connections prepared reads keep for `engine` (Database.dispose calls it)."""
    with _cache_lock:
        kept = _kept_by_pool.pop(engine.pool, None)
    if kept is not None:
        kept.close()


def prepared(engine: Engine, stmt: Select[Any]) -> PreparedRead:
    """The PreparedRead of `stmt` (a module-level constant) for `engine`, compiled once."""
    with _cache_lock:
        per_engine = _cache.setdefault(engine, {})
        found = per_engine.get(id(stmt))
        if found is None:
            found = per_engine[id(stmt)] = PreparedRead(engine, stmt)
    return found
