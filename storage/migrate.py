"""Apply or revert migrations programmatically (`incident-bot db upgrade`, and on `run`)."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

from storage.db import make_engine


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", "storage:migrations")
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _with_engine(url: str, engine: Engine | None, fn: str, revision: str) -> None:
    own = engine is None
    engine = engine or make_engine(url)
    try:
        # DDL runs outside our BEGIN IMMEDIATE wrapper's concerns: alembic opens its own txn.
        with engine.connect() as conn:
            cfg = alembic_config(url)
            cfg.attributes["connection"] = conn
            getattr(command, fn)(cfg, revision)
            conn.commit()
    finally:
        if own:
            engine.dispose()


def upgrade(url: str, *, revision: str = "head", engine: Engine | None = None) -> None:
    _with_engine(url, engine, "upgrade", revision)


def downgrade(url: str, *, revision: str = "base", engine: Engine | None = None) -> None:
    _with_engine(url, engine, "downgrade", revision)
