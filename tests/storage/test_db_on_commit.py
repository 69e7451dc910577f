"""Database.on_commit: a hook scoped to one Database's write sessions, removable, harmless."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.db import Database
from storage.migrate import upgrade
from storage.models import Incident
from tests.clock import TEST_CLOCK


def test_hook_runs_after_commit_of_this_database_only(database: Any, tmp_path: Path) -> None:
    other_url = f"sqlite:///{tmp_path / 'other.db'}"
    upgrade(other_url)
    other = Database(other_url, clock=TEST_CLOCK)
    seen: list[Any] = []
    remove = database.on_commit(lambda session: seen.append(session.info.get("mark")))
    try:
        with database.session() as session:
            session.info["mark"] = "committed"
        with pytest.raises(RuntimeError), database.session() as session:
            session.info["mark"] = "rolled back"
            raise RuntimeError("abort")
        with other.session() as session:  # another Database: not this hook's business
            session.info["mark"] = "other"
        with database.read_session() as session:
            session.info["mark"] = "read"
        assert seen == ["committed"]
        remove()
        with database.session() as session:
            session.info["mark"] = "after removal"
        assert seen == ["committed"]
    finally:
        other.dispose()


def test_a_failing_hook_never_breaks_the_commit(database: Any) -> None:
    def broken(session: Session) -> None:
        raise ValueError("hook bug")

    remove = database.on_commit(broken)
    try:
        with database.session() as session:
            session.add(Incident(number=1, title="kept", created_by="U1"))
        with database.read_session() as session:
            assert session.scalars(select(Incident.title)).all() == ["kept"]
    finally:
        remove()
