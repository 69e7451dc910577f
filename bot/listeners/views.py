"""Modal submissions (note, resolve/close summary).

An empty field is refused inside the modal (`response_action: errors`); otherwise the modal
closes at once and the change runs in the background. Modals have no response_url, so
results and failures reach the user as a direct message from the bot.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from slack_bolt import Ack, BoltContext

from bot.app import runtime_of
from bot.listeners.actions import NOTE_MODAL, STATUS_MODAL
from bot.listeners.incident_posts import refresh_incident
from bot.listeners.incident_subcommands import change_status
from bot.listeners.slash import Invocation, Reply, dispatch
from bot.views import blocks as bk
from bot.views import replies
from bot.views.card_recovery import not_shown_text
from commands import incidents as svc
from commands.errors import UserError

if TYPE_CHECKING:
    from bot.app import IncidentBotApp
    from bot.runtime import Runtime


def metadata(view: dict[str, Any]) -> dict[str, Any]:
    """A modal's private_metadata as a JSON object ({} when absent or not one)."""
    raw = view.get("private_metadata") if isinstance(view, dict) else None
    try:
        meta = json.loads(raw) if isinstance(raw, str) and raw else {}
    except (json.JSONDecodeError, RecursionError):
        return {}
    return meta if isinstance(meta, dict) else {}


def view_invocation(runtime: Runtime, body: dict[str, Any], *, name: str) -> Invocation:
    meta = metadata(body.get("view") or {})
    meta = {k: v for k, v in meta.items() if isinstance(v, str)}
    user_id = body["user"]["id"]

    def reply_to(reply: Reply) -> None:
        runtime.slack.post(user_id, bk.message(reply.text, reply.blocks))

    return Invocation(
        runtime=runtime,
        command="modal",
        name=name,
        args=meta.get("key", ""),
        user_id=user_id,
        channel_id=meta.get("channel", ""),
        reply_to=reply_to,
        incident_key=meta.get("key"),
    )


def field_value(view: dict[str, Any], block_id: str) -> str:
    """The text typed into the input `block_id` ("" when the payload has none)."""
    state = view.get("state") if isinstance(view, dict) else None
    values = state.get("values") if isinstance(state, dict) else None
    block = values.get(block_id) if isinstance(values, dict) else None
    field = block.get(block_id) if isinstance(block, dict) else None
    value = field.get("value") if isinstance(field, dict) else None
    return value.strip() if isinstance(value, str) else ""


def on_note(ack: Ack, body: dict[str, Any], view: dict[str, Any], context: BoltContext) -> None:
    runtime = runtime_of(context)
    text = field_value(view, "note")
    if not text:
        ack(response_action="errors", errors={"note": replies.NOTE_EMPTY})
        return
    inv = view_invocation(runtime, body, name="note")
    key = inv.args

    def work(i: Invocation) -> Reply | None:
        if not svc.looks_like_key(key):
            raise UserError(replies.NOTE_FORM_NAMES_NO_INCIDENT)
        with runtime.database.session() as session:
            target = svc.get_incident(session=session, key=key)
            svc.add_note(session=session, incident=target, actor=i.user_id, text=text)
        missed = refresh_incident(runtime, key, line=replies.note_line(i.user_id, text))
        # Quiet when Slack showed it; otherwise the note's author hears what is missing.
        return Reply(replies.noted_reply(key) + not_shown_text(missed)) if missed else None

    dispatch(inv, work, background=True, ack=ack, answer_in_ack=False)


def on_status(ack: Ack, body: dict[str, Any], view: dict[str, Any], context: BoltContext) -> None:
    runtime = runtime_of(context)
    summary = field_value(view, "summary")
    if not summary:
        ack(response_action="errors", errors={"summary": replies.SUMMARY_EMPTY})
        return
    inv = view_invocation(runtime, body, name="status")
    status = str(metadata(view).get("status", ""))

    def work(i: Invocation) -> Reply:
        return change_status(i, i.args, status, summary)

    dispatch(inv, work, background=True, ack=ack, answer_in_ack=False)


def register(app: IncidentBotApp) -> None:
    app.view(NOTE_MODAL)(on_note)
    app.view(STATUS_MODAL)(on_status)
