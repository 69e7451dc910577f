"""`/incident` and its core subcommands.

bot.wiring builds the command from this module's `SUBCOMMANDS` and other features' tables;
see bot/listeners/slash.py for the contract. Handlers here
resolve and validate inline (reads only, so the answer comes back in the ack) and `defer`
whatever writes or calls Slack.
"""

from __future__ import annotations

import logging
from io import StringIO

from bot.contacts import notify_opened
from bot.listeners.incident_posts import post_new_incident, refresh_incident
from bot.listeners.slash import (
    Invocation,
    Reply,
    Subcommand,
    cause_of,
    record_on_timeline,
    spec,
)
from bot.views import replies
from bot.views.card_recovery import card_not_posted_reply, not_shown_text
from bot.views.cards import list_reply, status_reply, timeline_reply
from bot.writeback import write_back_on_close
from commands import incidents as svc
from commands.deadlines import gdpr
from commands.errors import UserError
from commands.exports import export_timeline
from commands.overview import (
    live_overviews,
    overview_by_channel,
    overview_by_number,
    regulator_deadline,
)
from storage.models import SEVERITIES, Incident
from storage.timeline import count_events, latest_events

log = logging.getLogger(__name__)

TIMELINE_SHOWN = 20


def take_incident(inv: Invocation, session, *, example: str) -> tuple[Incident, str]:
    """The incident named first in `inv.args`, or implied by the channel; plus the rest.

    Sets `inv.incident_key` so any later failure is recorded on that incident's timeline.
    """
    first, _, rest = inv.args.partition(" ")
    if svc.looks_like_key(first):
        found = svc.get_incident(session=session, key=first)
        rest = rest.strip()
    else:
        found = svc.find_by_channel(session=session, channel_id=inv.channel_id)
        rest = inv.args
        if found is None:
            raise UserError(replies.which_incident_error(example))
    inv.incident_key = found.key
    return found, rest


def _read(inv: Invocation, *, example: str) -> tuple[Incident, str]:
    with inv.runtime.database.read_session() as session:
        return take_incident(inv, session, example=example)


# -- open --------------------------------------------------------------------------------


def open_cmd(inv: Invocation) -> Reply | None:
    title = inv.args.strip()
    if not title:
        raise UserError(replies.TITLE_NEEDED)

    def work() -> Reply:
        runtime = inv.runtime
        with runtime.database.session() as session:
            opened = svc.open_incident(
                session=session,
                title=title,
                created_by=inv.user_id,
                channel_id=None,
                # Where to post the card if Slack fails now (bot/card_sweep.py reads it).
                details={"opened_in": inv.channel_id},
            )
            key = opened.key
        inv.incident_key = key
        try:
            posted = post_new_incident(
                runtime, key, opener=inv.user_id, fallback_channel=inv.channel_id
            )
        except Exception as exc:
            # The incident is saved: "try again" would open a second one. Say what is true.
            log.warning("the card of %s could not be posted", key, exc_info=True)
            notify_opened(runtime, key)
            with runtime.database.read_session() as session:
                found = svc.get_incident(session=session, key=key)
                posted_at = found.channel_id if found.card_ts else None
            if posted_at:  # the card is there; a line after it failed
                return Reply(replies.opened_reply(key, posted_at))
            recorded = record_on_timeline(
                inv,
                kind="slack.card_failed",
                summary=f"The card of {key} could not be posted: {type(exc).__name__}: {exc}",
                details={"error": type(exc).__name__},
            )
            return Reply(card_not_posted_reply(key, cause_of(exc), recorded=recorded))
        notify_opened(runtime, key)  # only at high or critical
        where = replies.opened_where(posted.created_channel)
        return Reply(replies.opened_reply(key, posted.channel_id, where=where))

    inv.defer("open incident", work)
    return None


# -- reads -------------------------------------------------------------------------------


def list_cmd(inv: Invocation) -> Reply:
    runtime = inv.runtime
    views = live_overviews(
        database=runtime.database, gdpr_hours=runtime.config.deadlines.gdpr_hours
    )
    text, blocks = list_reply(views, now=runtime.now())
    return Reply(text, blocks)


