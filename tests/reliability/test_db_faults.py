"""The database failing under the bot: a write lock another process holds past the busy
timeout, and a full disk (an injected `OperationalError`, as SQLite raises it). The user gets
an answer that says what happened, nothing half-written remains (no incident without its
`incident.opened` event, no event without its incident), and the next request works.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import func, select

from storage.models import Incident, TimelineEvent
from storage.timeline import verify_chain
from tests.bot.conftest import bot_factory, fake_slack  # noqa: F401 (fixtures)
from tests.bot.test_http_edge import writes_fail

BUSY_MS = 300  # the bot's busy timeout here (30 s in production); the lock outlasts it


@pytest.fixture
def bot(bot_factory, monkeypatch):  # noqa: F811
    monkeypatch.setattr("storage.db.SQLITE_BUSY_TIMEOUT_MS", BUSY_MS)
    return bot_factory()


@contextmanager
def locked_by_another_process(bot) -> Iterator[None]:
    """A separate process holds the SQLite write lock until the block ends."""
    path = bot.runtime.database.url.removeprefix("sqlite:///")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys\n"
            f"c = sqlite3.connect({path!r}, isolation_level=None)\n"
            "c.execute('BEGIN IMMEDIATE')\n"
            "print('locked', flush=True)\n"
            "sys.stdin.read()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        yield
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(10)


def counts(bot) -> tuple[int, int]:
    with bot.session() as session:
        incidents = session.scalar(select(func.count(Incident.id))) or 0
        events = session.scalar(select(func.count(TimelineEvent.id))) or 0
    return incidents, events


def answer(bot, text: str, name: str) -> str:
    response = bot.command(text, response_url=bot.slack.response_url(name))
    assert response.status_code == 200, response.text
    bot.idle(15)
    return bot.slack.wait_for("response_url", lambda c: c.path == f"/response/{name}").args["text"]


def whole(bot) -> None:
    """Every incident has its opening event and an intact chain; no event is orphaned."""
    with bot.session() as session:
        for incident in session.scalars(select(Incident)):
            kinds = session.scalars(
                select(TimelineEvent.kind)
                .where(TimelineEvent.incident_id == incident.id)
                .order_by(TimelineEvent.seq)
            ).all()
            assert kinds and kinds[0] == "incident.opened", (incident.key, kinds)
            report = verify_chain(conn=session, incident=incident)
            assert report.ok and report.events == len(kinds), report


@pytest.mark.parametrize("fault", ["locked by another process", "disk full"])
def test_open_and_note_under_a_database_fault_answer_and_leave_nothing_half_written(
    bot, fault
) -> None:
    assert "Opened *INC-1*" in answer(bot, "open Before the fault", "before")
    bot.slack.add_channel("W111")
    before = counts(bot)
    inject = locked_by_another_process(bot) if fault != "disk full" else writes_fail(bot)
    started = time.monotonic()
    with inject:
        opened = answer(bot, "open During the fault", "open")
        noted = answer(bot, "note INC-1 during the fault", "note")
    assert time.monotonic() - started < 10
    for text in (opened, noted):
        assert "failed: the database did not accept the change" in text, text
        assert "try again" in text.lower()  # nothing was saved: trying again is right
        for leak in ("INSERT", "OperationalError", "sqlalchemy", "[SQL", "database is locked"):
            assert leak not in text, text
    assert "could not be recorded on INC-1's timeline either" in noted
    assert counts(bot) == before  # nothing half-written
    whole(bot)

    # The fault is gone: the next requests work, and numbering goes on where it was.
    assert "Opened *INC-2*" in answer(bot, "open After the fault", "after")
    assert answer(bot, "note INC-1 after the fault", "note2") == "Noted on *INC-1*."
    whole(bot)
