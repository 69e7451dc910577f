"""The incident card and the other incident renderings (status, list, timeline).

Pure functions from models to Block Kit; every bit of user text is escaped and cut.
Other features add sections and buttons to the card through `CardParts`, which bot.wiring
builds (a button is `def f(incident) -> dict | None`, a section
`def f(incident, now) -> list[dict]`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bot.views import blocks as bk
from bot.views.reminders import clock_line
from bot.views.resources import resource_label
from commands.overview import Deadline, IncidentOverview, IncidentRow
from storage.models import Incident, TimelineEvent

SEVERITY_ICON = {"low": "🟢", "medium": "🟡", "high": "🟠", "critical": "🔴"}
STATUS_ICON = {"open": "🚨", "contained": "🛡️", "resolved": "✅", "closed": "🔒"}
SEVERITY_OPTIONS = ("low", "medium", "high", "critical")

ButtonFactory = Callable[[Incident], "dict[str, Any] | None"]  # None: no button here
SectionFactory = Callable[[Incident, dt.datetime], "list[dict[str, Any]]"]  # []: nothing


def note_button(incident: Incident) -> dict[str, Any]:
    return bk.button("Add note", "incident_note", incident.key)


def timeline_button(incident: Incident) -> dict[str, Any]:
    return bk.button("Timeline", "incident_timeline", incident.key)


def resolve_button(incident: Incident) -> dict[str, Any] | None:
    if incident.status == "resolved":
        return None
    return bk.button("Resolve…", "incident_resolve", incident.key, style="primary")


def close_button(incident: Incident) -> dict[str, Any]:
    return bk.button("Close…", "incident_close", incident.key, style="danger")


CORE_BUTTONS: tuple[ButtonFactory, ...] = (
    note_button,
    timeline_button,
    resolve_button,
    close_button,
)


@dataclass(frozen=True)
class CardParts:
    """What features add to the incident card, in order: blocks after its facts (GuardDuty's
    finding, the regulator clock, investigation results) and buttons. bot.wiring builds the
    app's; rendering without it shows the core card."""

    sections: tuple[SectionFactory, ...] = ()
    buttons: tuple[ButtonFactory, ...] = CORE_BUTTONS


def severity_select(incident: Incident) -> dict[str, Any]:
    def option(sev: str) -> dict[str, Any]:
        return {"text": bk.plain(f"{SEVERITY_ICON[sev]} {sev}", bk.OPTION_TEXT), "value": sev}

    return {
        "type": "static_select",
        "action_id": "incident_severity",
        "placeholder": bk.plain("Severity", bk.OPTION_TEXT),
        "initial_option": option(incident.severity),
        "options": [option(s) for s in SEVERITY_OPTIONS],
    }


def title_line(incident: Incident) -> str:
    """`INC-4 · <escaped title>` for mrkdwn."""
    drill = "[DRILL] " if incident.is_drill else ""
    return f"*{incident.key}* · {drill}{bk.esc(incident.title)}"


def title_block(incident: Incident) -> dict[str, Any]:
    """The key in bold, then the title exactly as typed (rich text: nothing in it is parsed)."""
    drill = "[DRILL] " if incident.is_drill else ""
    return bk.rich(bk.styled(incident.key, bold=True), f" · {drill}{incident.title}")


def resolution_block(incident: Incident) -> dict[str, Any]:
    return bk.rich(bk.styled("Resolution", bold=True), f"\n{incident.resolution}")


def deadline_text(deadline: Deadline | None, now: dt.datetime) -> str:
    if deadline is None:
        return "none"
    if deadline.due_at <= now:
        return f"{deadline.what} *overdue* by {bk.age(deadline.due_at, now)}"
    return f"{deadline.what} in {bk.age(now, deadline.due_at)}"


def card_fields(view: IncidentOverview, now: dt.datetime) -> list[str]:
    incident = view.incident
    fields = [
        f"*Severity*\n{SEVERITY_ICON.get(incident.severity, '')} {bk.esc(incident.severity)}",
        f"*Status*\n{STATUS_ICON.get(incident.status, '')} {bk.esc(incident.status)}",
        f"*Owner*\n{bk.user(incident.owner)}",
        f"*Age*\n{bk.age(incident.created_at, now)} (opened {bk.when(incident.created_at)})",
    ]
    if incident.resource_id:
        label = bk.esc(resource_label(incident.resource_type))
        fields.append(f"*{label}*\n{bk.code(incident.resource_id, 200)}")
    if view.pending_approvals:
        fields.append(f"*Pending approvals*\n{view.pending_approvals}")
    if view.next_deadline:
        fields.append(f"*Next deadline*\n{deadline_text(view.next_deadline, now)}")
    return fields


