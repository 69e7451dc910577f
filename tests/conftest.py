"""Shared fixtures: databases (SQLite file always; PostgreSQL when CI names one) and AWS env."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

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

# Set by .ci/run; without it the suite runs on SQLite only.
POSTGRES_URL = os.environ.get("INCIDENT_BOT_TEST_POSTGRES_URL")

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
def database(db_url: str) -> Iterator[object]:
    """A migrated storage.db.Database on each backend."""
    from storage.db import Database
    from storage.migrate import upgrade

    upgrade(db_url)
    db = Database(db_url)
    yield db
    db.dispose()
