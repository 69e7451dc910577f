"""Apply or revert migrations (`incident-bot db upgrade`, and on `run`), and check that a
database is there and migrated before anything reads it.

Every problem an operator can cause (a wrong URL, a server that does not answer, a folder that
does not exist, a database never migrated, an unknown revision) is raised as StorageError with
one line saying what to do. Only `upgrade` may create a database; the checks create nothing.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError
from sqlalchemy import URL, Connection, Engine, create_engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from storage.db import make_engine, parse_url, safe_url, sqlite_file
from storage.errors import StorageError

UPGRADE_HINT = "run `incident-bot db upgrade` first"
# An unreachable host should fail the check in seconds, not after the OS's TCP timeout.
CONNECT_TIMEOUT_S = 10


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", "storage:migrations")
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _script(url: str) -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config(url))


def _cannot_open(url: str, exc: BaseException) -> StorageError:
    """The driver's first line, password-free, plus what to check."""
    parsed = parse_url(url)
    orig = getattr(exc, "orig", None) or exc
    detail = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    if parsed.password:
        detail = detail.replace(str(parsed.password), "***")
    if parsed.get_backend_name() == "sqlite":
        path = sqlite_file(parsed)
        if path is not None and not path.parent.is_dir():
            return StorageError(
                f"the folder {path.parent} for the database at {safe_url(url)} does not exist: "
                "create it, or point DATABASE_URL at an existing folder"
            )
        if "not a database" in detail:
            return StorageError(
                f"{path} is not a SQLite database: point DATABASE_URL at the incident-bot database"
            )
        return StorageError(
            f"cannot open the database at {safe_url(url)} ({detail}): check DATABASE_URL "
            "and the file's permissions"
        )
    return StorageError(
        f"cannot reach the database at {safe_url(url)} ({detail}): check DATABASE_URL "
        "and that the server is running"
    )


def _probe_engine(url: str, parsed: URL) -> Engine:
    """An engine that can look but never create: SQLite opens read-only, PostgreSQL times out."""
    if parsed.get_backend_name() == "sqlite":
        path = sqlite_file(parsed)
        if path is None:
            if (parsed.database or "").startswith("file:"):  # the operator's own URI: as given
                return create_engine(url, poolclass=NullPool)
            raise StorageError(
                f"the database at {safe_url(url)} is in memory and has no incident-bot tables: "
                "point DATABASE_URL at a file or a server"
            )
        if not path.parent.is_dir():
            raise _cannot_open(url, FileNotFoundError(path.parent))
        if not path.exists():
            raise StorageError(
                f"there is no database at {safe_url(url)}: {UPGRADE_HINT} "
                "(or point DATABASE_URL at the existing one)"
            )
        uri = f"{path.as_uri()}?mode=ro"
        return create_engine(
            "sqlite://", creator=lambda: sqlite3.connect(uri, uri=True), poolclass=NullPool
        )
    connect_args: dict[str, Any] = {}
    if parsed.get_driver_name() in ("psycopg", "psycopg2"):
        connect_args["connect_timeout"] = CONNECT_TIMEOUT_S
    return create_engine(url, connect_args=connect_args, poolclass=NullPool)


@contextmanager
def _connected(url: str, engine: Engine) -> Iterator[Connection]:
    try:
        conn = engine.connect()
    except DBAPIError as exc:
        raise _cannot_open(url, exc) from None
    with conn:
        yield conn


def _current(url: str, conn: Connection) -> tuple[str, ...]:
    try:
        return tuple(MigrationContext.configure(conn).get_current_heads())
    except DBAPIError as exc:  # e.g. a file that is not a SQLite database
        raise _cannot_open(url, exc) from None


def _check_known(url: str, current: tuple[str, ...], script: ScriptDirectory) -> None:
    known = {rev.revision for rev in script.walk_revisions()}
    unknown = sorted(set(current) - known)
    if unknown:
        raise StorageError(
            f"the database at {safe_url(url)} is at revision {', '.join(unknown)}, which this "
            "incident-bot does not know: install the incident-bot that migrated it, or point "
            "DATABASE_URL at the right database"
        )


def require_schema(url: str, *, at_head: bool = True) -> None:
    """Raise StorageError unless the database exists, answers and holds incident-bot's tables
    (migrated to the latest revision when at_head). Creates no file and writes nothing."""
    parsed = parse_url(url)
    engine = _probe_engine(url, parsed)
    try:
        with _connected(url, engine) as conn:
            current = _current(url, conn)
    finally:
        engine.dispose()
    if not current:
        raise StorageError(
            f"the database at {safe_url(url)} has no incident-bot tables: {UPGRADE_HINT}"
        )
    script = _script(url)
    _check_known(url, current, script)
    heads = tuple(script.get_heads())
    if at_head and set(current) != set(heads):
        raise StorageError(
            f"the database at {safe_url(url)} is at revision {', '.join(sorted(current))}, not "
            f"the latest {', '.join(heads)}: run `incident-bot db upgrade`"
        )


def _check_revision(script: ScriptDirectory, revision: str) -> None:
    """An unknown --revision is named before anything connects."""
    # Symbolic and relative targets resolve against the database; alembic checks those.
    if (
        revision in ("head", "heads", "base")
        or "@" in revision
        or re.fullmatch(r"[+-]\d+", revision)
    ):
        return
    with contextlib.suppress(CommandError, RevisionError):  # unknown: named below
        if script.get_revision(revision) is not None:
            return
    known = ", ".join(rev.revision for rev in reversed(list(script.walk_revisions())))
    raise StorageError(f"unknown revision {revision!r}: use head, base or one of {known}")


def _migrate(url: str, engine: Engine | None, fn: str, revision: str) -> None:
    parse_url(url)
    script = _script(url)
    _check_revision(script, revision)
    own = engine is None
    engine = engine or make_engine(url)
    try:
        # DDL runs outside our BEGIN IMMEDIATE wrapper's concerns: alembic opens its own txn.
        with _connected(url, engine) as conn:
            _check_known(url, _current(url, conn), script)
            conn.rollback()  # end the check's read so alembic starts its own transaction
            cfg = alembic_config(url)
            cfg.attributes["connection"] = conn
            try:
                getattr(command, fn)(cfg, revision)
            except CommandError as exc:
                raise StorageError(
                    f"cannot {fn} the database at {safe_url(url)} to {revision!r}: {exc}"
                ) from None
            conn.commit()
    finally:
        if own:
            engine.dispose()


def upgrade(url: str, *, revision: str = "head", engine: Engine | None = None) -> None:
    """Migrate up to revision; the one operation that may create the database."""
    _migrate(url, engine, "upgrade", revision)


def downgrade(url: str, *, revision: str = "base", engine: Engine | None = None) -> None:
    """Revert down to revision; refuses (creating nothing) when there is nothing to revert."""
    if engine is None:
        require_schema(url, at_head=False)
    _migrate(url, engine, "downgrade", revision)
