from __future__ import annotations

from sqlalchemy import create_engine, inspect

from storage.migrate import downgrade, upgrade

TABLES = {
    "incidents",
    "timeline_events",
    "findings",
    "containment_requests",
    "action_steps",
    "reminders",
    "counters",
    "cursors",
}


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_from_empty_downgrade_and_upgrade_again(db_url: str) -> None:
    upgrade(db_url)
    assert _tables(db_url) >= TABLES
    downgrade(db_url, revision="base")
    assert _tables(db_url) == set()
    upgrade(db_url)
    assert _tables(db_url) >= TABLES


def test_models_match_migrations(db_url: str) -> None:
    """A model change without a migration fails here, not in production."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from storage.models import Base

    upgrade(db_url)
    engine = create_engine(db_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == []
