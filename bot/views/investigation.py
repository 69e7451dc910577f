"""Block Kit for investigation and aftermath: blast radius, CloudTrail, clean room, abuse, wipe.

The incident card gets one extra section (`investigation_card_section`, in the card parts
bot.wiring builds) summarising what these features found or did, so every re-render of the
card keeps it. All text from AWS or users is escaped and cut.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from bot.views import blocks as bk
from commands.abuse import abuse_lines
from commands.forensics import clean_room_lines
from commands.impact import summary_lines
from commands.trail import TrailResult, iter_table
from commands.wipe import wipe_lines
from storage.facts import IMPACT, facts_of
from storage.models import Incident

NEIGHBOURS_SHOWN = 8


def _bullets(lines: list[str], limit: int = 600) -> str:
    return "\n".join(f"• {bk.esc_cut(line, limit)}" for line in lines)


def investigation_sections(facts: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The card's investigation block ([] when nothing was found or done yet): rich text, so
    the lines (AWS answers, a reporter's words, commands to copy) show exactly as they are."""
    impact = IMPACT.get(facts)
    parts: list[str | dict[str, Any]] = []
    for title, lines, limit in (
        ("Blast radius", summary_lines(impact) if impact else [], 600),
        ("Forensic clean room", clean_room_lines(facts)[:6], 300),
        ("Abuse report", abuse_lines(facts), 300),
        ("Evidence wipe", wipe_lines(facts), 300),
    ):
        if lines:
            parts += ["\n" if parts else "", bk.styled(title, bold=True)]
            parts += ["".join(f"\n• {bk.clip(line, limit)}" for line in lines)]
    return [bk.rich(*parts)] if parts else []


def investigation_card_section(incident: Incident, now: dt.datetime) -> list[dict[str, Any]]:
    return investigation_sections(facts_of(incident))


