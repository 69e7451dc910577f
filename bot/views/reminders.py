"""Reminders and the regulator clock as Slack text (mrkdwn): what each reminder kind says,
who it mentions, the daily digest, and the card's clock line.

commands/deadlines decides *what* a reminder is about (a Delivery with a notice as data);
only this module knows how that reads in Slack. User text is escaped here, so a title like
`<!channel>` shows literally instead of pinging everyone.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from bot.views import blocks as bk
from commands.abuse import AbuseNotice
from commands.approvals.expiry import KIND as EXPIRY_KIND
from commands.deadlines.delivery import Delivery
from commands.deadlines.digest import Digest, DigestDeadline
from commands.deadlines.gdpr import GdprNotice, regulator_clock
from commands.deadlines.policy import DeadlinePolicy
from commands.deadlines.stale import StaleNotice
from commands.deadlines.timefmt import format_duration, utc_text
from commands.people import TaskNotice, UnownedNotice
from storage.models import Incident


def reminder_text(delivery: Delivery, *, usergroup: str | None, oncall: str | None = None) -> str:
    """The owner and (unless a drill) the contacts' user group, then what the reminder says.
    A ping about an unowned incident mentions the on-call group (`oncall.slack_usergroup`)."""
    mentions = []
    if bk.is_user_id(delivery.owner):
        mentions.append(bk.user(delivery.owner))
    if delivery.mention_contacts:
        group = bk.subteam(usergroup)
        if group:
            mentions.append(group)
    if isinstance(delivery.notice, UnownedNotice):
        group = bk.subteam(oncall)
        if group:
            mentions.append(group)
    text = (" ".join(mentions) + " " if mentions else "") + delivery_text(delivery)
    return bk.cut(text, bk.MESSAGE_TEXT)


def delivery_text(delivery: Delivery) -> str:
    """What one reminder says, without mentions (also the first line on the timeline)."""
    notice = delivery.notice
    if isinstance(notice, GdprNotice):
        return gdpr_text(notice, delivery.incident_key or "") + late_note(delivery)
    if isinstance(notice, StaleNotice):
        return stale_text(notice, delivery.incident_key or "") + late_note(delivery)
    if isinstance(notice, Digest):
        return digest_text(notice) + late_note(delivery)
    if isinstance(notice, AbuseNotice):
        return abuse_text(notice, delivery.incident_key or "")
    if isinstance(notice, UnownedNotice):
        return unowned_text(notice, delivery.incident_key or "") + late_note(delivery)
    if isinstance(notice, TaskNotice):
        return task_text(notice, delivery.incident_key or "") + late_note(delivery)
    key = f"{delivery.incident_key}: " if delivery.incident_key else ""
    message = bk.esc(delivery.message or f"Reminder: {delivery.kind}")
    if delivery.kind == EXPIRY_KIND:
        return f"⌛ {key}{message}"
    return f"⏰ {key}{message}{late_note(delivery)}"


def late_note(delivery: Delivery) -> str:
    due = delivery.due_at
    if due is None:
        return ""
    if delivery.recovered:
        return (
            f" _(late: due {utc_text(due)}; the bot restarted while posting this, "
            "so it may repeat)_"
        )
    if not delivery.late:
        return ""
    ago = format_duration(delivery.prepared_at - due)
    return f" _(late: was due {utc_text(due)}, {ago} ago)_"


def gdpr_text(notice: GdprNotice, key: str) -> str:
    how = f"Record it with `/incident notified {key} &lt;reference&gt;` once it is sent."
    deadline = notice.deadline
    if notice.stage == "before":
        return (
            f"⏰ *GDPR*: the regulator notice for *{key}* is due in "
            f"*{format_duration(notice.remaining)}* (by {utc_text(deadline)}). {how}"
        )
    if notice.stage == "deadline":
        lead = f"🚨 *GDPR deadline reached* for *{key}*"
    else:
        lead = f"🚨 *GDPR notice OVERDUE* for *{key}*"
    return (
        f"{lead}: the regulator notice was due {utc_text(deadline)} "
        f"({format_duration(notice.remaining)} ago). {how}"
    )


def stale_text(notice: StaleNotice, key: str) -> str:
    return (
        f"💤 *{key}* has had no activity for {format_duration(notice.quiet_for)} "
        f"(since {utc_text(notice.last)}). Add a note, change its status, or resolve it."
    )


def abuse_text(notice: AbuseNotice, key: str) -> str:
    case = f" (Support case {bk.esc(notice.case_id)})" if notice.case_id else ""
    waited = f" for {format_duration(notice.waited)}" if notice.waited is not None else ""
    return (
        f"⏰ {key}: AWS abuse report {bk.esc(notice.reference)}{case} has been unanswered{waited}. "
        "AWS may restrict the account if it gets no reply: answer it, then run "
        f"/incident abuse answered {key}."
    )


def unowned_text(notice: UnownedNotice, key: str) -> str:
    return (
        f"🙋 *{key}* ({bk.esc(notice.severity)}) has had no owner for "
        f"{format_duration(notice.waited)}: press *Take it* on its card, or "
        f"`/incident assign {key} @someone`."
    )


def task_text(notice: TaskNotice, key: str) -> str:
    if notice.overdue_days:
        days = "day" if notice.overdue_days == 1 else "days"
        when = f"was due {notice.due_on.isoformat()} ({notice.overdue_days} {days} overdue)"
    else:
        when = "is due today"
    return (
        f"📋 {key} task #{notice.number} {when}: {bk.esc(notice.text)}. "
        "Mark it done on the incident's card once it is."
    )


def _deadline_line(d: DigestDeadline) -> str:
    if d.what == "approval_expires":
        text = f"{d.incident_key}: approval of {bk.esc(d.subject)} expires"
    elif d.what == "regulator_due":
        text = f"{d.incident_key}: regulator notice due"
    elif d.what == "regulator_overdue":
        text = f"{d.incident_key}: regulator notice OVERDUE"
    else:
        text = f"{d.incident_key}: {d.what} {bk.esc(d.subject)}".rstrip()
    return f"{utc_text(d.at)} · {text}"


def digest_text(digest: Digest) -> str:
    local = digest.at.astimezone(ZoneInfo(digest.timezone))
    incidents = [
        f"{i.key} [{i.severity}/{i.status}] {bk.esc(i.title)} · owner {bk.user(i.owner)}"
        for i in digest.incidents
    ]
    approvals = [
        f"{a.incident_key}: {a.kind} {bk.esc(a.target_id)} requested by "
        f"{bk.user(a.requested_by)}"
        + (f", expires {utc_text(a.expires_at)}" if a.expires_at else "")
        for a in digest.approvals
    ]
    deadlines = [_deadline_line(d) for d in digest.deadlines]
    out = [f"*Daily incident digest* · {local:%A %d %B %Y} ({digest.timezone})"]
    out.append(f"\n*Open incidents ({len(incidents)})*")
    out += [f"• {line}" for line in incidents] or ["• none"]
    out.append(f"\n*Pending approvals ({len(approvals)})*")
    out += [f"• {a}" for a in approvals] or ["• none"]
    out.append(f"\n*Deadlines in the next 24 h ({len(deadlines)})*")
    out += [f"• {d}" for d in deadlines] or ["• none"]
    return "\n".join(out)


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
            f"Once sent: `/incident notified {incident.key} &lt;reference&gt;`"
        )
    return f"⏱️ *Regulator notice due in {left}* (by {bk.when(clock.deadline)})"


def time_left_text(incident: Incident, *, now: dt.datetime, policy: DeadlinePolicy) -> str | None:
    """The clock as one plain line: time left, overdue by, or notified; None without one."""
    clock = regulator_clock(incident, now=now, policy=policy)
    if clock.state == "none" or clock.deadline is None or clock.remaining is None:
        return None
    if clock.state == "notified":
        return (
            f"Regulator notified {utc_text(incident.notified_at)}"  # type: ignore[arg-type]
            f" ({incident.notified_reference or 'no reference'})"
        )
    if clock.state == "overdue":
        return (
            f"Regulator notice OVERDUE by {format_duration(clock.remaining)} "
            f"(was due {utc_text(clock.deadline)})"
        )
    return (
        f"Regulator notice due in {format_duration(clock.remaining)} "
        f"(by {utc_text(clock.deadline)})"
    )
