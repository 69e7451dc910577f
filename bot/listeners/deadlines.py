"""`/incident notified`: the regulator notice was sent, so the GDPR clock's alerts stop.

The reminders themselves are posted by bot/scheduler.py (started by serve()); the card's
clock line is bot/views/reminders.clock_line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.listeners.incident_posts import refresh_incident
from bot.listeners.incident_subcommands import take_incident
from bot.listeners.slash import Invocation, Reply, Subcommand, spec
from bot.views import blocks as bk
from commands import incidents as svc
from commands.deadlines import gdpr
from commands.deadlines.timefmt import format_duration
from commands.errors import UserError

if TYPE_CHECKING:
    from bot.app import IncidentBotApp

EXAMPLE = "/incident notified INC-42 ICO-2026-0042"


def notified_cmd(inv: Invocation) -> Reply | None:
    with inv.runtime.database.read_session() as session:
        found, reference = take_incident(inv, session, example=EXAMPLE)
    reference = reference.strip()
    if not reference:
        raise UserError(
            f"Add the notice's reference: `/incident notified {found.key} <reference>`."
        )
    if not found.personal_data:
        raise UserError(
            f"{found.key} has no regulator clock: mark it with "
            f"`/incident personal-data {found.key}` first."
        )
    if found.notified_at is not None:
        raise UserError(
            f"{found.key} already recorded the regulator notice "
            f"({found.notified_reference}); add corrections with `/incident note`."
        )
    key = found.key

    def work() -> Reply:
        runtime = inv.runtime
        with runtime.database.session() as session:
            target = svc.get_incident(session=session, key=key, for_update=True)
            if target.notified_at is not None:  # a concurrent /incident notified won
                return Reply(f"{key} already recorded the regulator notice.")
            gdpr.record_notice(
                session=session, incident=target, actor=inv.user_id, reference=reference
            )
            clock = gdpr.regulator_clock(target, now=runtime.now(), policy=runtime.deadline_policy)
        timing = ""
        if clock.remaining is not None:
            timing = (
                f"{format_duration(clock.remaining)} before the deadline"
                if clock.remaining.total_seconds() >= 0
                else f"{format_duration(clock.remaining)} after the deadline"
            )
        refresh_incident(
            runtime,
            key,
            line=f"📨 Regulator notified ({bk.esc_cut(reference, 300)}) by "
            f"{bk.user(inv.user_id)}, {timing}. GDPR reminders stopped.",
        )
        return Reply(f"Recorded the regulator notice for *{key}* ({timing}); alerts stopped.")

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
