"""`/incident assign`, `role` and `task`; the card's "Take it" and task Done/Reopen buttons.

Handlers parse in the request (a mistake is answered in the ack) and defer the change, which
commands/people.py validates against the incident's state, records on the timeline and
follows with a card refresh and a line in the incident's thread. bot.wiring adds
`SUBCOMMANDS` to `/incident`, `register` to the listeners and `card_section` to the card.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from slack_bolt import Ack, BoltContext, Respond
from sqlalchemy.orm import object_session

from bot.app import runtime_of
from bot.listeners.actions import _button_key, _require_key, action_invocation
from bot.listeners.events import publish_home
from bot.listeners.incident_posts import refresh_incident
from bot.listeners.incident_subcommands import take_incident
from bot.listeners.slash import Invocation, Reply, Subcommand, dispatch, spec, unescaped
from bot.views import blocks as bk
from bot.views import people as pv
from bot.views.cards import SectionFactory
from commands import incidents as svc
from commands import people
from commands.errors import UserError
from storage.models import ROLES, Incident

if TYPE_CHECKING:
    from bot.app import IncidentBotApp


def _read(inv: Invocation, *, example: str) -> tuple[str, str]:
    """The incident's key and the rest of the command as Slack sent it (mentions escaped)."""
    with inv.runtime.database.read_session() as session:
        found, _ = take_incident(inv, session, example=example)
        key = found.key
    first, _, rest = inv.raw_args.partition(" ")
    return key, rest.strip() if svc.looks_like_key(first) else inv.raw_args.strip()


# -- /incident assign | role | task ------------------------------------------------------


def assign_cmd(inv: Invocation) -> Reply | None:
    key, rest = _read(inv, example="/incident assign INC-42 @user")
    example = pv.assign_example(key)
    if not rest:
        raise UserError(pv.owner_needed(example))
    user = people.parse_user(rest.split()[0], actor=inv.user_id, example=example)

    def work() -> Reply:
        with inv.runtime.database.session() as session:
            target = svc.get_incident(session=session, key=key, for_update=True)
            old = people.assign_owner(
                session=session, incident=target, actor=inv.user_id, user=user
            )
        line = pv.owner_line(key, user, inv.user_id, took=False, old=old)
        refresh_incident(inv.runtime, key, line=line)
        return Reply(pv.owner_reply(key, user))

    inv.defer("assign owner", work)
    return None


def role_cmd(inv: Invocation) -> Reply | None:
    key, rest = _read(inv, example="/incident role INC-42 commander @user")
    parts = rest.split()
    example = pv.role_example(key)
    if len(parts) < 2:
        raise UserError(pv.role_needed(example))
    role = people.parse_role(parts[0], key=key)
    user = people.parse_user(parts[1], actor=inv.user_id, example=example)

    def work() -> Reply:
        with inv.runtime.database.session() as session:
            target = svc.get_incident(session=session, key=key, for_update=True)
            old = people.set_role(
                session=session, incident=target, actor=inv.user_id, role=role, user=user
            )
        refresh_incident(inv.runtime, key, line=pv.role_line(key, role, user, inv.user_id, old))
        return Reply(pv.role_reply(key, role, user))

    inv.defer("set role", work)
    return None


def task_cmd(inv: Invocation) -> Reply | None:
    key, rest = _read(inv, example="/incident task INC-42 @owner due tomorrow <what to do>")
    runtime = inv.runtime
    policy = runtime.deadline_policy
    request = people.parse_task(
        rest, actor=inv.user_id, today=people.local_today(runtime.now(), policy), key=key
    )
    # The owner came from the escaped form; the task's words read as the user typed them.
    request = people.TaskRequest(request.owner, request.due_on, unescaped(request.text))

    def work() -> Reply:
        with runtime.database.session() as session:
            target = svc.get_incident(session=session, key=key, for_update=True)
            task, remind_at = people.add_task(
                session=session, incident=target, actor=inv.user_id, request=request, policy=policy
            )
            line = pv.task_added_line(key, task, inv.user_id)
            reply = pv.task_added_reply(key, task, remind_at)
        refresh_incident(runtime, key, line=line)
        return Reply(reply)

    inv.defer("add task", work)
    return None


