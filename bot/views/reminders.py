"""Reminders and the regulator clock as Slack text: mentions, length, the card's clock line."""

from __future__ import annotations

import datetime as dt

from bot.views import blocks as bk
from commands.deadlines.delivery import Delivery
from commands.deadlines.gdpr import regulator_clock
from commands.deadlines.policy import DeadlinePolicy
from commands.deadlines.timefmt import format_duration
from storage.models import Incident

MESSAGE_TEXT = 3_900


def subteam(group: str | None) -> str | None:
    """`<!subteam^S123>` for a user-group ID; a handle is shown as text (Slack needs the ID)."""
    if not group:
        return None
    group = group.strip()
    if group.startswith("S") and group[1:].isalnum() and group.isupper():
        return f"<!subteam^{group}>"
    return "@" + group.lstrip("@")


def reminder_text(delivery: Delivery, *, usergroup: str | None) -> str:
    """The owner and (unless a drill) the contacts' user group, then what the reminder says."""
    mentions = []
    if delivery.owner and delivery.owner[:1] in ("U", "W"):
        mentions.append(f"<@{delivery.owner}>")
    if delivery.mention_contacts:
        group = subteam(usergroup)
        if group:
            mentions.append(group)
    text = (" ".join(mentions) + " " if mentions else "") + delivery.text
    return text if len(text) <= MESSAGE_TEXT else text[: MESSAGE_TEXT - 1] + "…"


def clock_line(incident: Incident, *, now: dt.datetime, gdpr_hours: float) -> str | None:
    """The card's regulator-clock line (mrkdwn), or None without a clock."""
    clock = regulator_clock(incident, now=now, policy=DeadlinePolicy(gdpr_hours=gdpr_hours))
    if clock.state == "none" or clock.deadline is None or clock.remaining is None:
        return None
    left = format_duration(clock.remaining)
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
