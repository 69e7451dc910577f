from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from storage.db import safe_url
from storage.errors import StorageError
from storage.migrate import downgrade, require_schema, upgrade

TABLES = {
    "incidents",
    "timeline_events",
    "findings",
    "containment_requests",
    "action_steps",
    "reminders",
    "counters",
    "cursors",
    "incident_roles",
    "incident_tasks",
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


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_require_schema_passes_a_database_at_head(db_url: str) -> None:
    upgrade(db_url)
    require_schema(db_url)
    require_schema(db_url, at_head=False)


def test_require_schema_on_a_missing_sqlite_file_creates_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    with pytest.raises(StorageError, match=r"there is no database at .*x\.db: run `incident-bot"):
        require_schema(url)
    assert _files(tmp_path) == []


def test_require_schema_on_an_empty_database_names_db_upgrade(db_url: str) -> None:
    if db_url.startswith("sqlite"):
        Path(db_url.removeprefix("sqlite:///")).touch()  # what an older CLI left behind
    with pytest.raises(StorageError, match="has no incident-bot tables: run `incident-bot db up"):
        require_schema(db_url)


def test_require_schema_behind_head_asks_for_an_upgrade(db_url: str) -> None:
    upgrade(db_url, revision="0001")
    require_schema(db_url, at_head=False)
    with pytest.raises(StorageError, match="at revision 0001, not the latest 0005: run `incident"):
        require_schema(db_url)


def test_a_database_from_a_newer_incident_bot_is_named_not_migrated(db_url: str) -> None:
    upgrade(db_url)
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    for check in (require_schema, upgrade):
        with pytest.raises(StorageError, match="revision 9999, which this incident-bot does not"):
            check(db_url)


def test_a_missing_folder_is_named_and_nothing_is_created(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'no' / 'x.db'}"
    for check in (require_schema, upgrade):
        with pytest.raises(StorageError, match=r"the folder .*/no for the database at .* does not"):
            check(url)
    assert _files(tmp_path) == []


def test_a_file_that_is_not_sqlite_is_named_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("not a database\n" * 100)
    for check in (require_schema, upgrade):
        with pytest.raises(StorageError, match=r"notes\.db is not a SQLite database"):
            check(f"sqlite:///{path}")
    assert path.read_text() == "not a database\n" * 100


def test_downgrade_of_a_missing_database_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="there is no database"):
        downgrade(f"sqlite:///{tmp_path / 'x.db'}")
    assert _files(tmp_path) == []


def test_an_unknown_revision_is_named_before_connecting(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    with pytest.raises(
        StorageError,
        match="unknown revision 'nope': use head, base or one of 0001, 0002, 0003, 0004, 0005",
    ):
        upgrade(url, revision="nope")
    assert _files(tmp_path) == []


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql+psycopg://postgres:hunter2@127.0.0.1:1/x", "cannot reach the database at"),
        ("postgresql+psycopg://postgres:hunter2@127.0.0.1:port/x", "is malformed"),
        ("postgresql+nodriver://postgres:hunter2@127.0.0.1/x", "unknown database or driver"),
        ("sqlite://x.db", "is not a SQLite file URL"),
    ],
)
def test_wrong_urls_are_one_line_without_the_password(url: str, expected: str) -> None:
    for check in (require_schema, upgrade, downgrade):
        with pytest.raises(StorageError) as exc:
            check(url)
        message = str(exc.value)
        assert expected in message and "\n" not in message
        assert "hunter2" not in message


def test_an_in_memory_database_never_has_the_tables() -> None:
    with pytest.raises(StorageError, match="sqlite:// is in memory"):
        require_schema("sqlite://")


def test_safe_url_masks_the_password_even_when_unparseable() -> None:
    assert safe_url("postgresql+psycopg://u:hunter2@h/db") == "postgresql+psycopg://u:***@h/db"
    assert "hunter2" not in safe_url("postgresql+psycopg://u:hunter2@h:port/db")
    assert safe_url("sqlite:///x.db") == "sqlite:///x.db"


def test_0005_forgets_the_replay_checks_old_cursors_rows_only(db_url: str) -> None:
    upgrade(db_url, revision="0004")
    engine = create_engine(db_url)
    names = [
        "slack-signature:v0=abc",
        "slack-event:Ev1",
        "healthz",
        "guardduty:us-east-1",
        "seen:slack-signature:v0=new",
    ]
    try:
        with engine.begin() as conn:
            for name in names:
                conn.execute(
                    text(
                        "INSERT INTO cursors (name, value, updated_at) "
                        "VALUES (:n, '1', '2026-11-30 00:00:00')"
                    ),
                    {"n": name},
                )
        upgrade(db_url)
        with engine.connect() as conn:
            left = set(conn.execute(text("SELECT name FROM cursors")).scalars())
    finally:
        engine.dispose()
    assert left == {"healthz", "guardduty:us-east-1", "seen:slack-signature:v0=new"}
