"""The App Home tab: open incidents with severity, age, pending approvals and next deadline."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from bot.views import blocks as bk
from bot.views.cards import SEVERITY_ICON, STATUS_ICON, deadline_text, title_line
from commands.overview import IncidentOverview

# Each incident takes two blocks; keep well inside the 100-block limit of a view.
MAX_INCIDENTS = 40


def home_view(views: Sequence[IncidentOverview], *, now: dt.datetime) -> dict[str, Any]:
    blocks: list[dict[str, Any]] = [
        bk.header(f"Open incidents ({len(views)})"),
        bk.context(f"Updated {bk.when(now)} · `/incident help` lists the commands"),
        bk.divider(),
    ]
    if not views:
        blocks.append(
            bk.section("Nothing open. `/incident open &lt;title&gt;` starts an incident.")
        )
    # Most urgent first: critical before low, then the soonest deadline, then the oldest.
    rank = {"critical": 0, "high": 1, "medium": 2, "low": 3}
    far = dt.datetime.max.replace(tzinfo=dt.UTC)
    ordered = sorted(
        views,
        key=lambda v: (
            rank.get(v.incident.severity, 9),
            v.next_deadline.due_at if v.next_deadline else far,
            v.incident.created_at,
        ),
    )
    for view in ordered[:MAX_INCIDENTS]:
        inc = view.incident
        blocks.append(
            bk.section(
                f"{STATUS_ICON.get(inc.status, '')} {title_line(inc)}",
                fields=[
                    f"*Severity* {SEVERITY_ICON.get(inc.severity, '')} {bk.esc(inc.severity)}",
                    f"*Age* {bk.age(inc.created_at, now)}",
                    f"*Pending approvals* {view.pending_approvals}",
                    f"*Next deadline* {deadline_text(view.next_deadline, now)}",
                ],
            )
        )
        blocks.append(bk.divider())
    if len(ordered) > MAX_INCIDENTS:
        blocks.append(
            bk.context(f"{len(ordered) - MAX_INCIDENTS} more; `/incident list` shows them all.")
        )
    return {"type": "home", "blocks": blocks[: bk.VIEW_BLOCKS]}
