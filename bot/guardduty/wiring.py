"""How GuardDuty intake plugs into the Slack app; bot.wiring lists each of these:

- `register_routes(router)`: `POST /guardduty/events`;
- `register(app)`: the trusted-bot message listener;
- `finding_section(tag_keys)` and `bot.views.guardduty.plan_button`: the finding section
  and the "Plan containment" button on incident cards;
- `start(runtime)` (serving processes only): card recovery and the polling timer.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from slack_bolt import BoltContext

from bot.app import runtime_of
from bot.guardduty.intake import intake
from bot.guardduty.messages import finding_payloads, is_trusted_finding_message
from bot.guardduty.poller import GuardDutyPoller
from bot.guardduty.publisher import publisher_for
from bot.guardduty.route import PATH, handle_events
from bot.views.cards import SectionFactory
from bot.views.guardduty import finding_blocks
from commands.findings.errors import BadFinding, Ignored
from commands.findings.normalize import NormalizedFinding, normalize
from storage.models import Incident

if TYPE_CHECKING:
    from bot.app import IncidentBotApp
    from bot.http import Router
    from bot.runtime import Runtime

log = logging.getLogger(__name__)


def register_routes(router: Router) -> None:
    router.add("POST", PATH, handle_events)


def finding_section(tag_keys: Mapping[str, str]) -> SectionFactory:
    """The incident card's GuardDuty section, with the operator's tag names."""

    def section(incident: Incident, _now: dt.datetime) -> list[dict[str, Any]]:
        return finding_blocks(incident, tag_keys=tag_keys)

    return section


def handle_message(runtime: Runtime, event: dict[str, Any]) -> list[Any]:
    """Record the findings a trusted bot's message carries; other content is logged."""
    findings: list[NormalizedFinding] = []
    for payload in finding_payloads(event):
        try:
            findings.extend(normalize(payload))
        except Ignored as exc:
            log.debug("trusted bot message ignored: %s", exc)
        except BadFinding as exc:
            log.warning("trusted bot message carried a malformed finding: %s", exc)
    return intake(runtime, findings)


def trusted_message(event: dict[str, Any], context: BoltContext) -> bool:
    """Matcher: a message carrying findings from a trusted bot in the incident channel."""
    slack = runtime_of(context).config.slack
    return is_trusted_finding_message(
        event, trusted_bot_ids=slack.trusted_bot_ids, channel_id=slack.incident_channel
    )


def on_finding_message(event: dict[str, Any], context: BoltContext) -> None:
    # Recorded within the request (it is small and must not be lost); cards come later.
    handle_message(runtime_of(context), event)


def register(app: IncidentBotApp) -> None:
    app.event({"type": "message"}, matchers=[trusted_message])(on_finding_message)


def start(runtime: Runtime) -> None:
    """In a serving process: post cards a restart left unposted, and start polling."""
    publisher = publisher_for(runtime)
    try:
        publisher.recover()
    except Exception:
        log.exception("could not look for unposted GuardDuty cards")
    if runtime.options.guardduty_polling:
        poller = GuardDutyPoller(runtime)
        if poller.start():
            runtime.services.poller = poller
            runtime.on_shutdown(poller.stop)
