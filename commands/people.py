"""People on an incident: its owner, its roles (commander, scribe, comms), its follow-up tasks,
and the pings that go out while nobody owns a GuardDuty incident.

Every change appends one timeline event in the caller's transaction. Reminders go through
the reminder queue (commands/deadlines): `unowned` pings the on-call group until someone
takes the incident; `task` reminds a task's owner on its due day, then daily while it is
open. Both handlers decide from the rows at delivery time, so a reminder that no longer
applies (taken, done, closed) is cancelled instead of posted.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from commands.deadlines.delivery import Delivery
from commands.deadlines.policy import DeadlinePolicy
from commands.deadlines.queue import cancel_reminders, schedule_reminder
from commands.errors import UserError
from storage.db import clock_of
from storage.models import ROLES, Incident, IncidentRole, IncidentTask, Reminder
from storage.timeline import append_event

UNOWNED_KIND = "unowned"
TASK_KIND = "task"
TASK_TEXT_MAX = 500
# Due dates further out than this are almost certainly a typo (2062 for 2026).
DUE_WITHIN = dt.timedelta(days=730)

_MENTION = re.compile(r"^<@([UW][A-Z0-9]{2,})(?:\|[^>]*)?>$")
_USER_ID = re.compile(r"^[UW][A-Z0-9]{2,}$")
_RELATIVE = re.compile(r"^\+(\d{1,3})([dw])$")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


# -- parsing ------------------------------------------------------------------------------


def parse_user(token: str, *, actor: str, example: str) -> str:
    """The Slack user ID a command names: a mention (`<@U123>` or `<@U123|name>`, which Slack
    sends for `@name` when the command escapes users), a bare user ID, or `me`."""
    token = token.strip()
    if token.lower() in ("me", "@me"):
        return actor
    found = _MENTION.match(token)
    if found:
        return found.group(1)
    if _USER_ID.match(token):
        return token
    raise UserError(
        f"Name the person with an @-mention picked from Slack's list, their user ID or `me`, "
        f"e.g. `{example}`."
    )


def local_today(now: dt.datetime, policy: DeadlinePolicy) -> dt.date:
    """Today in the team's timezone (deadlines.timezone): what `today` and `+3d` count from."""
    return now.astimezone(ZoneInfo(policy.timezone)).date()


def parse_due(text: str, *, today: dt.date) -> dt.date:
    """`YYYY-MM-DD`, `today`, `tomorrow`, `+3d` or `+2w`, counted from `today`; not past."""
    word = text.strip().lower()
    due: dt.date | None = None
    if word == "today":
        due = today
    elif word == "tomorrow":
        due = today + dt.timedelta(days=1)
    elif m := _RELATIVE.match(word):
        days = int(m.group(1)) * (7 if m.group(2) == "w" else 1)
        due = today + dt.timedelta(days=days)
    elif _ISO_DATE.match(word):
        try:
            due = dt.date.fromisoformat(word)
        except ValueError:
            due = None
    if due is None:
        raise UserError(
            "{text!r} is not a due date: use YYYY-MM-DD, today, tomorrow or +3d.", text=text[:40]
        )
    if due < today:
        raise UserError(f"{due.isoformat()} is in the past: give today or a later day.")
    if due - today > DUE_WITHIN:
        raise UserError(f"{due.isoformat()} is over two years away: check the year.")
    return due


@dataclass(frozen=True)
class TaskRequest:
    owner: str
    due_on: dt.date
    text: str


def parse_task(rest: str, *, actor: str, today: dt.date, key: str) -> TaskRequest:
    """`@owner due <date> <text>` -> TaskRequest."""
    usage = f"/incident task {key} @owner due tomorrow <what to do>"
    parts = rest.split(None, 3)
    if len(parts) < 4 or parts[1].lower() != "due":
        raise UserError(f"Say who, when and what: `{usage}`.")
    owner = parse_user(parts[0], actor=actor, example=usage)
    due = parse_due(parts[2], today=today)
    text = " ".join(parts[3].split())
    if len(text) > TASK_TEXT_MAX:
        text = text[: TASK_TEXT_MAX - 1] + "…"
    return TaskRequest(owner, due, text)


