"""Every reminder kind the bot posts, in one place: what it says, and what follows its post.

`reminder_kinds()` builds the map the scheduler is given (bot/scheduler.py). A new kind
adds its handler here (and its name to commands.deadlines.queue.KINDS); nothing is
registered by importing a module, so the standalone scheduler imports no Slack listener.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from bot.approvals.cards import load_card
from bot.slack_out import SlackWriter, card_id
from bot.views.approval_card import approval_card
from commands import abuse, people
from commands.approvals import expiry
from commands.deadlines.delivery import Delivery, KindHandler
from commands.deadlines.kinds import deadline_kinds
from storage.db import Database
from storage.models import Reminder


class Poster(Protocol):
    """What an after-post hook gets from the scheduler that posted the reminder."""

    database: Database
    slack: SlackWriter


# Run after a reminder was posted: fn(scheduler, delivery, channel, ts). For Slack-side
# follow-ups such as updating an approval card when its expiry fires.
AfterPost = Callable[[Poster, Delivery, str, "str | None"], None]


@dataclass(frozen=True)
class ReminderKinds:
    deliver: Mapping[str, KindHandler]
    after_post: Mapping[str, Sequence[AfterPost]]


def expired_card(scheduler: Poster, delivery: Delivery, channel: str, ts: str | None) -> None:
    """The scheduler expired a request: its card says so and loses its buttons."""
    with scheduler.database.read_session() as session:
        reminder = session.get(Reminder, delivery.reminder_id)
        request_id = expiry.request_id_of(reminder) if reminder else None
    if request_id is None:
        return
    slack = scheduler.slack
    with slack.card_lock(card_id("approval", request_id)):
        view, card_channel, card_ts = load_card(scheduler.database, request_id)
        if card_channel and card_ts:
            slack.update(card_channel, card_ts, approval_card(view))


def reminder_kinds() -> ReminderKinds:
    return ReminderKinds(
        deliver={
            **deadline_kinds(),
            "abuse": abuse.abuse_delivery,
            people.UNOWNED_KIND: people.unowned_delivery,
            people.TASK_KIND: people.task_delivery,
            expiry.KIND: expiry.deliver_expiry,
        },
        after_post={expiry.KIND: (expired_card,)},
    )
