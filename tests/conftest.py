"""Shared fixtures: databases (SQLite file always; PostgreSQL when CI names one) and AWS env."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from storage.clock import FlowingClock
from tests.clock import flowing

# Never let a test reach a real AWS account.
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SECURITY_TOKEN": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
)
os.environ.pop("AWS_PROFILE", None)
os.environ.pop("AWS_ENDPOINT_URL", None)


def _own_database(url: str | None) -> str | None:
    """Under pytest-xdist each worker gets its own database beside the one named (tests drop
    and recreate the public schema, so two workers must never share one)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not url or not worker:
        return url
    from sqlalchemy.engine import make_url

    base = make_url(url)
    name = f"{base.database}_{worker}"
    engine = create_engine(base, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        found = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name})
        if found.scalar() is None:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return base.set(database=name).render_as_string(hide_password=False)


# Set by .ci/run; without it the suite runs on SQLite only.
POSTGRES_URL = _own_database(os.environ.get("INCIDENT_BOT_TEST_POSTGRES_URL"))

# Set by .ci/run's second pass (e.g. +400d, -1d): the machine's clock, as every Python call in
# this process reads it, is shifted for the whole session; monotonic time is left alone so
# timeouts still work. A hidden dependency on today's date then fails the day it is written.
CLOCK_SHIFT = os.environ.get("INCIDENT_BOT_TEST_CLOCK_SHIFT")


def pytest_configure(config: pytest.Config) -> None:
    if not CLOCK_SHIFT:
        return
    import datetime as dt

    import time_machine

    sign, days = CLOCK_SHIFT[0], CLOCK_SHIFT[1:].removesuffix("d")
    if sign not in "+-" or not days.isdigit():
        raise pytest.UsageError(f"INCIDENT_BOT_TEST_CLOCK_SHIFT={CLOCK_SHIFT}: use +400d or -1d")
    delta = dt.timedelta(days=int(days)) * (1 if sign == "+" else -1)
    traveller = time_machine.travel(dt.datetime.now(dt.UTC) + delta, tick=True)
    traveller.start()
    config.add_cleanup(traveller.stop)


BACKENDS = ["sqlite"] + (["postgresql"] if POSTGRES_URL else [])


def reset_postgres(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database URL on each backend under test."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'incident-bot.db'}"
    assert POSTGRES_URL
    reset_postgres(POSTGRES_URL)
    return POSTGRES_URL


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'incident-bot.db'}"


@pytest.fixture
def clock() -> FlowingClock:
    """The test's clock: starts at tests.clock.T0 whatever today is, and flows."""
    return flowing()


@pytest.fixture
def database(db_url: str, clock: FlowingClock) -> Iterator[object]:
    """A migrated storage.db.Database on each backend, on the test's clock."""
    from storage.db import Database
    from storage.migrate import upgrade

    upgrade(db_url)
    db = Database(db_url, clock=clock)
    yield db
    db.dispose()


@pytest.fixture
def sqlite_database(sqlite_url: str, clock: FlowingClock) -> Iterator[object]:
    """A migrated storage.db.Database on a SQLite file, on the test's clock: for what only
    SQLite has (reads kept until data_version changes, the `-seen.lmdb` file beside it)."""
    from storage.db import Database
    from storage.migrate import upgrade

    upgrade(sqlite_url)
    db = Database(sqlite_url, clock=clock)
    yield db
    db.dispose()
