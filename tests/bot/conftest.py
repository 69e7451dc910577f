"""Fixtures for the Slack app tests: the fake Slack Web API and the HTTP-mode app under test.

`bot_factory(config)` runs the real WSGI app (bot.wiring.build_wsgi_app over create_app)
on a threaded server on an ephemeral 127.0.0.1 port, talking to the fake Slack, on a migrated
SQLite file. Tests send signed requests over HTTP and assert on the fake and the database.
(tests/bot/test_server.py runs the same app under gunicorn as a subprocess.)
"""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest
import requests
import yaml

from bot.app import IncidentBotApp
from bot.background import Background
from bot.runtime import Options, Runtime, make_runtime
from bot.settings import load_settings
from bot.wiring import build_wsgi_app, create_app
from containment.revoker.local import in_process_revoker
from storage.clock import FlowingClock
from storage.migrate import upgrade
from tests.slack_fake import FakeSlack, fake_slack
from tests.slack_signing import SlackSender

__all__ = ["BotUnderTest", "bot", "bot_factory", "fake_slack"]

SECRET = "test-signing-secret"
TOKEN = "xoxb-test-token"


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class BotUnderTest:
    app: IncidentBotApp
    runtime: Runtime
    slack: FakeSlack
    sender: SlackSender
    url: str

    def command(self, text: str, **kw: Any) -> requests.Response:
        kw.setdefault("response_url", self.slack.response_url("cmd"))
        return self.sender.command(text, **kw)

    def idle(self, timeout: float = 5.0) -> None:
        assert self.runtime.background.wait_idle(timeout), self.runtime.background.pending()

    def session(self):
        return self.runtime.database.read_session()


def write_config(path: Path, config: dict[str, Any]) -> Path:
    # The fake Slack is instant and unlimited unless a test asks for its manners
    # (`slack.realistic()`); such a test turns the bot's pacing back on (`slack.pace`).
    base: dict[str, Any] = {"slack": {"incident_channel": "C0INCIDENT", "pace": False}}
    for section, values in config.items():
        base.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(base))
    return path


def bot_settings(tmp_path: Path, slack: FakeSlack, config: dict[str, Any]) -> Any:
    db_url = f"sqlite:///{tmp_path / 'bot.db'}"
    upgrade(db_url)
    environ = {
        "SLACK_BOT_TOKEN": TOKEN,
        "SLACK_SIGNING_SECRET": SECRET,
        "INCIDENT_BOT_SLACK_API_URL": slack.base_url,
        "DATABASE_URL": db_url,
        "INCIDENT_BOT_CONFIG": str(write_config(tmp_path / "incident-bot.yml", config)),
    }
    return load_settings(environ)


@pytest.fixture
def bot_factory(
    tmp_path: Path, fake_slack: FakeSlack, clock: FlowingClock
) -> Iterator[Callable[..., BotUnderTest]]:
    """Bots on the test's clock (shared with `database` and across restarts)."""
    started: list[tuple[Any, threading.Thread, Runtime]] = []

    def start(config: dict[str, Any] | None = None) -> BotUnderTest:
        settings = bot_settings(tmp_path, fake_slack, config or {})
        runtime = make_runtime(
            settings,
            clock=clock,
            background=Background(max_workers=4, name="test-bg"),
            # moto runs no Lambda code: incident-bot-revoker runs in this process.
            options=Options(client_hooks=(in_process_revoker(clock.now),)),
        )
        app = create_app(settings, runtime=runtime)
        server = make_server(
            "127.0.0.1",
            0,
            build_wsgi_app(app),
            server_class=_ThreadingWSGIServer,
            handler_class=_QuietHandler,
        )
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        started.append((server, thread, runtime))
        url = f"http://127.0.0.1:{server.server_address[1]}"
        return BotUnderTest(
            app=app,
            runtime=runtime,
            slack=fake_slack,
            sender=SlackSender(f"{url}/slack/events", SECRET),
            url=url,
        )

    yield start
    for server, _thread, runtime in started:
        server.shutdown()
        server.server_close()
        runtime.shutdown(grace=2)


@pytest.fixture
def bot(bot_factory: Callable[..., BotUnderTest]) -> BotUnderTest:
    return bot_factory()
