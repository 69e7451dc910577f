"""The Bolt app factory and the runtime every listener shares.

`create_app(settings)` builds the App from the settings (bot token, signing secret, and
INCIDENT_BOT_SLACK_API_URL as the WebClient's base URL), attaches a `Runtime` (database,
Slack client, background pool, clock) as `app.runtime`, and registers every listener module
in `bot.listeners` (see bot/listeners/__init__.py for how to add one).

Listeners run inside the request (`process_before_response=True`): they answer fast reads in
the ack itself and hand anything slow to `runtime.background`, whose jobs report their own
errors. Bolt's own post-ack thread pool would swallow them.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from slack_bolt import App
from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
)

from bot.background import Background, Job
from bot.settings import AppConfig, Settings
from bot.slack_out import SlackWriter
from storage.clock import Clock
from storage.db import Database

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """What listeners, background jobs and HTTP routes share in one process."""

    settings: Settings
    database: Database
    client: WebClient
    background: Background
    clock: Clock
    # Free slots for other parts of the bot (scheduler, GuardDuty poller) to hang state on.
    extras: dict[str, Any] = field(default_factory=dict)
    _stoppers: list[Callable[[], None]] = field(default_factory=list, repr=False)
    # The one path to Slack's chat API (bot/slack_out.py), over `client` and `database`.
    slack: SlackWriter = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.slack = SlackWriter(self.client, self.database)

    def now(self) -> dt.datetime:
        return self.clock.now()

    @property
    def config(self) -> AppConfig:
        return self.settings.config

    def on_shutdown(self, stop: Callable[[], None]) -> Callable[[], None]:
        """Register a stopper (a sweeper, a poller, the scheduler) for `shutdown`."""
        self._stoppers.append(stop)
        return stop

    def shutdown(self, *, grace: float = 20.0) -> list[Job]:
        """Stop producers (newest first), then let background work finish within `grace`.

        Returns the background jobs recorded as interrupted.
        """
        while self._stoppers:
            stop = self._stoppers.pop()
            try:
                stop()
            except Exception:
                log.exception("stopping %r failed", stop)
        interrupted = self.background.shutdown(grace=grace)
        self.database.dispose()
        return interrupted


class IncidentBotApp(App):
    """A Bolt App that remembers which commands and events were registered.

    The manifest test compares these sets with manifest.yml in both directions.
    """

    runtime: Runtime

    def __init__(self, *, runtime: Runtime, **kwargs: Any) -> None:
        self.registered_commands: set[str] = set()
        self.registered_events: set[str] = set()
        super().__init__(**kwargs)
        self.runtime = runtime

    def command(self, command: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(command, str):
            self.registered_commands.add(command)
        return super().command(command, *args, **kwargs)

    def event(self, event: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(event, str):
            self.registered_events.add(event)
        elif isinstance(event, dict) and isinstance(event.get("type"), str):
            self.registered_events.add(event["type"])
        return super().event(event, *args, **kwargs)

    def message(self, *args: Any, **kwargs: Any) -> Any:
        self.registered_events.add("message")
        return super().message(*args, **kwargs)


def make_client(settings: Settings) -> WebClient:
    token = settings.env.slack_bot_token
    return WebClient(
        token=token.get_secret_value() if token else None,
        base_url=settings.env.slack_api_url,
        timeout=10,
        retry_handlers=[
            ConnectionErrorRetryHandler(max_retry_count=2),
            RateLimitErrorRetryHandler(max_retry_count=3),
        ],
    )


def make_runtime(
    settings: Settings,
    *,
    clock: Clock,
    database: Database | None = None,
    background: Background | None = None,
    client: WebClient | None = None,
) -> Runtime:
    if database is not None and database.clock is not clock:
        raise ValueError("the runtime and its database must share one clock")
    return Runtime(
        settings=settings,
        clock=clock,
        database=database or Database(settings.database_url, clock=clock),
        client=client or make_client(settings),
        background=background or Background(),
    )


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    runtime: Runtime | None = None,
    token_verification: bool = True,
) -> IncidentBotApp:
    """Build the Bolt app with every listener registered (on `runtime`, or a new one on `clock`)."""
    from bot.listeners import register_all

    if runtime is None:
        if clock is None:
            raise TypeError("create_app needs the process's clock or a runtime")
        runtime = make_runtime(settings, clock=clock)
    secret = settings.env.slack_signing_secret
    app = IncidentBotApp(
        runtime=runtime,
        name="incident-bot",
        client=runtime.client,
        signing_secret=secret.get_secret_value() if secret else None,
        process_before_response=True,
        # Socket Mode needs no signature; HTTP mode refuses to start without a secret.
        request_verification_enabled=secret is not None,
        token_verification_enabled=token_verification,
        logger=logging.getLogger("incident_bot.bolt"),
    )
    register_all(app)
    return app


_SLUG_JUNK = re.compile(r"[^a-z0-9]+")


def slugify(text: str, *, limit: int = 40) -> str:
    """Lowercase ASCII words joined by '-', for channel names like inc-12-ssh-brute-force."""
    slug = _SLUG_JUNK.sub("-", text.lower()).strip("-")
    return slug[:limit].rstrip("-") or "incident"
