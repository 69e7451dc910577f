"""A GuardDuty incident nobody owns pings the on-call user group in its thread, again and
again, until someone presses "Take it" on its card."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from storage.models import Incident, Reminder, TimelineEvent
from tests.bot.guardduty.conftest import GuardDutyBot
from tests.bot.guardduty.test_guardduty_route import event
from tests.bot.test_people import is_reminder, scheduler_for
from tests.commands.findings.guardduty_fixtures import ec2_detail
from tests.slack_signing import block_actions_payload

Start = Callable[..., GuardDutyBot]
pytestmark = pytest.mark.dates


def pings(gd: GuardDutyBot) -> list[Any]:
    return [c for c in gd.bot.slack.calls_for("chat.postMessage") if is_reminder(c)]


def unowned_rows(gd: GuardDutyBot) -> list[Reminder]:
    with gd.bot.session() as session:
        return list(
            session.scalars(
                select(Reminder).where(Reminder.kind == "unowned").order_by(Reminder.id)
            )
        )


def test_oncall_is_pinged_until_someone_takes_it(guardduty_bot: Start, clock) -> None:
    gd = guardduty_bot({"oncall": {"slack_usergroup": "S0ONCALL", "ping_every_minutes": 10}})
    assert gd.post(event(ec2_detail(severity=8))).status_code == 200
    gd.settle()
    card = gd.bot.slack.wait_for("chat.postMessage", lambda c: "blocks" in c.args)
    buttons = [el for b in card.args["blocks"] if b["type"] == "actions" for el in b["elements"]]
    take = [el for el in buttons if el.get("action_id") == "incident_take"]
    assert take and take[0]["value"] == "INC-1" and take[0]["text"]["text"] == "Take it"
    assert "*Owner*\\nguardduty" not in json.dumps(card.args["blocks"])  # nobody, not GuardDuty

    scheduler = scheduler_for(gd.bot)
    assert scheduler.run_due() == 1  # the first ping goes out with the card
    assert scheduler.drain(10)  # posted and recorded by the scheduler's posting lanes
    first = pings(gd)[0]
    assert first.args["thread_ts"] == card.response["ts"]
    assert first.args["text"].startswith("<!subteam^S0ONCALL> 🙋 *INC-1* (high) has had no owner")
    assert "press *Take it* on its card" in first.args["text"]

    clock.advance(minutes=10, seconds=1)
    assert scheduler.run_due() == 1
    assert scheduler.drain(10)
    assert len(pings(gd)) == 2
    assert [r.status for r in unowned_rows(gd)] == ["sent", "sent", "pending"]

    clicked = block_actions_payload(
        "incident_take",
        "INC-1",
        user_id="U0ONCALL1",
        message_ts=card.response["ts"],
        response_url=gd.bot.slack.response_url("take"),
        message=card.response["message"],
    )
    assert gd.bot.sender.action(clicked).status_code == 200
    said = gd.bot.slack.wait_for("response_url", lambda c: "You own" in c.args["text"])
    assert said.args["text"] == "You own *INC-1* now." and said.args["replace_original"] is False
    gd.bot.slack.wait_for("chat.postMessage", lambda c: "<@U0ONCALL1> took INC-1" in c.args["text"])
    gd.settle()
    gd.bot.idle()
    with gd.bot.session() as session:
        assert session.scalars(select(Incident)).one().owner == "U0ONCALL1"
        kinds = list(session.scalars(select(TimelineEvent.kind).order_by(TimelineEvent.id)))
    assert kinds.count("reminder.unowned") == 2
    assert kinds.index("reminders.cancelled") == kinds.index("incident.owner") + 1
    assert [r.status for r in unowned_rows(gd)] == ["sent", "sent", "cancelled"]

    # No more pings; the card lost its button; a second taker is told who has it.
    clock.advance(minutes=30)
    assert scheduler.run_due() == 0 and scheduler.drain(10) and len(pings(gd)) == 2
    update = gd.bot.slack.calls_for("chat.update")[-1]
    assert "incident_take" not in json.dumps(update.args["blocks"])
    clicked["user"]["id"] = "U0LATE"
    gd.bot.sender.action(clicked)
    late = gd.bot.slack.wait_for("response_url", lambda c: "already has an owner" in c.args["text"])
    assert "`/incident assign INC-1 me` takes it over" in late.args["text"]


def test_without_an_oncall_group_nobody_is_pinged(guardduty_bot: Start) -> None:
    gd = guardduty_bot()
    gd.post(event(ec2_detail(severity=8)))
    gd.settle()
    assert unowned_rows(gd) == []
    card = gd.bot.slack.calls_for("chat.postMessage")[0]
    assert "incident_take" in json.dumps(card.args["blocks"])  # still takeable by hand
