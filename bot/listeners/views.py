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
from commands import incidents as svc

if TYPE_CHECKING:
    from bot.app import IncidentBotApp
    from bot.runtime import Runtime


def view_invocation(runtime: Runtime, body: dict[str, Any], *, name: str) -> Invocation:
    meta = json.loads(body["view"].get("private_metadata") or "{}")
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
    value = view["state"]["values"].get(block_id, {}).get(block_id, {}).get("value")
    return (value or "").strip()


def on_note(ack: Ack, body: dict[str, Any], view: dict[str, Any], context: BoltContext) -> None:
    runtime = runtime_of(context)
    text = field_value(view, "note")
    if not text:
        ack(response_action="errors", errors={"note": "Write the note first."})
        return
    inv = view_invocation(runtime, body, name="note")
    key = inv.args

    def work(i: Invocation) -> None:
        with runtime.database.session() as session:
            target = svc.get_incident(session=session, key=key)
            svc.add_note(session=session, incident=target, actor=i.user_id, text=text)
        refresh_incident(runtime, key, line=f"📝 {bk.user(i.user_id)}: {bk.esc(text)}")

    dispatch(inv, work, background=True, ack=ack, answer_in_ack=False)


def on_status(ack: Ack, body: dict[str, Any], view: dict[str, Any], context: BoltContext) -> None:
    runtime = runtime_of(context)
    summary = field_value(view, "summary")
    if not summary:
        ack(response_action="errors", errors={"summary": "Add a one-line summary."})
        return
    inv = view_invocation(runtime, body, name="status")
    meta = json.loads(view.get("private_metadata") or "{}")
    status = meta.get("status", "")

    def work(i: Invocation) -> Reply:
        return change_status(i, i.args, status, summary)

    dispatch(inv, work, background=True, ack=ack, answer_in_ack=False)


def register(app: IncidentBotApp) -> None:
    app.view(NOTE_MODAL)(on_note)
    app.view(STATUS_MODAL)(on_status)
