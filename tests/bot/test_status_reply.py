"""bot/views/cards.status_reply: a rendering is reused only while nothing it shows changed."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import update

from bot.views import cards
from commands.incidents import open_incident
from commands.overview import IncidentOverview, overview_by_number
from storage.db import Database
from storage.models import Incident


@pytest.fixture
def database(sqlite_database: Database) -> Database:
    with sqlite_database.session() as session:
        open_incident(session=session, title="Beaconing", created_by="U1", severity="high")
    return sqlite_database


def status(database: Database, now: dt.datetime) -> tuple[str, list]:
    view = overview_by_number(database=database, number=1, gdpr_hours=72)
    assert view is not None
    return cards.status_reply(view, now=now)


def test_an_unchanged_incident_asked_again_reuses_its_answer(database: Database) -> None:
    now = database.clock.now() + dt.timedelta(minutes=5)
    first = status(database, now)
    again = status(database, now + dt.timedelta(seconds=20))  # still "5m" old
    assert again is first
    view = overview_by_number(database=database, number=1, gdpr_hours=72)
    assert first == cards._status_reply(view, now)  # what a fresh rendering says


def test_a_commit_or_a_minute_later_renders_again(database: Database) -> None:
    now = database.clock.now() + dt.timedelta(minutes=5)
    first = status(database, now)
    with database.session() as session:
        session.execute(update(Incident).values(severity="critical"))
    text, _ = status(database, now)
    assert text == "INC-1: open, critical"
    later = status(database, now + dt.timedelta(minutes=1))
    assert "6m" in str(later[1]) and "5m" in str(first[1])


def test_an_overview_of_an_orm_incident_is_never_reused(database: Database) -> None:
    """An ORM object can change under the same identity: its renderings are not kept."""
    now = database.clock.now()
    with database.session() as session:
        incident = session.get(Incident, 1)
        view = IncidentOverview(incident, 0, None, 72)
        assert cards.status_reply(view, now=now)[0] == "INC-1: open, high"
        incident.severity = "low"
        assert cards.status_reply(view, now=now)[0] == "INC-1: open, low"


def test_the_kept_renderings_are_bounded(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cards, "_STATUS_SHOWN", {})
    monkeypatch.setattr(cards, "_STATUS_SHOWN_LIMIT", 3)
    now = database.clock.now()
    for minutes in range(10):
        status(database, now + dt.timedelta(minutes=minutes))
    assert 0 < len(cards._STATUS_SHOWN) <= 3
