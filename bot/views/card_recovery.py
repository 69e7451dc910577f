"""What a responder is told when an incident's card could not be posted, and when it is."""

from __future__ import annotations

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
