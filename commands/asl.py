"""A containment plan as an AWS Step Functions state machine (Amazon States Language).

The fallback for when the bot is down: the same calls, in the same order, run by Step
Functions' AWS SDK integrations. The machine starts with a manual-approval step (SNS publish
with a task token, `.waitForTaskToken`) so nothing changes until a person sends the token
back; then the plan's steps run, steps that do not depend on each other in Parallel branches.
Only the plan's changing calls become states: its reads (describe/get/list) were the bot's
capture, whose results the plan already recorded. The ids of security groups the machine
creates are kept under `$.created` and fill the later `<X group>` placeholders. Parameters the
plan only summarised (a deny policy described, a placeholder nothing fills, a required member
missing by botocore's model) cannot be sent as they are: those states say EDIT BEFORE RUNNING
in their Comment.

Execution input: `{"approval_topic_arn": "arn:aws:sns:..."}`, the topic that carries the
approval request (and its task token) to the responders.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from commands.approvals.plans import Plan
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
    with_steps = [r for r in requests if Plan.from_json(r.plan).steps]
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
            Plan.from_json(request.plan),
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
    typed: Plan | Mapping[str, Any],
    *,
    incident_key: str,
    request_id: int | None = None,
    sequential: bool = False,
) -> dict[str, Any]:
    """The plan as an ASL definition: approval first, then each step's calls in order.
    Works on the plan's stored shape (`Plan.to_json`): call `params` and step `after`."""
    plan = typed.to_json() if isinstance(typed, Plan) else typed
    steps = [
        {**s, "calls": changing}
        for s in plan.get("steps", [])
        if (changing := [c for c in s.get("calls", []) if c.get("mutating", True)])
    ]
    if not steps:
        raise NotFound("The plan changes nothing, so there is no state machine to export.")
    names = _Names()
    layers = [[s] for s in steps] if sequential else _layers(steps)
    wired = _created_groups(steps)
    states: dict[str, Any] = {}
    # After the approval the state data is {"created": {...}}: the ids of groups made so far.
    chain: list[tuple[str, dict[str, Any]]] = [
        (
            names.unique("Start"),
            {
                "Type": "Pass",
                "Comment": "Ids of groups the plan creates are kept under $.created.",
                "Parameters": {"created": {}},
            },
        )
    ]
    made: list[str] = []  # the groups created so far, in the order they are
    for index, layer in enumerate(layers, start=1):
        if len(layer) == 1:
            chain.extend(_step_states(layer[0], names, wired))
            made += _creates(layer[0], wired)
            continue
        branches = []
        # Each branch returns {"created": ...}: keep what was there and what each one made.
        where = dict.fromkeys(made, 0)
        for i, step in enumerate(layer):
            sub = _step_states(step, names, wired)
            branches.append({"StartAt": sub[0][0], "States": _linked(sub)})
            for key in _creates(step, wired):
                where[key] = i
                made.append(key)
        label = ", ".join(s["action"] for s in layer)
        parallel = {
            "Type": "Parallel",
            "Comment": f"independent steps: {label}",
            "Branches": branches,
            "ResultSelector": {
                "created": {f"{k}.$": f"$[{i}].created.{k}" for k, i in where.items()}
            },
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
            f"{target.get('kind', '?')} {target.get('resource_id', '?')}): create it in "
            + (f"account {target['account_id']}, " if target.get("account_id") else "")
            + f"region {target.get('region', '?')} (its calls act where the machine runs), "
            'start it with {"approval_topic_arn": "arn:aws:sns:REGION:ACCOUNT:TOPIC"}'
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


def _step_states(
    step: Mapping[str, Any], names: _Names, wired: Mapping[int, str]
) -> list[tuple[str, dict[str, Any]]]:
    out = []
    known = set(wired.values())
    for call in step["calls"]:
        service, operation = call.get("service"), call.get("operation")
        if not service or not operation:
            raise ValueError(f"step {step.get('action')!r} has a call without service/operation")
        params = call.get("params")
        sent = _with_created(params, known) if params is not None else None
        task: dict[str, Any] = {
            "Type": "Task",
            "Comment": _comment(step, call, sent),
            "Resource": sdk_resource(service, operation),
            "Parameters": sent or {},
            "ResultPath": None,
        }
        if id(call) in wired:
            task["ResultSelector"] = {"GroupId.$": "$.GroupId"}
            task["ResultPath"] = f"$.created.{wired[id(call)]}"
        out.append((names.unique(f"{step['action']} {service}.{operation}"), task))
    return out


_NEW_GROUP = re.compile(r"^<new (\w+) group>$")
_ANY_GROUP = re.compile(r"^<(?:new )?(\w+) group>$")


def _created_groups(steps: Sequence[Mapping[str, Any]]) -> dict[int, str]:
    """The CreateSecurityGroup calls (by id()) whose group a later call of the same step names
    `<new X group>`, each with its X. An X created more than once (several VPCs) is left out:
    which group a later `<X group>` means is then unknown."""
    keyed: dict[int, str] = {}
    for step in steps:
        create: Mapping[str, Any] | None = None
        for call in step["calls"]:
            if (call.get("service"), call.get("operation")) == ("ec2", "CreateSecurityGroup"):
                create = call
                continue
            for value in _strings(call.get("params")):
                match = _NEW_GROUP.match(value)
                if match and create is not None:
                    keyed.setdefault(id(create), match[1])
    counts: dict[str, int] = {}
    for key in keyed.values():
        counts[key] = counts.get(key, 0) + 1
    return {call: key for call, key in keyed.items() if counts[key] == 1}


def _creates(step: Mapping[str, Any], wired: Mapping[int, str]) -> list[str]:
    return [wired[id(c)] for c in step["calls"] if id(c) in wired]


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _strings(v)]
    return []