def _live(incident: Incident, doing: str) -> None:
    if incident.status == "closed":
        raise UserError(f"{incident.key} is closed; {doing} on a new incident instead.")


# -- the owner ----------------------------------------------------------------------------


def assign_owner(
    *, session: Session, incident: Incident, actor: str, user: str, took: bool = False
) -> str | None:
    """Make `user` the owner (the pings to on-call stop); the previous owner, if any."""
    _live(incident, "assign the owner")
    if incident.owner == user:
        who = "You already own" if user == actor else "That person already owns"
        raise UserError(f"{who} {incident.key}.")
    old = incident.owner
    incident.owner = user
    how = "took it" if took else f"assigned by {actor}"
    append_event(
        session=session,
        incident=incident,
        actor=actor,
        kind="incident.owner",
        summary=f"Owner {old or 'nobody'} → {user} ({how})",
        details={"from": old, "to": user, "took": took},
    )
    cancel_reminders(
        session=session,
        incident=incident,
        kinds=(UNOWNED_KIND,),
        actor=actor,
        reason=f"{user} owns {incident.key}",
    )
    return old


def take(*, session: Session, incident: Incident, actor: str) -> None:
    """The clicker owns the incident, unless someone already does."""
    if incident.owner == actor:
        raise UserError(f"You already own {incident.key}.")
    if incident.owner:
        raise UserError(
            f"{incident.key} already has an owner; `/incident assign {incident.key} me` "
            "takes it over."
        )
    assign_owner(session=session, incident=incident, actor=actor, user=actor, took=True)


# -- roles --------------------------------------------------------------------------------


def parse_role(word: str, *, key: str) -> str:
    role = word.strip().lower()
    if role not in ROLES:
        raise UserError(f"Say which role: `/incident role {key} {'|'.join(ROLES)} @user`.")
    return role


def set_role(
    *, session: Session, incident: Incident, actor: str, role: str, user: str
) -> str | None:
    """Give `role` to `user`; who held it before, if anyone."""
    _live(incident, "assign roles")
    row = session.scalars(
        select(IncidentRole).where(
            IncidentRole.incident_id == incident.id, IncidentRole.role == role
        )
    ).first()
    old = row.user_id if row is not None else None
    if old == user:
        raise UserError(f"That person is already the {role} of {incident.key}.")
    now = clock_of(session).now()
    if row is None:
        session.add(
            IncidentRole(
                incident_id=incident.id,
                role=role,
                user_id=user,
                assigned_by=actor,
                assigned_at=now,
            )
        )
    else:
        row.user_id, row.assigned_by, row.assigned_at = user, actor, now
    append_event(
        session=session,
        incident=incident,
        actor=actor,
        kind="incident.role",
        summary=f"{role.capitalize()} {old or 'nobody'} → {user}",
        details={"role": role, "from": old, "to": user},
    )
    return old


def roles_of(*, session: Session, incident_ids: Sequence[int]) -> dict[int, dict[str, str]]:
    """{incident id: {role: user}} for the given incidents (absent: no roles held)."""
    out: dict[int, dict[str, str]] = {}
    if not incident_ids:
        return out
    rows = session.execute(
        select(IncidentRole.incident_id, IncidentRole.role, IncidentRole.user_id).where(
            IncidentRole.incident_id.in_(list(incident_ids))
        )
    ).all()
    for incident_id, role, user in rows:
        out.setdefault(incident_id, {})[role] = user
    return out


# -- tasks --------------------------------------------------------------------------------


def tasks_of(
    *, session: Session, incident_ids: Sequence[int], open_only: bool = False
) -> dict[int, list[IncidentTask]]:
    """{incident id: its tasks by number}."""
    out: dict[int, list[IncidentTask]] = {}
    if not incident_ids:
        return out
    stmt = select(IncidentTask).where(IncidentTask.incident_id.in_(list(incident_ids)))
    if open_only:
        stmt = stmt.where(IncidentTask.done_at.is_(None))
    for task in session.scalars(stmt.order_by(IncidentTask.incident_id, IncidentTask.number)):
        out.setdefault(task.incident_id, []).append(task)
    return out


