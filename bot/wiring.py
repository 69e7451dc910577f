"""The one place the bot is put together: the runtime, the Bolt app, its HTTP routes and
the services a serving process starts. Nothing in bot/ registers itself on import; every
listener module, route and service is named here, in the order it is wired.

A new feature adds its module's `register(app)` to `LISTENERS` (Bolt runs the first
listener that matches a request, so order matters), its routes to `ROUTES`, and what runs
beside the listeners (pollers, sweepers) to `STARTS`.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from bot import card_sweep, investigation_work, scheduler
from bot.app import IncidentBotApp
from bot.clock import SystemClock
from bot.guardduty import wiring as guardduty
from bot.http import Router, core_router
from bot.listeners import (
    actions,
    anchors,
    containment,
    deadlines,
    drill,
    events,
    incident_subcommands,
    investigation,
    people,
    review,
    views,
)
from bot.listeners.slash import SlashCommand
from bot.reminder_kinds import reminder_kinds
from bot.runtime import Options, Runtime, make_runtime
from bot.scheduler import ReminderScheduler
from bot.settings import Settings, SettingsError, load_settings
from bot.views import guardduty as guardduty_view
from bot.views.cards import CORE_BUTTONS, CardParts
from bot.views.investigation import investigation_card_section
from bot.views.people import take_button
from storage.clock import Clock
from storage.migrate import upgrade

log = logging.getLogger(__name__)

Register = Callable[[IncidentBotApp], None]

# `/incident`: the core subcommands, then each feature's, in the order its help lists them.
INCIDENT = SlashCommand(
    "/incident",
    fallback="help",
    subcommands=(
        *incident_subcommands.SUBCOMMANDS,
        *people.SUBCOMMANDS,
        *deadlines.SUBCOMMANDS,
        *drill.SUBCOMMANDS,
        *investigation.INCIDENT_SUBCOMMANDS,
        *review.SUBCOMMANDS,
    ),
)

# Registered in this order; then the fallbacks, which must come after every other listener.
LISTENERS: tuple[Register, ...] = (
    INCIDENT.register,
    actions.register,
    people.register,
    views.register,
    review.register,
    events.register,
    containment.register,
    deadlines.register,
    guardduty.register,
    investigation.register,
)
FALLBACKS: tuple[Register, ...] = (events.register_fallback,)
ROUTES: tuple[Callable[[Router], None], ...] = (guardduty.register_routes,)
# Started in serving processes only, after the reminder scheduler.
STARTS: tuple[Callable[[Runtime], None], ...] = (
    guardduty.start,
    investigation_work.start,
    anchors.start,
    card_sweep.start,
)
# Incident card buttons, in the order they show (the severity menu comes first).
CARD_BUTTONS = (take_button, guardduty_view.plan_button, *CORE_BUTTONS)


def card_parts(settings: Settings) -> CardParts:
    """The sections incident cards show after their facts, in order, and their buttons."""
    tag_keys = settings.config.impact.tag_keys
    return CardParts(
        sections=(
            guardduty.finding_section(tag_keys),
            people.card_section(settings.config.deadlines.timezone),
            investigation_card_section,
        ),
        buttons=CARD_BUTTONS,
    )


# Reminder kinds (what each says, and the Slack follow-ups of their posts) are one explicit
# map: bot/reminder_kinds.py, handed to the scheduler in `start_scheduler`.


def _bolt_logger() -> logging.Logger:
    """Bolt's logger, at the level logging is configured to now. Bolt formats a debug line
    for each middleware of every request when its logger's own level is unset (NOTSET reads
    as below DEBUG), only for `debug` to drop it: a few µs of every ack."""
    logger = logging.getLogger("incident_bot.bolt")
    if logger.level == logging.NOTSET:
        logger.setLevel(logger.getEffectiveLevel())
    return logger


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    runtime: Runtime | None = None,
    options: Options | None = None,
    token_verification: bool = True,
) -> IncidentBotApp:
    """Build the Bolt app with every listener registered (on `runtime`, or a new one on `clock`).

    The app gets the bot token, the signing secret, and INCIDENT_BOT_SLACK_API_URL as the
    WebClient's base URL from the settings; `app.runtime` is what its listeners share.
    """
    if runtime is None:
        if clock is None:
            raise TypeError("create_app needs the process's clock or a runtime")
        runtime = make_runtime(settings, clock=clock, options=options)
    runtime.card_parts = card_parts(settings)
    secret = settings.env.slack_signing_secret
    app = IncidentBotApp(
        runtime=runtime,
        name="incident-bot",
        client=runtime.client,
        signing_secret=secret.get_secret_value() if secret else None,
        process_before_response=True,
        # Bolt's own check would be a second HMAC of every request: HTTP mode (which refuses
        # to start without a secret) verifies each one in bot/http.py before anything parses
        # it, and Socket Mode's requests carry no signature.
        request_verification_enabled=False,
        token_verification_enabled=token_verification,
        # The bot defines no workflow functions: nothing for this middleware to attach.
        attaching_function_token_enabled=False,
        logger=_bolt_logger(),
    )
    for register in (*LISTENERS, *FALLBACKS):
        register(app)
    investigation_work.add_engines(runtime)
    # Approval requests expire and recover in every process that serves their buttons.
    containment.start_sweeper(runtime)
    return app


def build_wsgi_app(app: IncidentBotApp) -> Router:
    """The WSGI app for HTTP mode: Slack events, health, and every feature's routes."""
    router = core_router(app)
    for add_routes in ROUTES:
        add_routes(router)
    return router


def start_scheduler(runtime: Runtime, **kwargs: Any) -> ReminderScheduler:
    """The reminder scheduler on `runtime`, with every reminder kind the bot posts."""
    return scheduler.start_for_runtime(runtime, kinds=reminder_kinds(), **kwargs)


def start_services(runtime: Runtime) -> None:
    """Start what runs beside the listeners in a serving process.

    The reminder scheduler (bot/scheduler.py: one per process, exactly once across them),
    then `STARTS` (pollers, sweepers); each registers its stopper with `runtime.on_shutdown`,
    which `bot.server.drain` runs first.
    """
    start_scheduler(runtime)
    runtime.on_shutdown(lambda: scheduler.stop_for_runtime(runtime))
    for start in STARTS:
        start(runtime)


def scheduler_main(argv: list[str] | None = None) -> int:
    """`python -m bot.scheduler`: the reminder scheduler as a process of its own."""
    parser = argparse.ArgumentParser(prog="python -m bot.scheduler", description=scheduler.__doc__)
    parser.add_argument("--poll", type=float, default=10.0, help="max seconds between DB looks")
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--no-maintain", action="store_true", help="no digest/stale upkeep")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    upgrade(settings.database_url)
    runtime = make_runtime(settings, clock=SystemClock())
    runtime.card_parts = card_parts(settings)  # cards it refreshes look the app's
    kwargs: dict[str, Any] = {"poll_seconds": args.poll, "batch": args.batch}
    if args.no_maintain:
        kwargs["maintain_seconds"] = 24 * 3600.0
        kwargs["maintain_at_start"] = False
    reminders = start_scheduler(runtime, **kwargs)
    print(f"scheduler ready worker={reminders.worker_id}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    scheduler.stop_for_runtime(runtime)
    runtime.background.shutdown(grace=5)
    return 0