def _with_created(params: Mapping[str, Any], known: set[str]) -> dict[str, Any]:
    """Parameters with `<X group>` placeholders (top-level values, or items of a top-level
    list) read from $.created where the machine creates that group."""

    def path(value: Any) -> str | None:
        match = _ANY_GROUP.match(value) if isinstance(value, str) else None
        return f"$.created.{match[1]}.GroupId" if match and match[1] in known else None

    out: dict[str, Any] = {}
    for key, value in params.items():
        if (p := path(value)) is not None:
            out[f"{key}.$"] = p
        elif (
            isinstance(value, list)
            and all(isinstance(v, str) for v in value)
            and any(path(v) for v in value)
        ):
            items = [path(v) or f"'{_quote(v)}'" for v in value]
            out[f"{key}.$"] = f"States.Array({', '.join(items)})"
        else:
            out[key] = value
    return out


EDIT = "EDIT BEFORE RUNNING"


def _comment(step: Mapping[str, Any], call: Mapping[str, Any], params: Any) -> str:
    text = str(call.get("text") or f"{call.get('service')}.{call.get('operation')}")
    problem = _problem(str(call["service"]), str(call["operation"]), params)
    return f"{EDIT}: {problem}: {text}" if problem else f"{step.get('action')}: {text}"


def _problem(service: str, operation: str, params: Any) -> str | None:
    """Why these recorded parameters cannot be sent as they are (None: they can)."""
    if params is None:
        return "the plan did not record this call's parameters"
    if _has_placeholder(params):
        return "a <placeholder> stands for a value only known at run time"
    shape = _input_shape(service, operation)
    if shape is None:
        return None
    given = {k.removesuffix(".$") for k in params}
    unknown = sorted(given - set(shape.members))
    if unknown:
        return f"{', '.join(unknown)} summarise what the bot sends, not {operation} parameters"
    missing = sorted(set(shape.required_members) - given)
    if missing:
        return f"{operation} also needs {', '.join(missing)}"
    return None


def _input_shape(service: str, operation: str) -> Any:
    """botocore's model of the call's input, or None when botocore does not know it."""
    from botocore.exceptions import UnknownServiceError
    from botocore.model import OperationNotFoundError

    try:
        model = _botocore().get_service_model(service)
        return model.operation_model(operation).input_shape
    except (UnknownServiceError, OperationNotFoundError):
        return None


@functools.cache
def _botocore() -> Any:
    import botocore.session

    return botocore.session.get_session()


def states_to_edit(definition: Mapping[str, Any]) -> list[str]:
    """The names of the states whose Comment says they must be edited before running."""
    out: list[str] = []
    for name, state in definition.get("States", {}).items():
        if str(state.get("Comment", "")).startswith(EDIT):
            out.append(name)
        for branch in state.get("Branches", []):
            out += states_to_edit(branch)
    return out


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
