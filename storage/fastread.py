"""Prepared reads for the hot path: a SELECT compiled once, run on a raw DBAPI connection.

`/incident status` is answered inside Slack's ack, thousands of times a minute in an alert
storm. SQLAlchemy's per-execution work (cache key, result metadata, row objects) costs about
four times the query itself there, so the few reads on that path are compiled once per
dialect and executed on a pooled DBAPI connection. SQL and result types stay SQLAlchemy's:
the statement is compiled by the engine's dialect and every column goes through its type's
result processor (aware UTC datetimes, booleans, JSON), so rows look exactly as Core returns
them. Each read is one statement; on SQLite the connection has no open transaction (the
statement is its own snapshot), on PostgreSQL the pool's reset rolls the read back.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
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
        self._processors: list[Callable[[Any], Any] | None] = [
            c.type.dialect_impl(dialect).result_processor(dialect, None)
            for c in stmt.selected_columns
        ]

    def _params(self, values: dict[str, Any]) -> Any:
        params = self._compiled.construct_params(values)
        if self._positions is None:
            return params
        return [params[name] for name in self._positions]

    def _row(self, raw: tuple[Any, ...]) -> dict[str, Any]:
        return {
            name: (proc(value) if proc is not None and value is not None else value)
            for name, proc, value in zip(self.names, self._processors, raw, strict=True)
        }

    def all(self, **values: Any) -> list[dict[str, Any]]:
        engine = self._engine()
        if engine is None:
            raise RuntimeError("the engine of this prepared read is gone")
        conn = engine.raw_connection()
        try:
            cursor = conn.cursor()
            try:
                cursor.execute(self.sql, self._params(values))
                rows = cursor.fetchall()
            finally:
                cursor.close()
        finally:
            conn.close()  # back to the pool, which rolls back whatever the read opened
        return [self._row(r) for r in rows]

    def first(self, **values: Any) -> dict[str, Any] | None:
        rows = self.all(**values)
        return rows[0] if rows else None


def prepared(engine: Engine, stmt: Select[Any]) -> PreparedRead:
    """The PreparedRead of `stmt` (a module-level constant) for `engine`, compiled once."""
    with _cache_lock:
        per_engine = _cache.setdefault(engine, {})
        found = per_engine.get(id(stmt))
        if found is None:
            found = per_engine[id(stmt)] = PreparedRead(engine, stmt)
    return found
