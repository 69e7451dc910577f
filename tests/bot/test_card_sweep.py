"""Cards Slack did not take are posted later, once, and the opener is told the truth.

Signed `/incident open` over HTTP into the bot, the fake Slack failing the card post in the
ways the red team saw (429s past the client's retries, a 500, an answer lost to a timeout);
then the sweep (bot/card_sweep.py) as the serving process runs it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select

from bot.card_sweep import CardSweeper, claim, sweep_cards
from bot.wiring import STARTS
from storage.models import Incident
from tests.bot.test_incident_commands import ack_json, events, incident, response_texts
from tests.slack_fake import FakeSlack

OPENER = "W111"  # tests/slack_signing.py's default user


def cards_of(slack: FakeSlack, key: str) -> list[dict[str, Any]]:
    return [
        m
        for channel in slack.channels.values()
        for m in channel.messages.values()
        if (m.get("metadata") or {}).get("event_payload", {}).get("incident") == key
    ]


def http_error_next(slack: FakeSlack, method: str, status: int, *, times: int = 1) -> None:
    """Answer the next `times` calls of `method` with a bare HTTP `status` (Slack's 500s)."""
    real = slack.handle_api
    left = [times]

    def handle(name: str, args: dict[str, Any], headers: dict[str, str]) -> Any:
        if name == method and left[0] > 0:
            left[0] -= 1
            return status, {"ok": False, "error": "internal_error"}, {}
        return real(name, args, headers)

    slack.handle_api = handle  # type: ignore[method-assign]


def open_failing(bot, fail: Callable[[FakeSlack], None]) -> str:
    """`/incident open` while Slack fails the card post; the user's answer."""
    bot.slack.add_channel(OPENER)  # the opener's DM with the bot
    fail(bot.slack)
    assert ack_json(bot.command("open Disk full")) == {}
    answer = bot.slack.wait_for("response_url", lambda c: "INC-1" in c.args["text"])
    bot.idle()
    return answer.args["text"]


def test_open_under_429s_says_it_is_saved_and_the_sweep_posts_the_card_once(bot):
    text = open_failing(bot, lambda s: s.rate_limit("chat.postMessage", times=6, retry_after=0))
    assert "Opened *INC-1* (it is saved)" in text
    assert "Slack answered `ratelimited` (HTTP 429)" in text
    assert "do not open the incident again" in text
    assert "Try again" not in text and "try again" not in text
    assert [e.kind for e in events(bot)] == ["incident.opened", "slack.card_failed"]
    assert incident(bot).card_ts is None

    assert sweep_cards(bot.runtime) == []  # too young: its first post may still be in flight
    bot.runtime.clock.advance(seconds=121)
    swept = sweep_cards(bot.runtime)
    assert [(s.key, s.channel_id, s.found) for s in swept] == [("INC-1", "C0INCIDENT", False)]
    [card] = cards_of(bot.slack, "INC-1")
    assert incident(bot).card_ts == card["ts"]
    assert [e.kind for e in events(bot)][-1] == "slack.card_posted"
    dm = bot.slack.messages(OPENER)
    assert len(dm) == 1 and "its card is now in <#C0INCIDENT>" in dm[0]["text"]
    # The thread was started as for any card.
    thread = [m for m in bot.slack.messages("C0INCIDENT") if m.get("thread_ts") == card["ts"]]
    assert "Updates on INC-1 land in this thread" in thread[0]["text"]

    bot.runtime.clock.advance(seconds=600)
    assert sweep_cards(bot.runtime) == []
    assert len(cards_of(bot.slack, "INC-1")) == 1
    with bot.session() as session:
        assert session.scalar(select(func.count(Incident.id))) == 1


def test_open_under_a_500_is_answered_truthfully(bot):
    text = open_failing(bot, lambda s: http_error_next(s, "chat.postMessage", 500))
    assert (
        "Opened *INC-1* (it is saved)" in text
        and "Slack answered `internal_error` (HTTP 500)" in text
    )
    bot.runtime.clock.advance(seconds=121)
    assert [s.found for s in sweep_cards(bot.runtime)] == [False]
    assert len(cards_of(bot.slack, "INC-1")) == 1


def test_a_card_whose_answer_was_lost_is_found_not_posted_again(bot):
    # Slack takes the card but answers after the client gave up (the 12 s case, scaled).
    bot.runtime.client.timeout = 0.3
    text = open_failing(bot, lambda s: s.delay("chat.postMessage", 0.6))
    bot.slack.delay("chat.postMessage", 0)
    assert "Opened *INC-1* (it is saved)" in text
    assert "no answer in time" in text
    time.sleep(0.5)  # the fake finishes storing the late card
    assert len(cards_of(bot.slack, "INC-1")) == 1
    bot.runtime.client.timeout = 5

    bot.runtime.clock.advance(seconds=121)
    [swept] = sweep_cards(bot.runtime)
    assert swept.found is True
    [card] = cards_of(bot.slack, "INC-1")  # still one
    assert incident(bot).card_ts == card["ts"]
    assert events(bot)[-1].summary.startswith("Card found in the incident channel")
    assert "Slack never confirmed the card of *INC-1*" in bot.slack.messages(OPENER)[0]["text"]
    # From now on the card is updated in place like any other.
    assert ack_json(bot.command("severity INC-1 high")).get("text", "") is not None
    bot.idle()
    updated = bot.slack.wait_for("chat.update", lambda c: c.args["ts"] == card["ts"])
    assert updated.ok


def test_channel_per_incident_keeps_the_channel_its_first_attempt_made(bot_factory):
    bot = bot_factory({"slack": {"channel_per_incident": True}})
    text = open_failing(bot, lambda s: s.fail_next("chat.postMessage", "internal_error"))
    assert "Opened *INC-1* (it is saved)" in text
    channel_id = incident(bot).channel_id
    assert channel_id  # created and recorded before the post failed
    bot.runtime.clock.advance(seconds=121)
    [swept] = sweep_cards(bot.runtime)
    assert swept.channel_id == channel_id
    assert len(bot.slack.calls_for("conversations.create", ok_only=True)) == 1
    assert len(cards_of(bot.slack, "INC-1")) == 1


def test_slack_still_failing_leaves_it_for_the_next_round(bot):
    open_failing(bot, lambda s: s.fail_next("chat.postMessage", "internal_error"))
    bot.runtime.clock.advance(seconds=121)
    bot.slack.fail_next("chat.postMessage", "internal_error")
    assert sweep_cards(bot.runtime) == []
    assert incident(bot).card_ts is None
    bot.runtime.clock.advance(seconds=301)  # the failed round's claim lapses
    assert [s.key for s in sweep_cards(bot.runtime)] == ["INC-1"]
    assert len(cards_of(bot.slack, "INC-1")) == 1


def test_one_process_at_a_time_reposts_a_card(bot):
    assert claim(bot.runtime, "INC-7") is True
    assert claim(bot.runtime, "INC-7") is False
    bot.runtime.clock.advance(seconds=301)
    assert claim(bot.runtime, "INC-7") is True


def test_the_answer_after_a_posted_card_is_unchanged(bot):
    bot.slack.add_channel(OPENER)
    assert ack_json(bot.command("open Disk full")) == {}
    bot.slack.wait_for("response_url", lambda c: "INC-1" in c.args["text"])
    bot.idle()
    assert (
        response_texts(bot)[-1]
        == "Opened *INC-1*; its card is in the incident channel: <#C0INCIDENT>."
    )
    bot.runtime.clock.advance(seconds=121)
    assert sweep_cards(bot.runtime) == []
    assert bot.slack.messages(OPENER) == []


def test_serving_processes_run_the_sweep(bot):
    from bot import card_sweep

    assert card_sweep.start in STARTS
    open_failing(bot, lambda s: s.fail_next("chat.postMessage", "internal_error"))
    sweeper = CardSweeper(bot.runtime, every=0.05, grace=0)
    sweeper.start()
    try:
        deadline = time.monotonic() + 5
        while incident(bot).card_ts is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        sweeper.stop()
    assert len(cards_of(bot.slack, "INC-1")) == 1