def open_tasks(*, session: Session, incident: Incident) -> list[IncidentTask]:
    return tasks_of(session=session, incident_ids=[incident.id], open_only=True).get(
        incident.id, []
    )


def tasks_for_user(*, session: Session, user: str) -> list[tuple[Incident, IncidentTask]]:
    """A user's open tasks on incidents that are not closed, soonest due first."""
    rows = session.execute(
        select(Incident, IncidentTask)
        .join(IncidentTask, IncidentTask.incident_id == Incident.id)
        .where(
            IncidentTask.owner == user,
            IncidentTask.done_at.is_(None),
            Incident.status != "closed",
        )
        .order_by(IncidentTask.due_on, Incident.number, IncidentTask.number)
    ).all()
    return [(incident, task) for incident, task in rows]


def _reminder_slot(*, day: dt.date, after: dt.datetime, policy: DeadlinePolicy) -> dt.datetime:
    """The first digest time (deadlines.digest_time, local) on `day` or later, after `after`."""
    tz = ZoneInfo(policy.timezone)
    hour, minute = (int(p) for p in policy.digest_time.split(":"))
    while True:
        at = dt.datetime.combine(day, dt.time(hour, minute), tzinfo=tz).astimezone(dt.UTC)
        if at > after:
            return at
        day += dt.timedelta(days=1)


def _task_key(task: IncidentTask, n: int) -> str:
    return f"task:{task.id}:{n}"


def _schedule_task(
    session: Session, incident: Incident, task: IncidentTask, *, due_at: dt.datetime, n: int
) -> Reminder:
    return schedule_reminder(
        session=session,
        incident=incident,
        kind=TASK_KIND,
        due_at=due_at,
        dedupe_key=_task_key(task, n),
        payload={"task_id": task.id, "number": task.number, "n": n},
    )


def add_task(
    *,
    session: Session,
    incident: Incident,
    actor: str,
    request: TaskRequest,
    policy: DeadlinePolicy,
) -> tuple[IncidentTask, dt.datetime]:
    """A numbered task with its first reminder (on its due day); the task and when."""
    _live(incident, "add the task")
    number = (
        session.scalar(
            select(func.max(IncidentTask.number)).where(IncidentTask.incident_id == incident.id)
        )
        or 0
    ) + 1
    now = clock_of(session).now()
    task = IncidentTask(
        incident_id=incident.id,
        number=number,
        text=request.text,
        owner=request.owner,
        due_on=request.due_on,
        created_by=actor,
        created_at=now,
    )
    session.add(task)
    session.flush()
    append_event(
        session=session,
        incident=incident,
        actor=actor,
        kind="task.added",
        summary=f"Task #{number} for {request.owner}, due {request.due_on.isoformat()}: "
        f"{request.text}",
        details={
            "number": number,
            "owner": request.owner,
            "due_on": request.due_on.isoformat(),
            "text": request.text,
        },
    )
    remind_at = _reminder_slot(day=request.due_on, after=now, policy=policy)
    _schedule_task(session, incident, task, due_at=remind_at, n=1)
    return task, remind_at


def get_task(*, session: Session, incident: Incident, number: int) -> IncidentTask:
    task = session.scalars(
        select(IncidentTask).where(
            IncidentTask.incident_id == incident.id, IncidentTask.number == number
        )
    ).first()
    if task is None:
        raise UserError(f"{incident.key} has no task #{number}; its card lists its tasks.")
    return task


