"""People on the incident card and the App Home: roles, follow-up tasks, "Take it".

Pure functions from rows to Block Kit and thread lines; every bit of user text is escaped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from bot.views import blocks as bk
from storage.models import ROLES, Incident, IncidentTask

TAKE_ACTION = "incident_take"
TASK_ACTION = "incident_task_toggle"
# Each task is one block on the card (a section with its Done/Reopen button); the card keeps
# well inside Slack's 50 blocks with this many.
TASKS_ON_CARD = 10
TASKS_ON_HOME = 5


def take_button(incident: Incident) -> dict[str, Any] | None:
    """ "Take it" while nobody owns a live incident."""
    if incident.owner or incident.status == "closed":
        return None
    return bk.button("Take it", TAKE_ACTION, incident.key, style="primary")


def task_value(key: str, number: int, done: bool) -> str:
    """A task button's value: what the click asks for, so a stale card cannot flip it back."""
    return f"{key} {number} {'done' if done else 'open'}"


def parse_task_value(value: str) -> tuple[str, int, bool] | None:
    parts = value.split()
    if len(parts) != 3 or not parts[1].isdigit() or parts[2] not in ("done", "open"):
        return None
    return parts[0], int(parts[1]), parts[2] == "done"


def roles_text(roles: Mapping[str, str]) -> str:
    return " · ".join(f"{role} {bk.user(roles[role])}" for role in ROLES if role in roles)


def _due(task: IncidentTask, today: dt.date) -> str:
    if task.done_at is not None:
        return f"due {task.due_on.isoformat()}"
    if task.due_on < today:
        return f"*overdue* since {task.due_on.isoformat()}"
    if task.due_on == today:
        return "due *today*"
    return f"due {task.due_on.isoformat()}"


def task_line(task: IncidentTask, today: dt.date) -> str:
    text = bk.esc_cut(task.text, 500)
    if task.done_at is not None:
        done_by = bk.user(task.done_by)
        return f"✅ ~#{task.number} {text}~ · {bk.user(task.owner)}, done by {done_by}"
    return f"☐ *#{task.number}* {text} · {bk.user(task.owner)}, {_due(task, today)}"


def ordered_tasks(tasks: Sequence[IncidentTask]) -> list[IncidentTask]:
    """Open tasks first (soonest due first), then done ones."""
    return sorted(tasks, key=lambda t: (t.done_at is not None, t.due_on, t.number))


def people_blocks(
    incident: Incident,
    roles: Mapping[str, str],
    tasks: Sequence[IncidentTask],
    *,
    today: dt.date,
) -> list[dict[str, Any]]:
    """The card's roles line and its tasks, each with its Done/Reopen button."""
    blocks: list[dict[str, Any]] = []
    if roles:
        blocks.append(bk.context(f"*Roles* {roles_text(roles)}"))
    if not tasks:
        return blocks
    open_count = sum(1 for t in tasks if t.done_at is None)
    blocks.append(bk.section(f"*Follow-up tasks* ({open_count} open of {len(tasks)})"))
    shown = ordered_tasks(tasks)[:TASKS_ON_CARD]
    for task in shown:
        done = task.done_at is not None
        button = bk.button(
            "Reopen" if done else "Done",
            TASK_ACTION,
            task_value(incident.key, task.number, not done),
            style=None if done else "primary",
        )
        blocks.append(bk.section(task_line(task, today), accessory=button))
    if len(tasks) > len(shown):
        blocks.append(bk.context(f"{len(tasks) - len(shown)} more task(s), done ones last."))
    return blocks


def home_people_fields(
    incident: Any, roles: Mapping[str, str], tasks: Sequence[IncidentTask], today: dt.date
) -> list[str]:
    """The App Home fields for one incident: owner, roles, open tasks."""
    fields = [f"*Owner* {bk.user(incident.owner)}"]
    if roles:
        fields.append(f"*Roles* {roles_text(roles)}")
    open_tasks = [t for t in tasks if t.done_at is None]
    if open_tasks:
        soonest = min(open_tasks, key=lambda t: t.due_on)
        fields.append(f"*Open tasks* {len(open_tasks)} · next {_due(soonest, today)}")
    return fields


def my_tasks_blocks(
    mine: Sequence[tuple[Any, IncidentTask]], *, today: dt.date
) -> list[dict[str, Any]]:
    """The App Home's "Your open tasks" for the person looking, with Done buttons."""
    if not mine:
        return []
    lines = [f"*{inc.key}* {task_line(task, today)}" for inc, task in mine[:20]]
    blocks = [bk.section(bk.cut(f"*Your open tasks ({len(mine)})*\n" + "\n".join(lines), 3000))]
    buttons = [
        bk.button(
            f"Done: {inc.key} #{task.number}", TASK_ACTION, task_value(inc.key, task.number, True)
        )
        for inc, task in mine[:TASKS_ON_HOME]
    ]
    blocks.append(bk.actions(buttons))
    blocks.append(bk.divider())
    return blocks


# -- thread lines and replies ------------------------------------------------------------------


def owner_line(key: str, user: str, actor: str, *, took: bool, old: str | None) -> str:
    if took:
        return f"🙋 {bk.user(user)} took {key}."
    was = f" (was {bk.user(old)})" if old else ""
    return f"🙋 {bk.user(user)} now owns {key}{was}, assigned by {bk.user(actor)}."


def role_line(key: str, role: str, user: str, actor: str, old: str | None) -> str:
    was = f" (was {bk.user(old)})" if old else ""
    return f"🎖️ {bk.user(user)} is now the {role} of {key}{was}, set by {bk.user(actor)}."


def task_added_line(key: str, task: IncidentTask, actor: str) -> str:
    return (
        f"📋 Task #{task.number} on {key} for {bk.user(task.owner)}, due "
        f"{task.due_on.isoformat()}: {bk.esc_cut(task.text, 500)} (added by {bk.user(actor)})"
    )


def task_toggled_line(key: str, task: IncidentTask, actor: str, *, done: bool) -> str:
    state = "done ✅" if done else "open again"
    text = bk.esc_cut(task.text, 500)
    return f"📋 Task #{task.number} on {key} is {state} ({bk.user(actor)}): {text}"


def task_added_reply(key: str, task: IncidentTask, remind_at: dt.datetime) -> str:
    return (
        f"Task #{task.number} added to *{key}* for {bk.user(task.owner)}, due "
        f"{task.due_on.isoformat()}; the reminder goes out {bk.when(remind_at)}."
    )


def owner_reply(key: str, user: str) -> str:
    return f"{bk.user(user)} owns *{key}* now."


def took_reply(key: str) -> str:
    return f"You own *{key}* now."


def role_reply(key: str, role: str, user: str) -> str:
    return f"{bk.user(user)} is the {bk.esc(role)} of *{key}* now."


def task_toggled_reply(key: str, number: int, *, done: bool) -> str:
    return f"Task #{number} of *{key}* is {'done' if done else 'open again'}."


# -- mistakes (`UserError` messages: the bot's sentences, their `code` meant) -------------------

BUTTON_NAMES_NO_TASK = "This button does not name a task; the incident's card lists them."


def assign_example(key: str) -> str:
    return f"/incident assign {key} @user"


def role_example(key: str) -> str:
    return f"/incident role {key} {'|'.join(ROLES)} @user"


def owner_needed(example: str) -> str:
    return f"Say who owns it: `{example}` (or `me`)."


def role_needed(example: str) -> str:
    return f"Say which role and who: `{example}`."
