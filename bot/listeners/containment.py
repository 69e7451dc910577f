"""`/contain`, the finding card's "Plan containment" button, and the approval card's buttons
and reject modal. Listeners ack at once and hand the work to `bot.approvals` (the service)
in the background; see bot/approvals/service.py for the flow.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, NamedTuple

from slack_bolt import Ack, BoltContext, Respond

from bot.app import runtime_of
from bot.approvals.service import Proposal, service
from bot.listeners.actions import action_invocation
from bot.listeners.slash import Invocation, Reply, dispatch
from bot.listeners.views import field_value, metadata, view_invocation
from bot.views import approval_card as cv
from bot.views import replies
from bot.views.approval_card import APPROVE, REJECT, RETRY, ROLLBACK, reject_modal
from commands import incidents as svc
from commands.approvals.plans import check_identifier
from commands.errors import UserError

if TYPE_CHECKING:
    from bot.app import IncidentBotApp
    from bot.runtime import Runtime

__all__ = ["ContainArgs", "parse_contain_args", "parse_plan_value", "register"]

COMMAND = "/contain"
PLAN_BUTTON = "plan_containment"
REJECT_MODAL = "containment_reject_modal"
USAGE = (
    "/contain <instance-id|access-key-id|ARN|kind:name> [INC-N] [--volatile|--no-volatile] [reason]"
)
# Volatile capture before isolation, for this plan, whatever containment.volatile_capture says.
_VOLATILE_FLAGS = {"--volatile": True, "--no-volatile": False}
_OPTION = re.compile(r"^[\u2013\u2014](?=[A-Za-z])")
_FLAG = re.compile(r"^--[A-Za-z][\w-]*$")
_RESOURCE = re.compile(r"\b(i-[0-9a-f]{8,17}|(?:AKIA|ASIA)[A-Z0-9]{12,124})\b")
_KEY = re.compile(r"\bINC-\d{1,9}\b", re.IGNORECASE)


# -- parsing ---------------------------------------------------------------------------------


class ContainArgs(NamedTuple):
    resource: str
    key: str | None
    reason: str | None
    volatile: bool | None = None  # --volatile / --no-volatile; None: the configured rule


def parse_contain_args(text: str) -> ContainArgs:
    """`<resource> [INC-N] [--volatile|--no-volatile] [reason]`."""
    # Typing `--` on a Mac often arrives as an em or en dash.
    words = [_OPTION.sub("--", w) for w in (text or "").split()]
    flags = {w.lower() for w in words if _FLAG.match(w)}
    unknown = flags - set(_VOLATILE_FLAGS)
    if unknown:
        raise UserError(cv.unknown_option(sorted(unknown)[0], USAGE))
    if len(flags) > 1:
        raise UserError(cv.BOTH_VOLATILE_FLAGS)
    volatile = _VOLATILE_FLAGS[flags.pop()] if flags else None
    words = [w for w in words if not _FLAG.match(w)]
    if not words:
        raise UserError(cv.resource_needed(USAGE))
    resource = words[0]
    rest = words[1:]
    key = None
    if rest and svc.looks_like_key(rest[0]):
        key = rest[0].upper()
        rest = rest[1:]
    reason = " ".join(rest) or None
    check_identifier(resource)  # a clear error for a malformed id, before any work
    return ContainArgs(resource, key, reason, volatile)


def parse_plan_value(value: str) -> tuple[str, str | None]:
    """The finding card button's value: a resource id and an incident key, in any framing."""
    try:
        data = json.loads(value)
    except ValueError:
        data = None
    if isinstance(data, dict):
        resource = data.get("resource_id") or data.get("resource") or ""
        key = data.get("incident") or data.get("incident_key") or data.get("key")
        if resource:
            return str(resource), (str(key).upper() if key else None)
    match = _RESOURCE.search(value or "")
    if match is None:
        raise UserError(cv.BUTTON_NAMES_NO_RESOURCE)
    key_match = _KEY.search(value)
    return match.group(1), (key_match.group(0).upper() if key_match else None)


# -- listeners ------------------------------------------------------------------------------


def _proposal_reply(proposal: Proposal, resource_id: str) -> Reply:
    return Reply(cv.proposal_reply(proposal, resource_id))


def on_contain(ack: Ack, command: dict[str, Any], respond: Respond, context: BoltContext) -> None:
    runtime = runtime_of(context)
    inv = Invocation(
        runtime=runtime,
        command=COMMAND,
        name="",
        args=(command.get("text") or "").strip(),
        user_id=command.get("user_id", ""),
        channel_id=command.get("channel_id", ""),
        response_url=command.get("response_url"),
        trigger_id=command.get("trigger_id"),
        reply_to=lambda reply: respond(**reply.as_kwargs()),
    )

    def work(i: Invocation) -> Reply:
        resource, key, reason, volatile = parse_contain_args(i.args)
        i.incident_key = key
        proposal = service(runtime).propose(
            resource_id=resource,
            incident_key=key,
            requested_by=i.user_id,
            reason=reason,
            channel_id=i.channel_id,
            volatile=volatile,
        )
        i.incident_key = proposal.incident_key
        return _proposal_reply(proposal, resource)

    try:
        parse_contain_args(inv.args)
    except UserError as exc:
        ack(**Reply(replies.user_error(exc)).as_kwargs())
        return
    dispatch(inv, work, background=True, ack=ack)


