"""PostgreSQL restarted mid-request: the server ends the bot's connections (what a restart or a
failover does to them; here `pg_terminate_backend` from another session) while `/incident
open` and `/incident note` are writing. The user gets an answer without SQL, nothing is
half-written (no incident without its opening event, no event without its incident, chains
intact), and the next request works on fresh connections (the pool pings before reuse).

Runs where INCIDENT_BOT_TEST_POSTGRES_URL is set (CI's .ci/run sets it), like the other
PostgreSQL tests; the schema is reset at the start, as tests/conftest.py's `db_url` does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event, select, text

from bot.background import Background
from bot.runtime import make_runtime
from bot.settings import load_settings
from bot.wiring import build_wsgi_app, create_app
from storage.clock import FlowingClock
from storage.migrate import upgrade
from storage.models import Incident, TimelineEvent
from tests.bot.conftest import (
    SECRET,
    TOKEN,
    BotUnderTest,
    _QuietHandler,
    _ThreadingWSGIServer,
    write_config,
)
from tests.conftest import POSTGRES_URL, reset_postgres
from tests.reliability.test_db_faults import answer, counts, whole
from tests.slack_fake import FakeSlack, fake_slack  # noqa: F401 (fixture)
from tests.slack_signing import SlackSender

pytestmark = pytest.mark.skipif(
    POSTGRES_URL is None,
    reason="needs PostgreSQL: CI (.ci/run) sets INCIDENT_BOT_TEST_POSTGRES_URL",
)

APP_NAME = "incident-bot-pg-restart-test"  # marks the bot's own connections to terminate
LEAKS = ("INSERT", "OperationalError", "psycopg", "sqlalchemy", "[SQL", "terminat", "server closed")


@pytest.fixture
def pg_bot(
    tmp_path: Path,
    fake_slack: FakeSlack,  # noqa: F811
    clock: FlowingClock,
) -> Iterator[BotUnderTest]:
    from wsgiref.simple_server import make_server

    assert POSTGRES_URL is not None
    reset_postgres(POSTGRES_URL)
    upgrade(POSTGRES_URL)
    sep = "&" if "?" in POSTGRES_URL else "?"
    settings = load_settings(
        {
            "SLACK_BOT_TOKEN": TOKEN,
            "SLACK_SIGNING_SECRET": SECRET,
            "INCIDENT_BOT_SLACK_API_URL": fake_slack.base_url,
            "DATABASE_URL": f"{POSTGRES_URL}{sep}application_name={APP_NAME}",
            "INCIDENT_BOT_CONFIG": str(write_config(tmp_path / "incident-bot.yml", {})),
        }
    )
    runtime = make_runtime(settings, clock=clock, background=Background(max_workers=4, name="pg"))
    app = create_app(settings, runtime=runtime)
    server = make_server(
        "127.0.0.1",
        0,
        build_wsgi_app(app),
        server_class=_ThreadingWSGIServer,
        handler_class=_QuietHandler,
    )
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield BotUnderTest(
            app=app,
            runtime=runtime,
            slack=fake_slack,
            sender=SlackSender(f"{url}/slack/events", SECRET),
            url=url,
        )
    finally:
        server.shutdown()
        server.server_close()
        runtime.background.shutdown(grace=5)
        runtime.database.dispose()


@contextmanager
def restart_at_next_insert(bot: BotUnderTest, table: str) -> Iterator[list[int]]:
    """At the bot's next INSERT into `table`, PostgreSQL ends every connection the bot holds
    (the one running that INSERT included) before the statement reaches the server."""
    admin = create_engine(POSTGRES_URL or "", isolation_level="AUTOCOMMIT")
    killed: list[int] = []
    armed = threading.Event()
    armed.set()

    def before(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if not (
            armed.is_set() and statement.lstrip().upper().startswith(f"INSERT INTO {table.upper()}")
        ):
            return
        armed.clear()
        with admin.connect() as c:
            # Two statements: PostgreSQL may evaluate a WHERE clause's calls in any order.
            pids = c.scalars(
                text("SELECT pid FROM pg_stat_activity WHERE application_name = :app"),
                {"app": APP_NAME},
            ).all()
            for pid in pids:
                if c.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}):
                    killed.append(pid)
        # pg_terminate_backend signals; give the backends a moment to be gone.
        deadline = time.monotonic() + 5
        with admin.connect() as c:
            while time.monotonic() < deadline and c.scalar(
                text("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(:pids)"),
                {"pids": killed},
            ):
                time.sleep(0.02)

    engine = bot.runtime.database.engine.engine
    event.listen(engine, "before_cursor_execute", before)
    try:
        yield killed
    finally:
        event.remove(engine, "before_cursor_execute", before)
        admin.dispose()
    assert not armed.is_set(), f"the bot never wrote to {table}"


def test_connections_ended_mid_open_and_note_answer_without_sql_and_leave_nothing_half_written(
    pg_bot: BotUnderTest,
) -> None:
    bot = pg_bot
    assert "Opened *INC-1*" in answer(bot, "open Before the restart", "before")
    bot.slack.add_channel("W111")
    before = counts(bot)

    # The incident row is written, then its opening event: the connection dies between.
    with restart_at_next_insert(bot, "timeline_events") as killed:
        opened = answer(bot, "open During the restart", "open")
    assert killed, "no connection of the bot was ended"
    with restart_at_next_insert(bot, "timeline_events") as killed:
        noted = answer(bot, "note INC-1 during the restart", "note")
    assert killed
    for reply in (opened, noted):
        for leak in LEAKS:
            assert leak not in reply, reply
    # Each request either went through whole (a retry on a new connection) or said plainly
    # that nothing was saved; nothing in between.
    after = counts(bot)
    opened_ok = "Opened *INC-2*" in opened
    noted_ok = noted == "Noted on *INC-1*."
    if not opened_ok:
        assert "failed" in opened and "try again" in opened.lower(), opened
    if not noted_ok:
        assert "failed" in noted and "try again" in noted.lower(), noted
    assert after[0] == before[0] + opened_ok
    whole(bot)
    if "It is recorded on INC-1's timeline" in noted:  # only when it is true
        with bot.session() as session:
            kinds = session.scalars(
                select(TimelineEvent.kind)
                .join(Incident, Incident.id == TimelineEvent.incident_id)
                .where(Incident.number == 1)
            ).all()
        assert "bot.error" in kinds, kinds

    # PostgreSQL is back: the next requests work, and numbering goes on where it was.
    nxt = 3 if opened_ok else 2
    assert f"Opened *INC-{nxt}*" in answer(bot, "open After the restart", "after")
    assert answer(bot, "note INC-1 after the restart", "note2") == "Noted on *INC-1*."
    whole(bot)
