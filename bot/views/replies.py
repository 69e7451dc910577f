"""The one-sentence answers of slash commands, buttons and forms, and the thread lines they
add: what bot/listeners says, written here so listeners only ack, parse and delegate.

Two kinds of string, by where they go:
- a `UserError` message (`*_error`, `*_needed`): a sentence the bot wrote, its `code` meant;
  the listener answers it through `user_error`, which escapes the entities. User text in it
  goes through `bk.inert` here (commands/ instead passes it apart, as the error's values).
- a reply or a thread line: mrkdwn, ready to send; user text in it goes through `bk.esc`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from bot.views import blocks as bk
from commands.deadlines.timefmt import format_duration
from commands.errors import UserError

BUSY = "The bot is busy right now; try again in a minute."


# -- the slash-command plumbing ----------------------------------------------------------


def user_error(error: UserError) -> str:
    """A `UserError` as its answer: the bot's sentence, entities escaped, its markup kept;
    the values it quotes from outside (what the user typed) inert."""
    return "".join(bk.esc(text) if outside else bk.authored(text) for text, outside in error.parts)


def failure_text(label: str, cause: str, *, incident_key: str | None, recorded: bool) -> str:
    """What the user is told when a command failed: only what is true (`recorded`: the
    timeline write succeeded). `cause` is already escaped (`failure_cause`)."""
    where = ""
    if incident_key:
        where = (
            f" It is recorded on {incident_key}'s timeline."
            if recorded
            else f" It could not be recorded on {incident_key}'s timeline either."
        )
    return f"{bk.code(label)} failed: {cause}.{where} Try again, or check the bot's logs."


DATABASE_FAILED = "the database did not accept the change (it may be busy, locked or full)"


def failure_cause(exc: BaseException) -> str:
    """Any other error as `Type: message`, escaped and cut."""
    return f"{bk.esc(type(exc).__name__)}: {bk.esc_cut(exc, 500)}"


def interrupted_text(label: str) -> str:
    return (
        f"{bk.code(label)} was interrupted by a restart before it finished; "
        "check the incident's status and run it again if needed."
    )


def help_text(command: str, subcommands: list[tuple[str, str]]) -> str:
    """`/incident` — what you can do: one line per (usage, summary)."""
    lines = [f"*{bk.esc(command)}* — what you can do:"]
    lines += [f"• {bk.code(usage)} {bk.authored(summary)}" for usage, summary in subcommands]
    return "\n".join(lines)


def usage_line(usage: str, summary: str) -> str:
    return f"{bk.code(usage)} {bk.authored(summary)}"


def unknown_subcommand(command: str, word: str, help_text: str) -> str:
    intro = f"There is no {bk.code(f'{command} {word}', 60)}. " if word else ""
    return intro + help_text


def text_reply(text: str) -> tuple[str, list[dict[str, Any]]]:
    """(text, blocks) of a reply that is one mrkdwn section."""
    return text, [bk.section(text)]


# -- /incident: finding the incident, open, status ---------------------------------------


def which_incident_error(example: str) -> str:
    return f"Say which incident, e.g. `{example}` (/incident list shows the open ones)."


TITLE_NEEDED = "Give the incident a title: `/incident open <what happened>`."
INCIDENT_GONE = "That incident is gone; /incident list shows the open ones."


def opened_reply(key: str, channel_id: str | None, *, where: str | None = None) -> str:
    """`where`: "its own channel" or "the incident channel"; None when the card was posted
    but a line after it failed."""
    if where is None:
        return f"Opened *{key}*; its card is in {bk.channel(channel_id)}."
    return f"Opened *{key}*; its card is in {where}: {bk.channel(channel_id)}."


def opened_where(created_channel: bool) -> str:
    return "its own channel" if created_channel else "the incident channel"


def thread_opener(key: str, opener: str) -> str:
    """The first line of an incident's thread."""
    return (
        f"Updates on {key} land in this thread. Opened by {bk.user(opener)}. "
        f"`/incident note {key} &lt;text&gt;` adds to the timeline."
    )


def channel_pointer(key: str, opener: str, title: str, channel_id: str) -> str:
    """The line in the incident channel pointing at an incident's own channel."""
    return f"{key} opened by {bk.user(opener)}: {bk.esc(title)} → {bk.channel(channel_id)}"


# -- timeline export ---------------------------------------------------------------------


def timeline_file(key: str, count: int, content: str) -> dict[str, Any]:
    return {
        "filename": f"{key}-timeline.md",
        "title": f"{key} timeline ({count} events)",
        "content": content,
    }


def timeline_comment(key: str, count: int, user_id: str) -> str:
    return f"Full timeline of {key} ({count} events), for {bk.user(user_id)}."


# -- notes, severity, status -------------------------------------------------------------


def note_text_needed(key: str) -> str:
    return f"Add the note's text: `/incident note {key} <text>`."


def note_line(user_id: str, text: str) -> str:
    return f"📝 {bk.user(user_id)}: {bk.esc(text)}"


def noted_reply(key: str) -> str:
    return f"Noted on *{key}*."


def severity_needed(key: str, severities: tuple[str, ...] | list[str]) -> str:
    return f"Say the new severity: `/incident severity {key} {'|'.join(severities)}`."


def severity_unchanged(key: str, level: str) -> str:
    return f"*{key}* is already {bk.esc(level)}."


def severity_line(old: str, level: str, user_id: str) -> str:
    return f"Severity {bk.esc(old)} → *{bk.esc(level)}* by {bk.user(user_id)}"