def status_cmd(inv: Invocation) -> Reply:
    # The busiest command: one prepared statement, answered in the ack (see bench/ack.py).
    runtime = inv.runtime
    gdpr_hours = runtime.config.deadlines.gdpr_hours
    first = inv.args.split(" ", 1)[0]
    number = svc.parse_key(first) if first else None
    database = runtime.database
    if number is not None:
        view = overview_by_number(database=database, number=number, gdpr_hours=gdpr_hours)
    else:
        view = overview_by_channel(
            database=database, channel_id=inv.channel_id, gdpr_hours=gdpr_hours
        )
    if view is None:
        # Let the canonical lookup phrase the answer (unknown key, or which incident?).
        _read(inv, example="/incident status INC-42")
        raise UserError(replies.INCIDENT_GONE)
    inv.incident_key = view.incident.key
    text, blocks = status_reply(view, now=runtime.now())
    return Reply(text, blocks)


def timeline_cmd(inv: Invocation) -> Reply:
    runtime = inv.runtime
    with runtime.database.read_session() as session:
        found, _ = take_incident(inv, session, example="/incident timeline INC-42")
        events = latest_events(session=session, incident=found, limit=TIMELINE_SHOWN)
        total = count_events(session=session, incident=found)
        text, blocks = timeline_reply(found, events, total)
        thread_ts = found.thread_ts if found.channel_id == inv.channel_id else None
    if total > len(events):
        key = found.key
        inv.defer("upload timeline", lambda: upload_timeline(inv, key, thread_ts))
    return Reply(text, blocks)


def upload_timeline(inv: Invocation, key: str, thread_ts: str | None) -> None:
    out = StringIO()
    with inv.runtime.database.read_session() as session:
        found = svc.get_incident(session=session, key=key)
        count = export_timeline(session=session, incident=found, fmt="md", out=out)
    inv.runtime.slack.upload(
        inv.channel_id,
        thread_ts,
        [replies.timeline_file(key, count, out.getvalue())],
        initial_comment=replies.timeline_comment(key, count, inv.user_id),
    )


# -- writes ------------------------------------------------------------------------------


def note_cmd(inv: Invocation) -> Reply | None:
    found, text = _read(inv, example="/incident note INC-42 <text>")
    if not text.strip():
        raise UserError(replies.note_text_needed(found.key))
    key = found.key

    def work() -> Reply:
        with inv.runtime.database.session() as session:
            target = svc.get_incident(session=session, key=key)
            svc.add_note(session=session, incident=target, actor=inv.user_id, text=text)
        missed = refresh_incident(inv.runtime, key, line=replies.note_line(inv.user_id, text))
        return Reply(replies.noted_reply(key) + not_shown_text(missed))

    inv.defer("add note", work)
    return None


def severity_cmd(inv: Invocation) -> Reply | None:
    found, rest = _read(inv, example="/incident severity INC-42 high")
    level = rest.strip().lower()
    if level not in SEVERITIES:
        raise UserError(replies.severity_needed(found.key, SEVERITIES))
    inv.defer("set severity", lambda: change_severity(inv, found.key, level))
    return None


def change_severity(inv: Invocation, key: str, level: str) -> Reply:
    with inv.runtime.database.session() as session:
        target = svc.get_incident(session=session, key=key)
        old = target.severity
        svc.set_severity(session=session, incident=target, actor=inv.user_id, severity=level)
    if old == level:
        return Reply(replies.severity_unchanged(key, level))
    missed = refresh_incident(inv.runtime, key, line=replies.severity_line(old, level, inv.user_id))
    notify_opened(inv.runtime, key)  # raised to high or critical: contacts hear of it once
    return Reply(replies.severity_reply(key, level) + not_shown_text(missed))


def personal_data_cmd(inv: Invocation) -> Reply | None:
    found, _ = _read(inv, example="/incident personal-data INC-42")
    key = found.key

    def work() -> Reply:
        runtime = inv.runtime
        with runtime.database.session() as session:
            target = svc.get_incident(session=session, key=key)
            started = gdpr.start_clock(
                session=session,
                incident=target,
                actor=inv.user_id,
                policy=runtime.deadline_policy,
                reason="marked in Slack",
            )
            due = regulator_deadline(target, gdpr_hours=runtime.config.deadlines.gdpr_hours)
        if not started:
            return Reply(replies.clock_running_reply(key, due))
        missed = refresh_incident(runtime, key, line=replies.clock_started_line(inv.user_id, due))
        return Reply(replies.clock_started_reply(key, due) + not_shown_text(missed))

    inv.defer("start regulator clock", work)
    return None


FORCE = "--force"


def split_force(text: str) -> tuple[str, str | None]:
    """`<summary> --force <reason>` -> (summary, reason); no flag: (text, None). A bare
    `--force <reason>` closes with the reason as its summary."""
    words = text.split()
    if FORCE not in words:
        return text.strip(), None
    at = words.index(FORCE)
    reason = " ".join(words[at + 1 :])
    summary = " ".join(words[:at]) or reason
    return summary, reason


