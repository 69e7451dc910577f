"""The App Home tab: the viewer's open tasks, then open incidents with severity, age, pending
approvals, next deadline, owner, roles and open tasks."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bot.views import blocks as bk
from bot.views.cards import SEVERITY_ICON, STATUS_ICON, deadline_text, title_line
from bot.views.people import home_people_fields, my_tasks_blocks
from commands.overview import IncidentOverview
from storage.models import Incident, IncidentTask

# Each incident takes two blocks; keep well inside the 100-block limit of a view.
MAX_INCIDENTS = 40


@dataclass(frozen=True)
class HomePeople:
    """Roles and open tasks by incident id, and the viewer's own open tasks."""

    roles: Mapping[int, Mapping[str, str]] = field(default_factory=dict)
    tasks: Mapping[int, Sequence[IncidentTask]] = field(default_factory=dict)
    mine: Sequence[tuple[Incident, IncidentTask]] = ()


def home_view(
    views: Sequence[IncidentOverview],
    *,
    now: dt.datetime,
    people: HomePeople = HomePeople(),
    today: dt.date | None = None,
) -> dict[str, Any]:
    today = today or now.date()
    blocks: list[dict[str, Any]] = my_tasks_blocks(people.mine, today=today)
    blocks += [
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
                    *home_people_fields(
                        inc,
                        people.roles.get(inc.id, {}),
                        people.tasks.get(inc.id, ()),
                        today,
                    ),
                ],
            )
        )
        blocks.append(bk.divider())
    if len(ordered) > MAX_INCIDENTS:
        blocks.append(
            bk.context(f"{len(ordered) - MAX_INCIDENTS} more; `/incident list` shows them all.")
        )
    return {"type": "home", "blocks": blocks[: bk.VIEW_BLOCKS]}
