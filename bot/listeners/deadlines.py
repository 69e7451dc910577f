"""The regulator clock in Slack: its line on the incident card, and `/incident notified`.

The reminders themselves are posted by bot/scheduler.py (started by serve()). `register`
makes the app's `deadlines:` settings the process-wide policy, so a clock started by any
command (`mark_personal_data`) uses the configured hours.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from bot.listeners.incident_posts import refresh_incident
from bot.listeners.incident_subcommands import take_incident
from bot.listeners.slash import Invocation, Reply, Subcommand, spec
from bot.views import blocks as bk
from commands import deadlines as dl
from commands import incidents as svc
from commands.errors import UserError
from storage.models import Incident

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
            svc.record_notified(
                session=session, incident=target, actor=inv.user_id, reference=reference
            )
            clock = dl.regulator_clock(target, now=runtime.now(), policy=runtime.settings)
        timing = ""
        if clock.remaining is not None:
            timing = (
                f"{dl.format_duration(clock.remaining)} before the deadline"
                if clock.remaining.total_seconds() >= 0
                else f"{dl.format_duration(clock.remaining)} after the deadline"
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
    dl.configure(app.runtime.settings)


def clock_line(incident: Incident, *, now: dt.datetime) -> str | None:
    """The card's regulator-clock line (mrkdwn), or None without a clock."""
    clock = dl.regulator_clock(incident, now=now)
    if clock.state == "none" or clock.deadline is None or clock.remaining is None:
        return None
    left = dl.format_duration(clock.remaining)
    if clock.state == "notified":
        side = "before" if clock.remaining.total_seconds() >= 0 else "after"
        return (
            f"📨 *Regulator notified* {bk.when(incident.notified_at)} "  # type: ignore[arg-type]
            f"({bk.esc_cut(incident.notified_reference or '', 300)}), {left} {side} the deadline"
        )
    if clock.state == "overdue":
        return (
            f"🚨 *Regulator notice OVERDUE* by {left} (was due {bk.when(clock.deadline)}). "
            f"Once sent: `/incident notified {incident.key} <reference>`"
        )
    return f"⏱️ *Regulator notice due in {left}* (by {bk.when(clock.deadline)})"


def clock_section(incident: Incident, now: dt.datetime) -> list[dict[str, Any]]:
    line = clock_line(incident, now=now)
    return [bk.context(line)] if line else []


# `/incident` subcommands of this module, in the order `/incident help` lists them.
SUBCOMMANDS: tuple[Subcommand, ...] = (
    spec(
        "notified",
        usage="/incident notified [INC-N] <reference>",
        summary="The regulator notice was sent: stop the GDPR clock's alerts.",
        handler=notified_cmd,
    ),
)
