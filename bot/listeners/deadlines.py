"""`/incident notified`: the regulator notice was sent, so the GDPR clock's alerts stop.

The reminders themselves are posted by bot/scheduler.py (started by serve()); the card's
clock line is bot/views/reminders.clock_line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.listeners.incident_posts import refresh_incident
from bot.listeners.incident_subcommands import take_incident
from bot.listeners.slash import Invocation, Reply, Subcommand, spec
from bot.views import replies
from commands import incidents as svc
from commands.deadlines import gdpr
from commands.errors import UserError

if TYPE_CHECKING:
    from bot.app import IncidentBotApp

EXAMPLE = "/incident notified INC-42 ICO-2026-0042"


def notified_cmd(inv: Invocation) -> Reply | None:
    with inv.runtime.database.read_session() as session:
        found, reference = take_incident(inv, session, example=EXAMPLE)
    reference = reference.strip()
    if not reference:
        raise UserError(replies.notice_reference_needed(found.key))
    if not found.personal_data:
        raise UserError(replies.no_regulator_clock(found.key))
    if found.notified_at is not None:
        raise UserError(replies.notice_already_recorded(found.key, found.notified_reference or ""))
    key = found.key

    def work() -> Reply:
        runtime = inv.runtime
        with runtime.database.session() as session:
            target = svc.get_incident(session=session, key=key, for_update=True)
            if target.notified_at is not None:  # a concurrent /incident notified won
                return Reply(replies.notice_already_recorded(key))
            gdpr.record_notice(
                session=session, incident=target, actor=inv.user_id, reference=reference
            )
            clock = gdpr.regulator_clock(target, now=runtime.now(), policy=runtime.deadline_policy)
        timing = replies.notice_timing(clock.remaining)
        refresh_incident(runtime, key, line=replies.notified_line(reference, inv.user_id, timing))
        return Reply(replies.notified_reply(key, timing))

    inv.defer("record regulator notice", work)
    return None


def register(app: IncidentBotApp) -> None:
    """Nothing to wire beyond the `notified` subcommand (the card's clock line is drawn by
    bot/views/cards.py, the reminders posted by bot/scheduler.py)."""


# `/incident` subcommands of this module, in the order `/incident help` lists them.
SUBCOMMANDS: tuple[Subcommand, ...] = (
    spec(
        "notified",
        usage="/incident notified [INC-N] <reference>",
        summary="The regulator notice was sent: stop the GDPR clock's alerts.",
        handler=notified_cmd,
    ),
)
