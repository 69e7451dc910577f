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
    """The card's investigation blocks ([] when nothing was found or done yet)."""
    parts: list[str] = []
    impact = IMPACT.get(facts)
    if impact:
        parts.append("*Blast radius*\n" + _bullets(summary_lines(impact)))
    for title, lines in (
        ("Forensic clean room", clean_room_lines(facts)[:6]),
        ("Abuse report", abuse_lines(facts)),
        ("Evidence wipe", wipe_lines(facts)),
    ):
        if lines:
            parts.append(f"*{title}*\n" + _bullets(lines, 300))
    if not parts:
        return []
    return [bk.section(bk.cut("\n".join(parts), bk.SECTION_TEXT))]


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
                f"`{bk.esc(what)}` via {bk.esc(', '.join(n['via']))}"
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
                f"`{bk.esc(i['id'])}` {bk.esc(i.get('state') or '')}".rstrip()
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
        # Slack still decodes entities and parses <...> inside code blocks: escape, and keep
        # a stray fence from ending the block early.
        table = bk.esc(table.replace("```", "'''"))
        blocks.append(bk.section(bk.cut(f"*Newest {len(rows)}*\n```{table}```", bk.SECTION_TEXT)))
    else:
        blocks.append(bk.section("No CloudTrail events in that window."))
    if s["events"] > len(rows):
        blocks.append(bk.context("The full list is attached as a CSV file."))
    return result.headline(), blocks