def on_plan(
    ack: Ack, body: dict[str, Any], action: dict[str, Any], respond: Respond, context: BoltContext
) -> None:
    runtime = runtime_of(context)
    inv = action_invocation(runtime, body, respond, name="plan containment")
    inv.incident_key = None

    def work(i: Invocation) -> Reply:
        resource, key = parse_plan_value(action.get("value", ""))
        i.incident_key = key
        proposal = service(runtime).propose(
            resource_id=resource,
            incident_key=key,
            requested_by=i.user_id,
            reason="from the GuardDuty finding card",
            channel_id=i.channel_id,
        )
        i.incident_key = proposal.incident_key
        return _proposal_reply(proposal, resource)

    dispatch(inv, work, background=True, ack=ack)


def on_approve(
    ack: Ack, body: dict[str, Any], action: dict[str, Any], respond: Respond, context: BoltContext
) -> None:
    runtime = runtime_of(context)
    inv = action_invocation(runtime, body, respond, name="approve")
    inv.incident_key = None
    request_id = _request_id(action)

    def work(i: Invocation) -> Reply:
        return Reply(service(runtime).decide(request_id=request_id, actor=i.user_id, approve=True))

    dispatch(inv, work, background=True, ack=ack)


def on_reject(
    ack: Ack, body: dict[str, Any], action: dict[str, Any], respond: Respond, context: BoltContext
) -> None:
    runtime = runtime_of(context)
    inv = action_invocation(runtime, body, respond, name="reject")
    inv.incident_key = None
    request_id = _request_id(action)

    def open_modal(i: Invocation) -> None:
        try:
            target_id = service(runtime).check_may_decide(
                request_id=request_id, actor=i.user_id, approve=False
            )
        except UserError as exc:
            # Slack shows nothing of a button's ack body: answer through response_url.
            i.send(Reply(replies.user_error(exc)))
            return
        view = reject_modal(request_id, channel_id=i.channel_id, target_id=target_id)
        # views.open must use the trigger within 3 s, so it runs before the ack returns.
        runtime.client.views_open(trigger_id=i.trigger_id, view=view)

    dispatch(inv, open_modal, background=False, ack=ack)


def on_reject_submit(
    ack: Ack, body: dict[str, Any], view: dict[str, Any], context: BoltContext
) -> None:
    runtime = runtime_of(context)
    reason = field_value(view, "reason")
    if not reason:
        ack(response_action="errors", errors={"reason": cv.REJECT_REASON_EMPTY})
        return
    meta = metadata(view)
    inv = view_invocation(runtime, body, name="reject")
    inv.incident_key = None
    request_id = _request_id({"value": meta.get("request_id", "")})

    def work(i: Invocation) -> Reply:
        return Reply(
            service(runtime).decide(
                request_id=request_id, actor=i.user_id, approve=False, reason=reason
            )
        )

    dispatch(inv, work, background=True, ack=ack)


def on_retry(
    ack: Ack, body: dict[str, Any], action: dict[str, Any], respond: Respond, context: BoltContext
) -> None:
    _follow_up(ack, body, action, respond, context, kind="retry")


def on_rollback(
    ack: Ack, body: dict[str, Any], action: dict[str, Any], respond: Respond, context: BoltContext
) -> None:
    _follow_up(ack, body, action, respond, context, kind="rollback")


def _follow_up(
    ack: Ack,
    body: dict[str, Any],
    action: dict[str, Any],
    respond: Respond,
    context: BoltContext,
    *,
    kind: str,
) -> None:
    runtime = runtime_of(context)
    inv = action_invocation(runtime, body, respond, name=kind)
    inv.incident_key = None
    request_id = _request_id(action)

    def work(i: Invocation) -> Reply:
        proposal = service(runtime).follow_up(
            request_id=request_id, kind=kind, requested_by=i.user_id
        )
        i.incident_key = proposal.incident_key
        return Reply(cv.follow_up_reply(kind, request_id, proposal))

    dispatch(inv, work, background=True, ack=ack)


def start_sweeper(runtime: Runtime) -> None:
    """Expire overdue requests and recover interrupted ones every
    `options.containment_sweep_seconds` (0 or None: never); bot.wiring calls it."""
    every = runtime.options.containment_sweep_seconds
    if every:
        containment = service(runtime)
        containment.start_sweeper(float(every))
        # Stopped with the other producers before the background pool drains.
        runtime.on_shutdown(containment.stop)


def register(app: IncidentBotApp) -> None:
    app.command(COMMAND)(on_contain)
    app.action(PLAN_BUTTON)(on_plan)
    app.action(APPROVE)(on_approve)
    app.action(REJECT)(on_reject)
    app.view(REJECT_MODAL)(on_reject_submit)
    app.action(RETRY)(on_retry)
    app.action(ROLLBACK)(on_rollback)


def _request_id(action: dict[str, Any]) -> int:
    """The request id a button carries; 0 (no such request, a clear answer) when garbled."""
    value = str(action.get("value", "")).strip()
    return int(value) if value.isdigit() else 0
