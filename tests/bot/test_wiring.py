"""bot.wiring: the app is built from explicit lists, and handlers run on their own."""

from __future__ import annotations

from typing import Any

import pytest

from bot.app import RUNTIME
from bot.listeners.events import on_home_opened
from bot.listeners.views import on_note
from bot.wiring import INCIDENT, card_parts, create_app
from commands.incidents import open_incident
from tests.bot.conftest import BotUnderTest


class Ack:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **kwargs: Any) -> None:
        self.calls.append(kwargs)


def test_an_event_handler_runs_without_bolt(bot: BotUnderTest) -> None:
    on_home_opened(
        {"type": "app_home_opened", "user": "W111", "tab": "home"}, {RUNTIME: bot.runtime}
    )
    bot.idle()
    assert bot.slack.wait_for("views.publish").args["user_id"] == "W111"


def test_a_view_handler_answers_a_bad_submission_in_its_ack(bot: BotUnderTest) -> None:
    ack = Ack()
    view = {"state": {"values": {"note": {"note": {"value": "  "}}}}, "private_metadata": "{}"}
    on_note(ack, {"user": {"id": "W111"}}, view, {RUNTIME: bot.runtime})
    assert ack.calls == [{"response_action": "errors", "errors": {"note": "Write the note first."}}]


def test_building_the_app_twice_registers_nothing_twice(bot: BotUnderTest) -> None:
    names = [s.name for s in INCIDENT.subcommands()]
    again = create_app(bot.runtime.settings, runtime=bot.runtime, token_verification=False)
    assert again.registered_commands == bot.app.registered_commands
    assert [s.name for s in INCIDENT.subcommands()] == names
    assert names[:3] == ["open", "list", "status"] and names.index("help") < names.index("drill")


def test_cards_carry_every_feature_part(bot: BotUnderTest) -> None:
    parts = card_parts(bot.runtime.settings)
    assert bot.runtime.card_parts.buttons == parts.buttons
    # GuardDuty's facts, roles and tasks, and the investigation summary (the GDPR clock line
    # is the card's own).
    assert len(bot.runtime.card_parts.sections) == len(parts.sections) == 3
    with bot.runtime.database.session() as session:
        incident = open_incident(session=session, title="t", created_by="W111")
        buttons = [b(incident) for b in parts.buttons]
    ids = [b["action_id"] for b in buttons if b is not None]
    # "Take it" (unowned only) and the GuardDuty plan button (GuardDuty's only) come first.
    assert ids == ["incident_note", "incident_timeline", "incident_resolve", "incident_close"]


def test_a_command_has_one_listener(bot: BotUnderTest) -> None:
    """Bolt runs the first matching listener: a second for the same command would never run."""
    with pytest.raises(ValueError, match="registered twice"):
        bot.app.command("/incident")(lambda ack: ack())