def incident_card(
    view: IncidentOverview, *, now: dt.datetime, parts: CardParts = CardParts()
) -> dict[str, Any]:
    """chat.postMessage / chat.update kwargs for the incident card."""
    incident = view.incident
    icon = STATUS_ICON.get(incident.status, "")
    blocks: list[dict[str, Any]] = [
        bk.header(
            f"{icon} {incident.key} · {'DRILL · ' if incident.is_drill else ''}{incident.title}"
        ),
        title_block(incident),
        bk.fields_section(card_fields(view, now)),
    ]
    clock = clock_line(incident, now=now, gdpr_hours=view.gdpr_hours)
    if clock:
        blocks.append(bk.context(clock))
    for section in parts.sections:
        blocks.extend(section(incident, now))
    if incident.resolution:
        blocks.append(resolution_block(incident))
    if incident.status != "closed":
        buttons = [b for make in parts.buttons if (b := make(incident)) is not None]
        blocks.append(bk.actions([severity_select(incident), *buttons], block_id="incident_card"))
    blocks.append(
        bk.context(
            f"Opened by {bk.user(incident.created_by)} · `/incident status {incident.key}` · "
            "updates in the thread"
        )
    )
    text = f"{incident.key} [{incident.severity}/{incident.status}] {bk.esc(incident.title)}"
    return bk.message(text, blocks)


# Status answers already rendered, by (overview, the times they show). An overview over a
# read-only row (IncidentRow) stays equal while the database is unchanged, and the times are
# as shown (to the second, or minute), so in a storm a repeated `/incident status` reuses
# the blocks rather than building them again. Overviews of ORM objects, which can change
# under the same identity, are never kept.
_STATUS_SHOWN: dict[tuple[Any, ...], tuple[str, list[dict[str, Any]]]] = {}
_STATUS_SHOWN_LIMIT = 512


def status_reply(view: IncidentOverview, *, now: dt.datetime) -> tuple[str, list[dict[str, Any]]]:
    """The answer to `/incident status` (callers must not change the blocks: they may be
    shared with the next answer)."""
    if not isinstance(view.incident, IncidentRow):
        return _status_reply(view, now)
    times = (
        bk.age(view.incident.created_at, now),
        deadline_text(view.next_deadline, now) if view.next_deadline else None,
    )
    key = (view, *times)
    found = _STATUS_SHOWN.get(key)
    if found is None:
        found = _status_reply(view, now)
        if len(_STATUS_SHOWN) >= _STATUS_SHOWN_LIMIT:
            _STATUS_SHOWN.clear()
        _STATUS_SHOWN[key] = found
    return found


def _status_reply(view: IncidentOverview, now: dt.datetime) -> tuple[str, list[dict[str, Any]]]:
    incident = view.incident
    blocks = [title_block(incident), bk.fields_section(card_fields(view, now))]
    if incident.resolution:
        blocks.append(resolution_block(incident))
    if incident.personal_data and incident.notified_at:
        blocks.append(
            bk.context(
                f"Regulator notified {bk.when(incident.notified_at)}: "
                f"{bk.esc(incident.notified_reference or '')}"
            )
        )
    return f"{incident.key}: {incident.status}, {incident.severity}", blocks


def list_reply(
    views: Sequence[IncidentOverview], *, now: dt.datetime, limit: int = 40
) -> tuple[str, list[dict[str, Any]]]:
    if not views:
        return "No open incidents.", [
            bk.section("No open incidents. `/incident open &lt;title&gt;` starts one.")
        ]
    lines = []
    for view in views[:limit]:
        inc = view.incident
        extra = []
        if view.pending_approvals:
            extra.append(f"{view.pending_approvals} pending approval(s)")
        if view.next_deadline:
            extra.append(deadline_text(view.next_deadline, now))
        tail = f" · {' · '.join(extra)}" if extra else ""
        lines.append(
            f"{SEVERITY_ICON.get(inc.severity, '')} {title_line(inc)} · {bk.esc(inc.status)} · "
            f"{bk.age(inc.created_at, now)}{tail}"
        )
    blocks = [bk.section(f"*Open incidents ({len(views)})*")]
    blocks += _chunked_sections(lines)
    if len(views) > limit:
        blocks.append(
            bk.context(f"{len(views) - limit} more not shown; the App Home tab lists all.")
        )
    return f"{len(views)} open incident(s)", blocks


def timeline_reply(
    incident: Incident, events: Sequence[TimelineEvent], total: int
) -> tuple[str, list[dict[str, Any]]]:
    """The latest events, oldest of them first, with a note when the full export follows."""
    lines = [
        f"`#{e.seq}` {bk.utc(e.occurred_at)} · {bk.user(e.actor)} · _{bk.esc(e.kind)}_\n"
        f"{bk.esc_cut(e.summary, 600)}"
        for e in sorted(events, key=lambda e: e.seq)
    ]
    blocks = [bk.section(f"*Timeline of {title_line(incident)}*")]
    blocks += _chunked_sections(lines) if lines else [bk.section("No events yet.")]
    if total > len(events):
        blocks.append(
            bk.context(
                f"Showing the latest {len(events)} of {total} events; "
                "the full Markdown export is being uploaded here as a file."
            )
        )
    return f"Timeline of {incident.key} ({total} events)", blocks


def _chunked_sections(lines: list[str]) -> list[dict[str, Any]]:
    """Pack lines into as few sections as fit Slack's 3,000-character section limit."""
    sections: list[dict[str, Any]] = []
    chunk = ""
    for line in lines:
        line = bk.cut(line, bk.SECTION_TEXT)
        if chunk and len(chunk) + 1 + len(line) > bk.SECTION_TEXT:
            sections.append(bk.section(chunk))
            chunk = ""
        chunk = f"{chunk}\n{line}" if chunk else line
    if chunk:
        sections.append(bk.section(chunk))
    return sections
