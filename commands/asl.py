"""A containment plan as an AWS Step Functions state machine (Amazon States Language).

The fallback for when the bot is down: the same calls, in the same order, run by Step
Functions' AWS SDK integrations. The machine starts with a manual-approval step (SNS publish
with a task token, `.waitForTaskToken`) so nothing changes until a person sends the token
back; then the plan's steps run, steps that do not depend on each other in Parallel branches.
Only the plan's changing calls become states: its reads (describe/get/list) were the bot's
capture, whose results the plan already recorded. Some parameters are summaries with a
<placeholder> for a value only known at run time (the id of a group an earlier call creates);
those states say EDIT BEFORE RUNNING in their Comment.

Execution input: `{"approval_topic_arn": "arn:aws:sns:..."}`, the topic that carries the
approval request (and its task token) to the responders.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from commands.errors import NotFound
from storage.models import ContainmentRequest, Incident

# Plans whose steps are containment calls (forensics and wipe plans have another shape).
CALL_PLAN_KINDS = ("contain", "retry", "rollback")
# The request reached (or passed) a second responder's approval.
APPROVED = ("approved", "running", "succeeded", "partial", "failed", "interrupted", "rolled_back")

# boto3 service names whose Step Functions SDK integration name differs (the SDK's own ids).
SDK_SERVICE = {
    "elbv2": "elasticloadbalancingv2",
    "elb": "elasticloadbalancing",
    "logs": "cloudwatchlogs",
    "events": "eventbridge",
    "stepfunctions": "sfn",
}
APPROVAL_STATE = "Approve changes"
APPROVAL_TIMEOUT_SECONDS = 24 * 3600
_PLACEHOLDER = re.compile(r"^<[^<>]+>$")
_NAME_LIMIT = 80  # ASL state names


def plan_request(*, session: Session, incident: Incident) -> ContainmentRequest:
    """The incident's newest approved containment request, else its newest one (NotFound)."""
    requests = list(
        session.scalars(
            select(ContainmentRequest)
            .where(
                ContainmentRequest.incident_id == incident.id,
                ContainmentRequest.kind.in_(CALL_PLAN_KINDS),
            )
            .order_by(ContainmentRequest.id.desc())
        )
    )
    with_steps = [r for r in requests if (r.plan or {}).get("steps")]
    if not with_steps:
        raise NotFound(
            f"{incident.key} has no containment plan: request one with /contain in Slack first."
        )
    approved = [r for r in with_steps if r.status in APPROVED]
    return (approved or with_steps)[0]


def export_asl(*, session: Session, incident: Incident) -> str:
    """The ASL JSON of the incident's approved (or latest) containment plan."""
    request = plan_request(session=session, incident=incident)
    return json.dumps(
        state_machine(
            request.plan,
            incident_key=incident.key,
            request_id=request.id,
            # Undo steps are stored newest first; run them one after another.
            sequential=request.kind == "rollback",
        ),
        indent=2,
    )


def sdk_resource(service: str, operation: str) -> str:
    """`ec2`, `CreateSnapshots` -> `arn:aws:states:::aws-sdk:ec2:createSnapshots`."""
    name = SDK_SERVICE.get(service, service)
    return f"arn:aws:states:::aws-sdk:{name}:{operation[:1].lower()}{operation[1:]}"


def state_machine(
    plan: Mapping[str, Any],
    *,
    incident_key: str,
    request_id: int | None = None,
    sequential: bool = False,
) -> dict[str, Any]:
    """The plan as an ASL definition: approval first, then each step's calls in order."""
    steps = [
        {**s, "calls": changing}
        for s in plan.get("steps", [])
        if (changing := [c for c in s.get("calls", []) if c.get("mutating", True)])
    ]
    if not steps:
        raise NotFound("The plan changes nothing, so there is no state machine to export.")
    names = _Names()
    layers = [[s] for s in steps] if sequential else _layers(steps)
    states: dict[str, Any] = {}
    chain: list[tuple[str, dict[str, Any]]] = []  # top-level states after the approval
    for index, layer in enumerate(layers, start=1):
        if len(layer) == 1:
            chain.extend(_step_states(layer[0], names))
            continue
        branches = []
        for step in layer:
            sub = _step_states(step, names)
            branches.append({"StartAt": sub[0][0], "States": _linked(sub)})
        label = ", ".join(s["action"] for s in layer)
        parallel = {
            "Type": "Parallel",
            "Comment": f"independent steps: {label}",
            "Branches": branches,
            "ResultPath": None,
        }
        chain.append((names.unique(f"Steps {index}: {label}"), parallel))
    what = f"request #{request_id}" if request_id is not None else "plan"
    target = plan.get("target") or {}
    approval = {
        "Type": "Task",
        "Comment": "Manual approval: nothing changes until a responder returns the task token.",
        "Resource": "arn:aws:states:::sns:publish.waitForTaskToken",
        "Parameters": {
            "TopicArn.$": "$.approval_topic_arn",
            "Subject": f"Approve containment for {incident_key}"[:100],
            "Message.$": (
                "States.Format('Approve containment of "
                + _quote(f"{target.get('resource_id', '?')} ({incident_key}, {what})")
                + ": to run it, aws stepfunctions send-task-success --task-token {} "
                "--task-output true; to stop, send-task-failure with the same token.', "
                "$$.Task.Token)"
            ),
        },
        "TimeoutSeconds": APPROVAL_TIMEOUT_SECONDS,
        "ResultPath": None,
    }
    top = [(APPROVAL_STATE, approval), *chain]
    states.update(_linked(top))
    return {
        "Comment": (
            f"incident-bot containment plan for {incident_key} ({what}, target "
            f"{target.get('kind', '?')} {target.get('resource_id', '?')} in "
            f"{target.get('region', '?')}): start with "
            '{"approval_topic_arn": "arn:aws:sns:REGION:ACCOUNT:TOPIC"}'
        ),
        "StartAt": APPROVAL_STATE,
        "States": states,
    }


