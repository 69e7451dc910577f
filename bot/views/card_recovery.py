"""What a responder is told when Slack did not show something: an incident's card that could
not be posted (and when it is), a card update or thread line that Slack refused."""

from __future__ import annotations

from slack_sdk.errors import SlackApiError

from bot.slack_out import Unconfirmed
from bot.views import blocks as bk


def card_not_posted_reply(key: str, cause: str, *, recorded: bool) -> str:
    """The answer to `/incident open` when the incident was saved but Slack failed: it says
    the incident exists, so nobody opens it a second time. `cause` is already escaped."""
    where = (
        f" This is recorded on {key}'s timeline."
        if recorded
        else " (It could not be written on the timeline either.)"
    )
    return (
        f"Opened *{key}* (it is saved), but its card could not be posted to Slack: {cause}.{where}"
        f" The bot posts the card as soon as Slack takes it and tells you where; do not open"
        f" the incident again. `/incident status {key}` works meanwhile."
    )


def card_recovered_text(key: str, channel_id: str, *, found: bool) -> str:
    """The DM to whoever opened an incident whose card was posted late (or found late)."""
    how = "Slack never confirmed the card of" if found else "Slack did not take the card of"
    return (
        f"{how} *{key}* when you opened it; its card is now in {bk.channel(channel_id)}. "
        f"Nothing else is needed."
    )


def slack_failure(exc: BaseException) -> str:
    """Why Slack did not take a call, for a responder (escaped mrkdwn)."""
    if isinstance(exc, SlackApiError):
        response = exc.response
        status = response.status_code if response is not None else 200
        data = response.data if response is not None else None
        code = data.get("error") if isinstance(data, dict) else None
        said = bk.code(code, 100) if code else "an error"
        return f"Slack answered {said}" + (f" (HTTP {status})" if status != 200 else "")
    if isinstance(exc, Unconfirmed):
        return "no answer in time; it may still show"
    if isinstance(exc, TimeoutError):
        return "no answer in time (timed out)"
    return f"{bk.esc(type(exc).__name__)}: {bk.esc_cut(exc, 300)}"


def missed_phrase(what: str, exc: BaseException) -> str:
    """`what` Slack did not show (`the card update`), and why."""
    return f"{what} ({slack_failure(exc)})"


def not_shown_text(phrases: list[str]) -> str:
    """Appended to a reply when the change is saved but Slack did not show all of it."""
    if not phrases:
        return ""
    return (
        " It is saved on the timeline, but Slack did not show " + "; ".join(phrases) + "."
        " Do not repeat the command; the card catches up on its next change."
    )