def severity_reply(key: str, level: str) -> str:
    return f"*{key}* severity is now {bk.esc(level)}."


def clock_running_reply(key: str, due: Any) -> str:
    return f"The regulator clock of *{key}* is already running (notice due {_due(due)})."


def clock_started_line(user_id: str, due: Any) -> str:
    return (
        f"⏱️ Personal data involved ({bk.user(user_id)}): "
        f"regulator clock started, notice due {_due(due)}."
    )


def clock_started_reply(key: str, due: Any) -> str:
    return f"Regulator clock started for *{key}*: notice due {_due(due)}."


def _due(due: Any) -> str:
    """A Deadline's due time as a Slack date, or n/a."""
    return bk.when(due.due_at) if due else "n/a"


def force_reason_needed(key: str) -> str:
    return f"Say why it closes with open tasks: `/incident close {key} <summary> --force <reason>`."


def summary_needed(verb: str, key: str) -> str:
    return f"Add a one-line summary: `/incident {verb} {key} <summary>`."


def status_refused(key: str, current: str, wanted: str) -> str:
    """`/incident resolve|close` on an incident that cannot move there."""
    if current == "closed":
        return f"{key} is closed; open a new incident instead."
    if current == wanted:
        return f"{key} is already {wanted}."
    return cannot_become(key, current, wanted)


def cannot_become(key: str, current: str, wanted: str) -> str:
    return f"{key} is {current} and cannot become {wanted}."


def status_line(
    old: str,
    status: str,
    user_id: str,
    summary: str,
    *,
    open_tasks: list[int] = (),  # type: ignore[assignment]
    force_reason: str | None = None,
) -> str:
    line = f"Status {bk.esc(old)} → *{bk.esc(status)}* by {bk.user(user_id)}: {bk.esc(summary)}"
    if open_tasks:
        listed = ", ".join(f"#{n}" for n in open_tasks)
        line += f"\nClosed with open follow-up task(s) {listed}: {bk.esc(force_reason or '')}"
    return line


def status_reply(key: str, status: str) -> str:
    return f"*{key}* is now {bk.esc(status)}."


# -- buttons and forms on the card ------------------------------------------------------


INSTEAD = {  # what to type when a card button names no incident, by what it does
    "timeline": "/incident timeline INC-N",
    "note": "/incident note INC-N and the note",
    "resolved": "/incident resolve INC-N and a summary",
    "closed": "/incident close INC-N and a summary",
    "take": "/incident assign INC-N me",
    "task": "the incident's card",
}


def button_names_no_incident(action: str) -> str:
    return f"This button does not name an incident; use {INSTEAD[action]} instead."


CARD_NAMES_NO_INCIDENT = "This card no longer names its incident; use /incident severity INC-N."
NOTE_FORM_NAMES_NO_INCIDENT = (
    "This form does not name an incident; use /incident note INC-N and the note."
)
NOTE_EMPTY = "Write the note first."
SUMMARY_EMPTY = "Add a one-line summary."


def note_modal(callback_id: str, key: str, metadata: str) -> dict[str, Any]:
    return bk.modal(
        callback_id,
        f"Note on {key}",
        [bk.text_input("note", "What happened, what you found or did", max_length=3000)],
        submit="Add note",
        private_metadata=metadata,
    )


def status_modal(
    callback_id: str, key: str, verb: str, status: str, metadata: str
) -> dict[str, Any]:
    return bk.modal(
        callback_id,
        f"{verb} {key}",
        [bk.text_input("summary", f"Summary: why is {key} {status}?", max_length=3000)],
        submit=verb,
        private_metadata=metadata,
    )


# -- the regulator notice ----------------------------------------------------------------


def notice_reference_needed(key: str) -> str:
    return f"Add the notice's reference: `/incident notified {key} <reference>`."


def no_regulator_clock(key: str) -> str:
    return f"{key} has no regulator clock: mark it with `/incident personal-data {key}` first."


def notice_already_recorded(key: str, reference: str | None = None) -> str:
    """A `UserError` with the reference (inert), or the reply without it."""
    if reference is None:
        return f"{key} already recorded the regulator notice."
    return (
        f"{key} already recorded the regulator notice ({bk.inert(reference)}); "
        "add corrections with `/incident note`."
    )


def notice_timing(remaining: dt.timedelta | None) -> str:
    """How far from the deadline the notice was sent ("" without a clock)."""
    if remaining is None:
        return ""
    side = "before" if remaining.total_seconds() >= 0 else "after"
    return f"{format_duration(remaining)} {side} the deadline"


def notified_line(reference: str, user_id: str, timing: str) -> str:
    return (
        f"📨 Regulator notified ({bk.esc_cut(reference, 300)}) by "
        f"{bk.user(user_id)}, {timing}. GDPR reminders stopped."
    )


def notified_reply(key: str, timing: str) -> str:
    return f"Recorded the regulator notice for *{key}* ({timing}); alerts stopped."


# -- drills ------------------------------------------------------------------------------


def drill_starting(name: str, title: str) -> str:
    return f"Starting DRILL {bk.esc(name)}: {bk.esc(title)}…"


def drill_started(name: str, key: str | None, sample: str, *, real: bool) -> str:
    """`sample`: what asking GuardDuty for a sample finding did (the bot's own sentence)."""
    mode = "for real" if real else "as a dry run"
    return (
        f"DRILL {bk.esc(name)} started: {key or 'no incident opened'}. {bk.authored(sample)} "
        f"Containment will run {mode}; no contacts are paged."
    )