def _quote(text: str) -> str:
    """Text inside a States.Format string literal: escape what the intrinsic parser reserves."""
    out = text
    for ch in "\\'{}":
        out = out.replace(ch, "\\" + ch)
    return out


def _linked(states: Sequence[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """States in sequence: each one's Next is the following one; the last one ends."""
    out: dict[str, Any] = {}
    for i, (name, state) in enumerate(states):
        if i + 1 < len(states):
            out[name] = {**state, "Next": states[i + 1][0]}
        else:
            out[name] = {**state, "End": True}
    return out


def _step_states(step: Mapping[str, Any], names: _Names) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for call in step["calls"]:
        service, operation = call.get("service"), call.get("operation")
        if not service or not operation:
            raise ValueError(f"step {step.get('action')!r} has a call without service/operation")
        params = call.get("params")
        task: dict[str, Any] = {
            "Type": "Task",
            "Comment": _comment(step, call, params),
            "Resource": sdk_resource(service, operation),
            "Parameters": dict(params or {}),
            "ResultPath": None,
        }
        out.append((names.unique(f"{step['action']} {service}.{operation}"), task))
    return out


def _comment(step: Mapping[str, Any], call: Mapping[str, Any], params: Any) -> str:
    text = str(call.get("text") or f"{call.get('service')}.{call.get('operation')}")
    if params is None:
        return f"EDIT BEFORE RUNNING: the plan did not record this call's parameters: {text}"
    if _has_placeholder(params):
        return (
            "EDIT BEFORE RUNNING: a <placeholder> stands for a value an earlier call "
            f"creates: {text}"
        )
    return f"{step.get('action')}: {text}"


def _has_placeholder(value: Any) -> bool:
    if isinstance(value, str):
        return bool(_PLACEHOLDER.match(value))
    if isinstance(value, Mapping):
        return any(_has_placeholder(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_placeholder(v) for v in value)
    return False


def _layers(steps: Sequence[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
    """Steps in waves: each wave's steps wait only for earlier waves, so they can run together.

    A step waits for what it `depends_on` and what it must come `after` (older plans did not
    record `after`: the registry's action says it)."""
    present = {s["action"] for s in steps}
    waits = {s["action"]: {d for d in _deps(s) if d in present} for s in steps}
    done: set[str] = set()
    layers: list[list[Mapping[str, Any]]] = []
    left = list(steps)
    while left:
        ready = [s for s in left if waits[s["action"]] <= done]
        if not ready:
            raise ValueError(f"the plan's steps wait on each other: {[s['action'] for s in left]}")
        layers.append(ready)
        done |= {s["action"] for s in ready}
        left = [s for s in left if s["action"] not in done]
    return layers


def _deps(step: Mapping[str, Any]) -> list[str]:
    deps = list(step.get("depends_on") or [])
    after = step.get("after")
    if after is None:
        from containment.registry import get_action

        try:
            after = list(get_action(step["action"]).after)
        except KeyError:
            after = []
    return deps + list(after)


class _Names:
    """Unique ASL state names of at most 80 characters."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def unique(self, wanted: str) -> str:
        base = wanted[:_NAME_LIMIT]
        name, n = base, 2
        while name in self.used:
            suffix = f" #{n}"
            name = base[: _NAME_LIMIT - len(suffix)] + suffix
            n += 1
        self.used.add(name)
        return name
