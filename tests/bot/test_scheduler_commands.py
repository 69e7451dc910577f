"""The deadlines over real HTTP: `/incident personal-data` starts the clock, the scheduler
(as serve() starts it) posts in the incident thread, `/incident notified` stops it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import select

from bot import scheduler as sched
from bot.reminder_kinds import reminder_kinds
from storage.models import Incident, Reminder, TimelineEvent
from tests.bot.test_scheduler import wait_quiet

pytestmark = pytest.mark.dates  # CI reruns these with the clock shifted (.ci/run)


def ack(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    return response.json() if response.content else {}


def open_incident(bot: Any) -> Incident:
    assert ack(bot.command("open Laptop with customer export stolen")) == {}
    bot.slack.wait_for("chat.postMessage", lambda c: "blocks" in c.args)
    bot.idle()
    with bot.session() as session:
        return session.scalars(select(Incident)).one()


def is_reminder(call: Any) -> bool:
    return (call.args.get("metadata") or {}).get("event_type") == "incident_bot_reminder"


def test_personal_data_then_notified_over_slack_with_the_scheduler_running(bot_factory) -> None:
    bot = bot_factory(
        {
            "deadlines": {
                "gdpr_hours": 0.0004,  # 1.44 s
                "reminder_hours_before": [0.0003],  # at 0.36 s
                "overdue_every_hours": 0.0001,  # every 0.36 s after the deadline
            },
            "contacts": {"slack_usergroup": "S0DPO"},
        }
    )
    scheduler = sched.start_for_runtime(
        bot.runtime, kinds=reminder_kinds(), maintain_at_start=False
    )
    try:
        incident = open_incident(bot)
        assert ack(bot.command("personal-data INC-1")) == {}
        bot.idle()
        first = bot.slack.wait_for("chat.postMessage", is_reminder, timeout=3)
        assert first.args["thread_ts"] == incident.thread_ts
        assert first.args["channel"] == "C0INCIDENT"
        assert "<@W111>" in first.args["text"] and "<!subteam^S0DPO>" in first.args["text"]
        assert "regulator notice for *INC-1* is due in" in first.args["text"]
        bot.slack.wait_for(
            "chat.postMessage", lambda c: is_reminder(c) and "OVERDUE" in c.args["text"]
        )

        assert ack(bot.command("notified INC-1 ICO-2026-0042")) == {}
        bot.idle()
        reply = bot.slack.wait_for("response_url", lambda c: "regulator notice" in c.args["text"])
        assert "after the deadline" in reply.args["text"]
        wait_quiet(scheduler, bot.runtime.database)
        with bot.session() as session:
            left = session.scalars(select(Reminder).where(Reminder.status == "pending")).all()
            sent = session.scalars(select(Reminder).where(Reminder.status == "sent")).all()
        # Nothing left to fire, and every reminder post is one sent row: the notice stopped them.
        assert [r.kind for r in left if r.kind.startswith("gdpr")] == []
        assert len([c for c in bot.slack.calls_for("chat.postMessage") if is_reminder(c)]) == len(
            sent
        )
    finally:
        scheduler.shutdown()
    line = bot.slack.wait_for("chat.postMessage", lambda c: "Regulator notified" in c.args["text"])
    assert "ICO-2026-0042" in line.args["text"] and line.args["thread_ts"] == incident.thread_ts
    assert bot.slack.calls_for("chat.update")  # the card re-rendered (time left → notified)
    with bot.session() as session:
        inc = session.scalars(select(Incident)).one()
        assert inc.notified_reference == "ICO-2026-0042"
        assert not session.scalars(select(Reminder).where(Reminder.status == "pending")).all()
        kinds = list(
            session.scalars(
                select(TimelineEvent.kind)
                .where(TimelineEvent.incident_id == inc.id)
                .order_by(TimelineEvent.seq)
            )
        )
    assert "reminder.gdpr" in kinds and "reminder.gdpr_overdue" in kinds
    assert kinds.index("reminders.cancelled") == kinds.index("incident.notified") + 1


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("notified INC-1", "Add the notice's reference"),
        ("notified INC-1 ICO-1", "has no regulator clock"),
        ("notified INC-9 ICO-1", "No incident INC-9"),
        ("notified ICO-1", "Say which incident"),
    ],
)
def test_notified_answers_mistakes_ephemerally(bot, text: str, answer: str) -> None:
    if text != "notified ICO-1":
        open_incident(bot)
    body = ack(bot.command(text, channel_id="C0ELSEWHERE"))
    assert body["response_type"] == "ephemeral" and answer in body["text"]


def test_notified_twice_is_refused(bot) -> None:
    open_incident(bot)
    ack(bot.command("personal-data INC-1"))
    bot.idle()
    ack(bot.command("notified INC-1 ICO-1"))
    bot.idle()
    body = ack(bot.command("notified INC-1 ICO-2"))
    assert "already recorded the regulator notice (ICO-1)" in body["text"]
    with bot.session() as session:
        assert session.scalars(select(Incident)).one().notified_reference == "ICO-1"
        # The clock's reminders were scheduled, then cancelled by the notice.
        statuses = set(session.scalars(select(Reminder.status)))
    assert statuses == {"cancelled"}


def test_card_shows_the_time_left_then_the_notice(bot_factory) -> None:
    bot = bot_factory({"deadlines": {"gdpr_hours": 48}})
    open_incident(bot)
    ack(bot.command("personal-data INC-1"))
    bot.idle()
    card = bot.slack.calls_for("chat.update")[-1].args
    text = json.dumps(card["blocks"])
    assert "Regulator notice due in 1 d 23 h" in text  # the configured 48 h, not 72
    ack(bot.command("notified INC-1 ICO-77 <b>"))
    bot.idle()
    text = json.dumps(bot.slack.calls_for("chat.update")[-1].args["blocks"])
    assert "Regulator notified" in text and "ICO-77 &lt;b&gt;" in text
    assert "before the deadline" in text and "due in" not in text