def impact_reply(key: str, impact: Mapping[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    lines = summary_lines(impact)
    blocks = [bk.section(f"*Blast radius of {bk.esc(key)}*\n" + _bullets(lines))]
    net = impact.get("network") or {}
    neighbours = net.get("neighbours") or []
    if neighbours:
        rows = []
        for n in neighbours[:NEIGHBOURS_SHOWN]:
            what = n.get("instance_id") or f"{n['type']} {n['eni']}"
            tags = ", ".join(f"{k}={v}" for k, v in (n.get("tags") or {}).items())
            desc = n.get("description") or ""
            rows.append(
                f"{bk.code(what)} via {bk.esc(', '.join(n['via']))}"
                + (f" · {bk.esc_cut(tags, 200)}" if tags else "")
                + (f" · _{bk.esc_cut(desc, 80)}_" if desc and not n.get("instance_id") else "")
            )
        more = net.get("neighbour_count", 0) - len(rows)
        if more > 0:
            rows.append(f"…and {more} more")
        blocks.append(bk.section(bk.cut("*Neighbours*\n" + "\n".join(rows), bk.SECTION_TEXT)))
    used = impact.get("role_instances") or {}
    if used.get("instances"):
        rows = []
        for i in used["instances"][:NEIGHBOURS_SHOWN]:
            tags = ", ".join(f"{k}={v}" for k, v in (i.get("tags") or {}).items())
            rows.append(
                f"{bk.code(i['id'])} {bk.esc(i.get('state') or '')}".rstrip()
                + (f" · {bk.esc_cut(tags, 200)}" if tags else "")
            )
        more = used.get("count", 0) - len(rows)
        if more > 0:
            rows.append(f"…and {more} more")
        title = f"*EC2 instances carrying the role ({bk.esc(used.get('region') or '?')})*"
        blocks.append(bk.section(bk.cut(title + "\n" + "\n".join(rows), bk.SECTION_TEXT)))
    notes = impact.get("notes") or []
    if notes:
        blocks.append(bk.context(bk.esc_cut("; ".join(notes), 1500)))
    return f"Blast radius of {key}: " + "; ".join(lines)[:300], blocks


def trail_reply(key: str, result: TrailResult) -> tuple[str, list[dict[str, Any]]]:
    """The summary and the newest events as a fixed-width table."""
    s = result.summary
    head = bk.esc(result.headline())
    facts = []
    if s["source_ips"]:
        facts.append(
            "*Source IPs*\n"
            + bk.esc_cut(", ".join(f"{ip} ({n})" for ip, n in s["source_ips"]), 1900)
        )
    if s["principals"]:
        facts.append(
            "*Principals*\n" + bk.esc_cut(", ".join(f"{p} ({n})" for p, n in s["principals"]), 1900)
        )
    if s["errors"]:
        facts.append(
            "*Errors*\n" + bk.esc_cut(", ".join(f"{e} ({n})" for e, n in s["errors"]), 1900)
        )
    blocks: list[dict[str, Any]] = [bk.section(f"*{bk.esc(key)}* · {head}")]
    if facts:
        blocks.append(bk.fields_section(facts))
    rows = list(iter_table(result))
    if rows:
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        widths = [min(w, 30) for w in widths]
        table = "\n".join(
            "  ".join(col[:w].ljust(w) for col, w in zip(r, widths, strict=True)).rstrip()
            for r in rows
        )
        # Slack still decodes entities and parses <...> inside code blocks: escape them, and
        # keep a stray fence from ending the block early (nothing else is formatted inside).
        table = bk.entities(table.replace("```", "'''"))
        blocks.append(bk.section(bk.cut(f"*Newest {len(rows)}*\n```{table}```", bk.SECTION_TEXT)))
    else:
        blocks.append(bk.section("No CloudTrail events in that window."))
    if s["events"] > len(rows):
        blocks.append(bk.context("The full list is attached as a CSV file."))
    return result.headline(), blocks


# -- the answers of /incident impact, trail, abuse, wipe and /forensics ---------------------------


def no_resource_yet(key: str) -> str:
    """A `UserError`: nothing to estimate the blast radius of."""
    return (
        f"{key} names no affected resource yet: /contain <instance-id> or a "
        "GuardDuty finding sets one."
    )


def impact_line(user_id: str) -> str:
    return f"🎯 Blast radius estimated by {bk.user(user_id)}."


def trail_file_title(key: str, resource_id: str, rows: int) -> str:
    return f"{key}: CloudTrail for {resource_id} ({rows} events)"


def trail_comment(headline: str, user_id: str) -> str:
    return f"{bk.esc(headline)} (for {bk.user(user_id)})"


def abuse_answered_line(user_id: str) -> str:
    return f"✅ Abuse report answered ({bk.user(user_id)})."


def abuse_case_answered_line() -> str:
    """The thread line when the abuse report's Support case is seen answered."""
    return "✅ The abuse report's Support case shows an answer; reminders stopped."


def abuse_answered_reply(key: str) -> str:
    return f"Marked the abuse report on *{key}* answered; reminders stopped."


def abuse_recorded_line(reference: str, user_id: str, summary: str, support: str) -> str:
    """The thread line of an abuse report joined to a live incident. `support`: what the
    Support case step did (the bot's sentence, escaped here like the reporter's words)."""
    return (
        f"📨 AWS abuse report {bk.code(reference)} recorded by "
        f"{bk.user(user_id)}: {bk.esc(summary)}. {bk.esc(support)}"
    )


def abuse_reply(
    key: str, reference: str, support: str, *, opened: bool, every: dt.timedelta
) -> str:
    verb = "Opened" if opened else "Recorded on"
    return (
        f"{verb} *{key}* for abuse report {bk.code(reference)}. {bk.esc(support)} I will remind "
        f"every {every.total_seconds() / 3600:g} h until `/incident abuse answered {key}`."
    )


def wipe_takes_only_terminate(key: str) -> str:
    return (
        f"`/incident wipe {key}` takes only `terminate` after the key (to also "
        "retire the isolated instance)."
    )


def wipe_resolve_first(key: str, status: str) -> str:
    return (
        f"{key} is {status}: resolve it first "
        f"(/incident resolve {key} <summary>), then wipe its evidence."
    )


def wipe_plan_what(key: str, items: int) -> str:
    return f"The wipe plan of *{key}*" + (f" ({items} items)" if items > 0 else "")


def wipe_list_file(key: str, request_id: int) -> dict[str, str]:
    """The filename and title of the wipe plan's full item list."""
    return {
        "filename": f"{key}-wipe-plan-{request_id}.md",
        "title": f"{key}: every item the wipe (request #{request_id}) would delete",
    }


def clean_room_closed(key: str) -> str:
    return f"{key} is closed; a clean room is for live investigations."


def clean_room_what(key: str) -> str:
    return f"The clean room of *{key}*"


def teardown_what(key: str) -> str:
    return f"The clean-room teardown of *{key}*"


def request_card_reply(what: str, request_id: int, channel_id: str | None, *, created: bool) -> str:
    """Where the approval card of a wipe, clean room or teardown request is."""
    where = bk.channel(channel_id)
    if not created:
        return f"{what} is already waiting (request #{request_id}); its card is in {where}."
    return f"{what} is posted for approval as request #{request_id} in {where}."
