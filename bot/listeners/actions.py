"""Buttons and menus on the incident card.

A click is acknowledged at once; the work runs in the background through the same
`dispatch` as slash commands, so failures reach the clicker (ephemerally, via response_url)
and the incident's timeline. Buttons that need more input open a modal (views.py handles the
submission).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from slack_bolt import Ack, BoltContext, Respond

from bot.app import runtime_of
from bot.listeners.incident_subcommands import change_severity, timeline_cmd
from bot.listeners.slash import Invocation, Reply, dispatch
from bot.views import replies
from commands import incidents as svc
from commands.errors import UserError

if TYPE_CHECKING:
    from bot.app import IncidentBotApp
    from bot.runtime import Runtime

NOTE_MODAL = "incident_note_modal"
STATUS_MODAL = "incident_status_modal"


def action_invocation(
    runtime: Runtime, body: dict[str, Any], respond: Respond, *, name: str, args: str = ""
) -> Invocation:
    """An Invocation for a click: replies go ephemerally to the clicker, never over the card."""
    channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get(
        "channel_id", ""
    )

    def reply_to(reply: Reply) -> None:
        respond(**reply.as_kwargs(), replace_original=False)

    return Invocation(
        runtime=runtime,
        command="button",
        name=name,
        args=args,
        user_id=(body.get("user") or {}).get("id", ""),
        channel_id=channel,
        response_url=body.get("response_url"),
        trigger_id=body.get("trigger_id"),
        reply_to=reply_to,
        incident_key=args.split(" ", 1)[0] or None,
    )


def on_severity(
    ack: Ack, body: dict[str, Any], action: dict[str, Any], respond: Respond, context: BoltContext
) -> None:
    runtime = runtime_of(context)
    level = str((action.get("selected_option") or {}).get("value", ""))
    try:
        key = _card_key(body)
    except UserError as exc:
        # No incident to act on: say so to the clicker (Slack shows nothing of the ack body).
        answer = Reply(replies.user_error(exc))
        inv = action_invocation(runtime, body, respond, name="severity")
        dispatch(inv, lambda _i: answer, background=True, ack=ack)
        return
    inv = action_invocation(runtime, body, respond, name="severity", args=key)
    dispatch(
        inv,
        lambda i: change_severity(i, key, level),
        background=True,
        ack=ack,
        answer_in_ack=False,
    )


def on_timeline(
    ack: Ack, body: dict[str, Any], action: dict[str, Any], respond: Respond, context: BoltContext
) -> None:
    key = _button_key(action)
    inv = action_invocation(runtime_of(context), body, respond, name="timeline", args=key)

    def work(i: Invocation) -> Reply | None:
        _require_key(key, "timeline")
        return timeline_cmd(i)

    dispatch(inv, work, background=True, ack=ack, answer_in_ack=False)


def on_note(
    ack: Ack, body: dict[str, Any], action: dict[str, Any], respond: Respond, context: BoltContext
) -> None:
    runtime = runtime_of(context)
    key = _button_key(action)
    inv = action_invocation(runtime, body, respond, name="note", args=key)

    def open_modal(i: Invocation) -> None:
        _require_key(key, "note")
        metadata = json.dumps({"key": key, "channel": i.channel_id})
        runtime.client.views_open(
            trigger_id=i.trigger_id, view=replies.note_modal(NOTE_MODAL, key, metadata)
        )

    # views.open must use the trigger within 3 s, so it runs before the ack returns.
    dispatch(inv, open_modal, background=False, ack=ack, answer_in_ack=False)


def on_resolve(
    ack: Ack, body: dict[str, Any], action: dict[str, Any], respond: Respond, context: BoltContext
) -> None:
    _status_button(ack, body, action, respond, context, status="resolved", verb="Resolve")


def on_close(
    ack: Ack, body: dict[str, Any], action: dict[str, Any], respond: Respond, context: BoltContext
) -> None:
    _status_button(ack, body, action, respond, context, status="closed", verb="Close")


def _status_button(
    ack: Ack,
    body: dict[str, Any],
    action: dict[str, Any],
    respond: Respond,
    context: BoltContext,
    *,
    status: str,
    verb: str,
) -> None:
    """Resolve…/Close…: check the move is allowed, then ask for a summary."""
    runtime = runtime_of(context)
    key = _button_key(action)
    inv = action_invocation(runtime, body, respond, name=verb.lower(), args=key)

    def open_modal(i: Invocation) -> None:
        _require_key(key, status)
        with runtime.database.read_session() as session:
            found = svc.get_incident(session=session, key=key)
            if status not in svc.TRANSITIONS.get(found.status, ()):
                raise UserError(replies.cannot_become(key, found.status, status))
            if status == "closed":
                svc.refuse_open_tasks(session=session, incident=found)
        metadata = json.dumps({"key": key, "status": status, "channel": i.channel_id})
        view = replies.status_modal(STATUS_MODAL, key, verb, status, metadata)
        runtime.client.views_open(trigger_id=i.trigger_id, view=view)

    # views.open must use the trigger within 3 s, so it runs before the ack returns.
    dispatch(inv, open_modal, background=False, ack=ack, answer_in_ack=False)


def register(app: IncidentBotApp) -> None:
    app.action("incident_severity")(on_severity)
    app.action("incident_timeline")(on_timeline)
    app.action("incident_note")(on_note)
    app.action("incident_resolve")(on_resolve)
    app.action("incident_close")(on_close)


def _button_key(action: dict[str, Any]) -> str:
    """The incident key a card button carries ("" when the payload has none)."""
    value = action.get("value")
    return value.strip() if isinstance(value, str) else ""


def _require_key(key: str, action: str) -> None:
    if not svc.looks_like_key(key):
        raise UserError(replies.button_names_no_incident(action))


def _card_key(body: dict[str, Any]) -> str:
    """The incident key of the card a menu sits on (menus carry no value of their own)."""
    message = body.get("message")
    blocks = message.get("blocks") if isinstance(message, dict) else None
    for block in blocks if isinstance(blocks, list) else []:
        elements = block.get("elements") if isinstance(block, dict) else None
        for element in elements if isinstance(elements, list) else []:
            value = element.get("value") if isinstance(element, dict) else None
            if isinstance(value, str) and svc.looks_like_key(value):
                return value
    raise UserError(replies.CARD_NAMES_NO_INCIDENT)