SUBCOMMANDS: tuple[Subcommand, ...] = (
    spec(
        "assign",
        handler=assign_cmd,
        usage="/incident assign [INC-N] @user",
        summary="Make someone (or `me`) the owner; on-call pings stop.",
    ),
    spec(
        "role",
        handler=role_cmd,
        usage=f"/incident role [INC-N] {'|'.join(ROLES)} @user",
        summary="Give someone a role on the incident.",
    ),
    spec(
        "task",
        handler=task_cmd,
        usage="/incident task [INC-N] @owner due <YYYY-MM-DD|today|tomorrow|+3d> <text>",
        summary="A follow-up task, reminded on its due day; open tasks block close.",
    ),
)


# -- buttons ------------------------------------------------------------------------------


def _click(
    context: BoltContext, body: dict[str, Any], respond: Respond, *, name: str, key: str
) -> Invocation:
    """The click's Invocation; a click on the App Home has no response_url, so the answer
    comes as a direct message from the bot."""
    runtime = runtime_of(context)
    inv = action_invocation(runtime, body, respond, name=name, args=key)
    if not body.get("response_url"):
        user = inv.user_id

        def dm(reply: Reply) -> None:
            runtime.slack.post(user, bk.message(reply.text, reply.blocks))

        inv.reply_to = dm
    return inv


def _after_click(inv: Invocation, body: dict[str, Any]) -> None:
    """A click on the App Home re-publishes it, so it shows the change."""
    if (body.get("container") or {}).get("type") == "view" and inv.user_id:
        publish_home(inv.runtime, inv.user_id)


def on_take(
    ack: Ack, body: dict[str, Any], action: dict[str, Any], respond: Respond, context: BoltContext
) -> None:
    key = _button_key(action)
    inv = _click(context, body, respond, name="take", key=key)

    def work(i: Invocation) -> Reply:
        _require_key(key, "take")
        with i.runtime.database.session() as session:
            target = svc.get_incident(session=session, key=key, for_update=True)
            people.take(session=session, incident=target, actor=i.user_id)
        line = pv.owner_line(key, i.user_id, i.user_id, took=True, old=None)
        refresh_incident(i.runtime, key, line=line)
        _after_click(i, body)
        return Reply(pv.took_reply(key))

    dispatch(inv, work, background=True, ack=ack, answer_in_ack=False)


def on_task_toggle(
    ack: Ack, body: dict[str, Any], action: dict[str, Any], respond: Respond, context: BoltContext
) -> None:
    parsed = pv.parse_task_value(_button_key(action))
    key = parsed[0] if parsed else ""
    inv = _click(context, body, respond, name="task", key=key)

    def work(i: Invocation) -> Reply:
        if parsed is None:
            raise UserError(pv.BUTTON_NAMES_NO_TASK)
        _require_key(key, "task")
        _, number, done = parsed
        with i.runtime.database.session() as session:
            target = svc.get_incident(session=session, key=key, for_update=True)
            task = people.set_task_done(
                session=session,
                incident=target,
                number=number,
                actor=i.user_id,
                done=done,
                policy=i.runtime.deadline_policy,
            )
            line = pv.task_toggled_line(key, task, i.user_id, done=done)
        refresh_incident(i.runtime, key, line=line)
        _after_click(i, body)
        return Reply(pv.task_toggled_reply(key, number, done=done))

    dispatch(inv, work, background=True, ack=ack, answer_in_ack=False)


def register(app: IncidentBotApp) -> None:
    app.action(pv.TAKE_ACTION)(on_take)
    app.action(pv.TASK_ACTION)(on_task_toggle)


# -- the card -----------------------------------------------------------------------------


def card_section(timezone: str) -> SectionFactory:
    """The card's roles and tasks; due days are judged in the team's timezone."""
    zone = ZoneInfo(timezone)

    def section(incident: Incident, now: dt.datetime) -> list[dict[str, Any]]:
        session = object_session(incident)
        if session is None:  # cards are rendered inside a read session (render_card)
            raise RuntimeError(f"{incident.key} was rendered outside its session")
        roles = people.roles_of(session=session, incident_ids=[incident.id])
        tasks = people.tasks_of(session=session, incident_ids=[incident.id])
        return pv.people_blocks(
            incident,
            roles.get(incident.id, {}),
            tasks.get(incident.id, []),
            today=now.astimezone(zone).date(),
        )

    return section