def set_task_done(
    *,
    session: Session,
    incident: Incident,
    number: int,
    actor: str,
    done: bool,
    policy: DeadlinePolicy,
) -> IncidentTask:
    """Mark a task done (its reminders stop) or open again (they resume while the incident
    is not closed)."""
    task = get_task(session=session, incident=incident, number=number)
    if done == (task.done_at is not None):
        state = "done" if done else "open"
        raise UserError(f"Task #{number} of {incident.key} is already {state}.")
    now = clock_of(session).now()
    if done:
        task.done_at, task.done_by = now, actor
        stopped = session.execute(
            update(Reminder)
            .where(
                Reminder.kind == TASK_KIND,
                Reminder.status == "pending",
                Reminder.dedupe_key.like(f"task:{task.id}:%"),
            )
            .values(status="cancelled")
            .execution_options(synchronize_session=False)
        ).rowcount  # type: ignore[attr-defined]
        append_event(
            session=session,
            incident=incident,
            actor=actor,
            kind="task.done",
            summary=f"Task #{number} done: {task.text}",
            details={"number": number, "reminders_cancelled": stopped or 0},
        )
        return task
    task.done_at, task.done_by = None, None
    remind_at = None
    if incident.status != "closed":
        sent = session.scalar(
            select(func.count()).where(Reminder.dedupe_key.like(f"task:{task.id}:%"))
        )
        remind_at = _reminder_slot(day=task.due_on, after=now, policy=policy)
        _schedule_task(session, incident, task, due_at=remind_at, n=int(sent or 0) + 1)
    append_event(
        session=session,
        incident=incident,
        actor=actor,
        kind="task.reopened",
        summary=f"Task #{number} open again: {task.text}",
        details={"number": number, "remind_at": remind_at.isoformat() if remind_at else None},
    )
    return task


# -- the reminder kinds ---------------------------------------------------------------------


@dataclass(frozen=True)
class TaskNotice:
    """A follow-up task due today or overdue (bot/views/reminders.py says so)."""

    number: int
    text: str
    owner: str
    due_on: dt.date
    overdue_days: int  # 0: due today


def task_delivery(
    *,
    session: Session,
    reminder: Reminder,
    incident: Incident | None,
    now: dt.datetime,
    policy: DeadlinePolicy,
    base: Delivery,
) -> Delivery | None:
    """Remind the task's owner; again at the next digest time while it stays open."""
    payload = reminder.payload or {}
    task = session.get(IncidentTask, payload.get("task_id")) if payload.get("task_id") else None
    if task is None or task.done_at is not None:
        return None
    if incident is None or incident.status == "closed":
        return None
    n = int(payload.get("n", 1))
    today = local_today(now, policy)
    _schedule_task(
        session,
        incident,
        task,
        due_at=_reminder_slot(day=today, after=now, policy=policy),
        n=n + 1,
    )
    notice = TaskNotice(
        task.number, task.text, task.owner, task.due_on, max(0, (today - task.due_on).days)
    )
    # The task's owner is the one to remind; the contacts are not paged for a to-do.
    return dataclasses.replace(base, notice=notice, owner=task.owner, mention_contacts=False)


@dataclass(frozen=True)
class UnownedNotice:
    """A GuardDuty incident nobody has taken yet (the view pings the on-call group)."""

    severity: str
    waited: dt.timedelta


def start_unowned_pings(
    *, session: Session, incident: Incident, every: dt.timedelta
) -> Reminder | None:
    """Ping on-call now and every `every` until someone owns it (not for drills)."""
    if incident.owner or incident.is_drill or incident.status in ("resolved", "closed"):
        return None
    return schedule_reminder(
        session=session,
        incident=incident,
        kind=UNOWNED_KIND,
        due_at=clock_of(session).now(),
        dedupe_key=f"unowned:{incident.id}:1",
        payload={"n": 1, "every_s": every.total_seconds()},
    )


def unowned_delivery(
    *,
    session: Session,
    reminder: Reminder,
    incident: Incident | None,
    now: dt.datetime,
    policy: DeadlinePolicy,
    base: Delivery,
) -> Delivery | None:
    if incident is None or incident.owner or incident.status in ("resolved", "closed"):
        return None
    payload = reminder.payload or {}
    n = int(payload.get("n", 1))
    every = float(payload.get("every_s") or 900)
    schedule_reminder(
        session=session,
        incident=incident,
        kind=UNOWNED_KIND,
        due_at=now + dt.timedelta(seconds=every),
        dedupe_key=f"unowned:{incident.id}:{n + 1}",
        payload={"n": n + 1, "every_s": every},
    )
    notice = UnownedNotice(incident.severity, now - incident.created_at)
    return dataclasses.replace(base, notice=notice, owner=None, mention_contacts=False)
