"""What one process shares: settings, database, clock, Slack client and writer, the
background pool, the options a deployment or a test chose, and the long-lived services.

`Options` are set before the app is built (tests inject fakes here); `Services` are the
process's singletons, each created once by its feature (`service(runtime)`,
`publisher_for(runtime)`...) or by bot.wiring, and stopped by `Runtime.shutdown`.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from slack_sdk import WebClient
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
)

from bot.background import Background, Job
from bot.settings import AppConfig, Settings
from bot.slack_out import Pace, SlackWriter
from bot.views.cards import CardParts
from commands.deadlines.policy import DeadlinePolicy
from storage.clock import Clock
from storage.db import Database

if TYPE_CHECKING:
    from bot.approvals.service import ContainmentService
    from bot.guardduty.intake import BatchWriter
    from bot.guardduty.poller import GuardDutyPoller
    from bot.guardduty.publisher import CardPublisher
    from bot.guardduty.sns import SnsVerifier
    from bot.investigation_work import AbuseWatcher, ImpactSweeper
    from bot.listeners.anchors import AnchorSweeper
    from bot.scheduler import ReminderScheduler
    from commands.approvals.plans import Engine
    from containment.context import ClientHook

log = logging.getLogger(__name__)

ClientFactory = Callable[[str, "str | None"], Any]  # (service, region) -> boto3 client


@dataclass
class Options:
    """Choices made before the app is built; the defaults are production's."""

    # (service, region) -> client for GuardDuty reads (polling, tags) and for drills.
    guardduty_clients: ClientFactory | None = None
    drill_clients: ClientFactory | None = None
    # (service, region) -> client for the write-back on close (GuardDuty, Security Hub).
    writeback_clients: ClientFactory | None = None
    # Containment: the engine, hooks on every boto3 client it makes, SNS and SES clients
    # for contacts (region -> client).
    containment_engine: Engine | None = None
    client_hooks: tuple[ClientHook, ...] = ()
    sns_factory: Callable[[str], Any] | None = None
    ses_factory: Callable[[str], Any] | None = None
    # Periodic workers, in seconds; 0 or None: the worker is not started.
    containment_sweep_seconds: float | None = 5.0
    impact_sweep_seconds: float | None = 10.0
    abuse_check_seconds: float | None = 900.0  # Support API calls are rate limited
    anchor_sweep_seconds: float | None = 60.0  # timeline anchors (bot/listeners/anchors.py)
    # Cards never posted (bot/card_sweep.py): how often to look, and how old an incident
    # must be before its card counts as lost rather than still on its way.
    card_sweep_seconds: float | None = 30.0
    card_grace_seconds: float = 120.0
    # GuardDuty: poll from this process; propose containment of high findings by itself.
    guardduty_polling: bool = True
    guardduty_propose: bool = True
    # SNS: the signature verifier, and how a SubscribeURL is visited (None: requests.get).
    sns_verifier: SnsVerifier | None = None
    sns_confirm_get: Callable[[str], Any] | None = None


@dataclass
class Services:
    """The process's long-lived parts, each created once (None until then)."""

    containment: ContainmentService | None = None
    # Engines for requests whose plan names one (plan["engine"]: "forensics", "wipe").
    engines: dict[str, Engine] = field(default_factory=dict)
    publisher: CardPublisher | None = None
    intake_writer: BatchWriter | None = None
    poller: GuardDutyPoller | None = None
    scheduler: ReminderScheduler | None = None
    impact_sweeper: ImpactSweeper | None = None
    abuse_watcher: AbuseWatcher | None = None
    anchor_sweeper: AnchorSweeper | None = None
    sns_verifier: SnsVerifier | None = None
    # GuardDuty intake's write transactions queue here (see bot/guardduty/writes.py).
    write_lock: threading.Lock = field(default_factory=threading.Lock)
    # Guards the lazy creation of the services above.
    create_lock: threading.RLock = field(default_factory=threading.RLock)


@dataclass
class Runtime:
    """What listeners, background jobs and HTTP routes share in one process."""

    settings: Settings
    database: Database
    client: WebClient
    background: Background
    clock: Clock
    options: Options = field(default_factory=Options)
    # What the incident card shows besides its core (bot.wiring.card_parts builds the app's).
    card_parts: CardParts = field(default_factory=CardParts)
    services: Services = field(default_factory=Services)
    _stoppers: list[Callable[[], None]] = field(default_factory=list, repr=False)
    # The one path to Slack's chat API (bot/slack_out.py), over `client` and `database`.
    slack: SlackWriter = field(init=False, repr=False)

    def __post_init__(self) -> None:
        pace = Pace() if self.settings.config.slack.pace else None
        self.slack = SlackWriter(self.client, self.database, pace=pace)

    def now(self) -> dt.datetime:
        return self.clock.now()

    @property
    def config(self) -> AppConfig:
        return self.settings.config

    @property
    def deadline_policy(self) -> DeadlinePolicy:
        """The `deadlines:` settings as the policy every deadline call is given."""
        return DeadlinePolicy.from_options(self.settings.config.deadlines)

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
    options: Options | None = None,
) -> Runtime:
    if database is not None and database.clock is not clock:
        raise ValueError("the runtime and its database must share one clock")
    return Runtime(
        settings=settings,
        clock=clock,
        database=database
        or Database(settings.database_url, clock=clock, timeline_key=settings.timeline_key()),
        client=client or make_client(settings),
        background=background or Background(),
        options=options or Options(),
    )
