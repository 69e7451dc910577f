"""Slack misbehaving while responders work: retried when retrying can help, said when not,
and the timeline (the record) never depends on Slack.

Signed `/incident note` over HTTP into the bot; the fake Slack answers the card update or the
thread line with a fault. Each case checks what the responder was told, what Slack shows
(once, never twice), and that the note is on the timeline either way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from bot.slack_out import card_metadata
from tests.bot.conftest import bot_factory, fake_slack  # noqa: F401 (fixtures)
from tests.bot.test_incident_commands import ack_json, events, open_incident
from tests.slack_fake import FakeSlack

NOTE = "attacker key revoked"


def intercept(
    slack: FakeSlack, method: str, times: int, answer: Callable[[], Any] | None, *, pause: float = 0
) -> None:
    """The next `times` calls of `method`: wait `pause` s, then `answer()` (None: serve it)."""
    real = slack.handle_api
    left = [times]

    def handle(name: str, args: dict[str, Any], headers: dict[str, str]) -> Any:
        if name == method and left[0] > 0:
            left[0] -= 1
            time.sleep(pause)
            if answer is not None:
                return answer()
        return real(name, args, headers)

    slack.handle_api = handle  # type: ignore[method-assign]


def http_500(slack: FakeSlack, method: str, times: int = 1) -> None:
    intercept(slack, method, times, lambda: (500, {"ok": False, "error": "internal_error"}, {}))


def slow(slack: FakeSlack, method: str, seconds: float, times: int = 1) -> None:
    """Slack takes the call but answers after the client gave up."""
    intercept(slack, method, times, None, pause=seconds)


def note_lines(slack: FakeSlack) -> list[dict[str, Any]]:
    return [m for m in slack.messages("C0INCIDENT") if NOTE in m.get("text", "")]


def run_note(bot) -> str:
    bot.slack.reset_calls()
    assert ack_json(bot.command(f"note INC-1 {NOTE}")) == {}
    answer = bot.slack.wait_for("response_url", lambda c: "INC-1" in c.args["text"], timeout=10)
    bot.idle(10)
    return answer.args["text"]


@pytest.fixture
def bot(bot_factory):  # noqa: F811
    bot = bot_factory()
    open_incident(bot)
    bot.runtime.slack.sleep = lambda seconds: time.sleep(min(seconds, 0.05))  # backoffs
    return bot


RETRIED: dict[str, Callable[[Any], None]] = {
    "429 with Retry-After": lambda bot: bot.slack.rate_limit(
        "chat.postMessage", times=5, retry_after=0
    ),
    "500 on the thread line": lambda bot: http_500(bot.slack, "chat.postMessage", 2),
    "500 on the card update": lambda bot: http_500(bot.slack, "chat.update", 2),
    "timeout on the card update": lambda bot: slow(bot.slack, "chat.update", 0.6),
}


@pytest.mark.parametrize("fault", RETRIED)
def test_brief_failures_are_retried_and_shown_once(bot, fault):
    bot.runtime.client.timeout = 0.4
    RETRIED[fault](bot)
    assert run_note(bot) == "Noted on *INC-1*."
    assert len(note_lines(bot.slack)) == 1
    assert bot.slack.calls_for("chat.update", ok_only=True)
    assert [e.kind for e in events(bot)][-1] == "note"


PERMANENT = ("channel_not_found", "not_in_channel", "is_archived", "msg_too_long")
REVOKED = ("token_revoked", "invalid_auth", "account_inactive")


@pytest.mark.parametrize("error", PERMANENT + REVOKED)
def test_what_slack_refuses_is_said_once_and_the_note_is_kept(bot, error):
    bot.slack.fail_next("chat.postMessage", error, times=10)
    text = run_note(bot)
    assert text.startswith("Noted on *INC-1*. It is saved on the timeline, but Slack did not")
    assert f"the thread line (Slack answered `{error}`)" in text
    assert "try again" not in text.lower()
    # Retrying cannot help these: one call, not a burst against a dead channel or token.
    assert len(bot.slack.calls_for("chat.postMessage")) == 1
    kinds = [e.kind for e in events(bot)]
    assert kinds[-2:] == ["note", "slack.not_shown"]
    assert error in events(bot)[-1].summary


def test_a_thread_line_that_timed_out_is_not_sent_twice(bot):
    bot.runtime.client.timeout = 0.3
    slow(bot.slack, "chat.postMessage", 0.6)
    text = run_note(bot)
    assert "the thread line (no answer in time; it may still show)" in text
    time.sleep(0.5)  # Slack finishes the slow post
    assert len(note_lines(bot.slack)) == 1
    assert len(bot.slack.calls_for("chat.postMessage")) == 1
    assert [e.kind for e in events(bot)][-2:] == ["note", "slack.not_shown"]


def test_a_card_post_that_timed_out_is_found_not_posted_twice(bot):
    # GuardDuty's publisher posts cards patiently; a slow answer must not make two cards.
    bot.runtime.client.timeout = 0.3
    slow(bot.slack, "chat.postMessage", 0.45)
    slack = bot.runtime.slack
    slack.sleep = time.sleep
    bot.slack.reset_calls()
    posted = slack.call(
        "chat_postMessage",
        patient=True,
        channel="C0INCIDENT",
        metadata=card_metadata("INC-9"),
        text="INC-9 card",
    )
    cards = [m for m in bot.slack.messages("C0INCIDENT") if m.get("text") == "INC-9 card"]
    assert [m["ts"] for m in cards] == [posted["ts"]]
    assert len(bot.slack.calls_for("chat.postMessage")) == 1
