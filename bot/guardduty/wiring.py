"""How GuardDuty intake plugs into the Slack app (through its extension points).

`bot/listeners/guardduty.py` re-exports `register` and `register_routes`, so the app's
listener discovery finds them:

- `register_routes(router)`: `POST /guardduty/events`;
- `register(app)`: the trusted-bot message listener, the finding section and the
  "Plan containment" button on incident cards;
- `start(runtime)` (serving processes only): card recovery and the polling timer.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from bot.guardduty import cards
from bot.guardduty.intake import intake
from bot.guardduty.messages import finding_payloads, is_trusted_finding_message
from bot.guardduty.poller import GuardDutyPoller
from bot.guardduty.publisher import publisher_for
from bot.guardduty.route import PATH, handle_events
from commands.findings.errors import BadFinding, Ignored
from commands.findings.normalize import NormalizedFinding, normalize

if TYPE_CHECKING:
    from bot.app import IncidentBotApp
    from bot.http import Router
    from bot.runtime import Runtime

log = logging.getLogger(__name__)

_hooks_installed = False


def register_routes(router: Router) -> None:
    router.add("POST", PATH, handle_events)


def install_card_hooks() -> bool:
    """Add the finding section and the plan button to every incident card render.

    Uses bot.views.cards' `card_button` and, when present, `card_section` hooks. Without
    `card_section`, the publisher inserts the section into the cards it posts itself.
    """
    global _hooks_installed
    if _hooks_installed:
        return True
    from bot.views import cards as incident_cards

    incident_cards.card_button(order=5)(cards.plan_button)
    section_hook = getattr(incident_cards, "card_section", None)
    if section_hook is not None:
        section_hook(order=10)(lambda incident, _now: cards.finding_blocks(incident))
    _hooks_installed = True
    return section_hook is not None


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


def register(app: IncidentBotApp) -> None:
    runtime = app.runtime
    install_card_hooks()
    cards.configure_tag_keys(runtime.config.impact.tag_keys)
    slack = runtime.config.slack

    def trusted(event: dict[str, Any]) -> bool:
        return is_trusted_finding_message(
            event, trusted_bot_ids=slack.trusted_bot_ids, channel_id=slack.incident_channel
        )

    @app.event({"type": "message"}, matchers=[trusted])
    def on_finding_message(event: dict[str, Any]) -> None:
        # Recorded within the request (it is small and must not be lost); cards come later.
        handle_message(runtime, event)


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