def _status_change(inv: Invocation, *, status: str, verb: str) -> Reply | None:
    with inv.runtime.database.read_session() as session:
        found, rest = take_incident(inv, session, example=f"/incident {verb} INC-42 <summary>")
        summary, reason = split_force(rest) if status == "closed" else (rest, None)
        if reason is not None and not reason:
            raise UserError(replies.force_reason_needed(found.key))
        if not summary.strip():
            raise UserError(replies.summary_needed(verb, found.key))
        if status not in svc.TRANSITIONS.get(found.status, ()):
            raise UserError(replies.status_refused(found.key, found.status, status))
        if status == "closed" and reason is None:
            svc.refuse_open_tasks(session=session, incident=found)  # answered in the ack
    key = found.key
    inv.defer(f"{verb} incident", lambda: change_status(inv, key, status, summary, reason))
    return None


def change_status(
    inv: Invocation, key: str, status: str, summary: str, force_reason: str | None = None
) -> Reply:
    with inv.runtime.database.session() as session:
        target = svc.get_incident(session=session, key=key)
        old = target.status
        left: list[int] = []
        if status == "resolved":
            svc.resolve_incident(
                session=session, incident=target, actor=inv.user_id, summary=summary
            )
        else:
            svc.close_incident(
                session=session,
                incident=target,
                actor=inv.user_id,
                summary=summary,
                force_reason=force_reason,
            )
            left = svc.open_task_numbers(session=session, incident=target)
    line = replies.status_line(
        old,
        status,
        inv.user_id,
        summary,
        open_tasks=left if status == "closed" else [],
        force_reason=force_reason,
    )
    missed = refresh_incident(inv.runtime, key, line=line)
    if status == "closed":  # the findings follow: archived / resolved where configured
        missed += write_back_on_close(inv.runtime, key, summary)
    return Reply(replies.status_reply(key, status) + not_shown_text(missed))


def resolve_cmd(inv: Invocation) -> Reply | None:
    return _status_change(inv, status="resolved", verb="resolve")


def close_cmd(inv: Invocation) -> Reply | None:
    return _status_change(inv, status="closed", verb="close")


# -- help --------------------------------------------------------------------------------


def help_cmd(inv: Invocation) -> Reply:
    word = inv.args.split(" ", 1)[0].lower() if inv.args else ""
    assert inv.slash is not None  # help is only ever run as a command
    known = inv.slash.get(word) if word else None
    if known is not None:  # /incident help note
        return Reply(*replies.text_reply(replies.usage_line(known.usage, known.summary)))
    text = replies.unknown_subcommand(inv.slash.command, word, inv.slash.help_text())
    return Reply(*replies.text_reply(text))


# `/incident` subcommands of this module, in the order `/incident help` lists them.
SUBCOMMANDS: tuple[Subcommand, ...] = (
    spec(
        "open",
        usage="/incident open <title>",
        summary="Open an incident and post its card.",
        handler=open_cmd,
    ),
    spec(
        "list",
        usage="/incident list",
        summary="The open incidents.",
        handler=list_cmd,
    ),
    spec(
        "status",
        usage="/incident status [INC-N]",
        summary="Where an incident stands.",
        handler=status_cmd,
    ),
    spec(
        "timeline",
        usage="/incident timeline [INC-N]",
        summary="The latest 20 events (the full export as a file when there are more).",
        handler=timeline_cmd,
    ),
    spec(
        "note",
        usage="/incident note [INC-N] <text>",
        summary="Add a note to the timeline.",
        handler=note_cmd,
    ),
    spec(
        "severity",
        usage="/incident severity [INC-N] low|medium|high|critical",
        summary="Change the severity.",
        handler=severity_cmd,
    ),
    spec(
        "personal-data",
        usage="/incident personal-data [INC-N]",
        summary="Personal data is involved: start the regulator clock.",
        handler=personal_data_cmd,
    ),
    spec(
        "resolve",
        usage="/incident resolve [INC-N] <summary>",
        summary="Mark resolved, with a summary.",
        handler=resolve_cmd,
    ),
    spec(
        "close",
        usage="/incident close [INC-N] <summary> [--force <reason>]",
        summary="Close, with a summary; open follow-up tasks need --force and a reason.",
        handler=close_cmd,
    ),
    spec("help", usage="/incident help", summary="This list.", handler=help_cmd),
)
