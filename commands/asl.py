"""A containment plan as an AWS Step Functions state machine (Amazon States Language).

The fallback for when the bot is down: the same calls, in the same order, run by Step
Functions' AWS SDK integrations. The machine starts with a manual-approval step (SNS publish
with a task token, `.waitForTaskToken`) so nothing changes until a person sends the token
back; then the plan's steps run, steps that do not depend on each other in Parallel branches.
Only the plan's changing calls become states: its reads (describe/get/list) were the bot's
capture, whose results the plan already recorded. Calls send the SDK parameters the plan
recorded (`sdk`, where the card only summarises them). Values known only at run time are
filled by the machine: the ids of the security groups and snapshots it creates (kept under
`$.created`, for `<X group>` and `<new snapshots>`), the incident's own KMS key (found by its
alias or created and aliased as the bot does, `$.created.key`, for `<incident key id>` and
`<incident key arn>`: commands/asl_key.py, which also says what a retry does), the time a
state runs (`<now>`, from
`$$.State.EnteredTime`), the capture an evidence object holds (`<capture>`: the capture
step's first read, run just before); an Object Lock retention date is fixed at export (export
time + the retention days), and the lock is sent only when the bucket has Object Lock enabled
(a Choice on GetObjectLockConfiguration, as the bot decides). A call whose parameters still
cannot be sent (a plan stored before `sdk` was recorded, an unknown placeholder) says EDIT
BEFORE RUNNING in its Comment.

Execution input: `{"approval_topic_arn": "arn:aws:sns:..."}`, the topic that carries the
approval request (and its task token) to the responders.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from commands.approvals.plans import Plan
from commands.asl_key import key_states
from commands.asl_runtime import (
    CAPTURE_SHA256,
    KEY,
    KEY_ID,
    NEW_SNAPSHOTS,
    NOW,
    SNAPSHOTS,
    PlaceholderFiller,
)
from commands.asl_sdk import EDIT, call_comment, quote, recorded, sdk_resource
from commands.errors import NotFound
from storage.models import ContainmentRequest, Incident

# Plans whose steps are containment calls (forensics and wipe plans have another shape).
CALL_PLAN_KINDS = ("contain", "retry", "rollback")
# The request reached (or passed) a second responder's approval.
APPROVED = ("approved", "running", "succeeded", "partial", "failed", "interrupted", "rolled_back")

APPROVAL_STATE = "Approve changes"
APPROVAL_TIMEOUT_SECONDS = 24 * 3600
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


def export_asl(*, session: Session, incident: Incident, now: dt.datetime) -> str:
    """The ASL JSON of the incident's approved (or latest) containment plan."""
    request = plan_request(session=session, incident=incident)
    return json.dumps(
        state_machine(
            Plan.from_json(request.plan),
            incident_key=incident.key,
            now=now,
            request_id=request.id,
            # Undo steps are stored newest first; run them one after another.
            sequential=request.kind == "rollback",
        ),
        indent=2,
    )


def state_machine(
    typed: Plan | Mapping[str, Any],
    *,
    incident_key: str,
    now: dt.datetime,
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
    reads = {
        s["action"]: [c for c in s.get("calls", []) if not c.get("mutating", True)]
        for s in plan.get("steps", [])
    }
    run = PlaceholderFiller(now=now, reads=reads)
    states: dict[str, Any] = {}
    # After the approval the state data is {"created": {...}}: the ids of groups made so far.
    chain: list[tuple[str, dict[str, Any]]] = [
        (
            names.unique("Start"),
            {
                "Type": "Pass",
                "Comment": "What the plan creates (groups, snapshots, key) is kept under "
                "$.created.",
                "Parameters": {"created": {}},
            },
        )
    ]
    made: list[str] = []  # the groups created so far, in the order they are
    for index, layer in enumerate(layers, start=1):
        if len(layer) == 1:
            chain.extend(_step_states(layer[0], names, wired, run))
            made += _creates(layer[0], wired)
            continue
        branches = []
        # Each branch returns {"created": ...}: keep what was there and what each one made.
        where = dict.fromkeys(made, 0)
        for i, step in enumerate(layer):
            sub = _step_states(step, names, wired, run)
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
                + quote(f"{target.get('resource_id', '?')} ({incident_key}, {what})")
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


_NEXT = "<next state>"  # a Catch's Next, set by _linked to the state that follows
_DONE = "done"


def _linked(states: Sequence[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """States in sequence: each one's Next is the following one; the last one ends (a Catch
    that goes on from the last state goes to a final Succeed state)."""
    out: dict[str, Any] = {}
    for i, (name, state) in enumerate(states):
        after = states[i + 1][0] if i + 1 < len(states) else None
        if "Catch" in state:
            catches = [
                {**c, "Next": after or _DONE} if c.get("Next") == _NEXT else c
                for c in state["Catch"]
            ]
            state = {**state, "Catch": catches}
            if after is None:
                out[_DONE] = {"Type": "Succeed"}
        out[name] = {**state, "Next": after} if after else {**state, "End": True}
    return out


def _step_states(
    step: Mapping[str, Any], names: _Names, wired: Mapping[int, str], run: PlaceholderFiller
) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    known = set(wired.values())
    aliased: set[int] = set()  # CreateAlias calls the incident key's states already make
    for call in step["calls"]:
        service, operation = call.get("service"), call.get("operation")
        if not service or not operation:
            raise ValueError(f"step {step.get('action')!r} has a call without service/operation")
        if id(call) in aliased:
            continue
        if wired.get(id(call)) == KEY:
            alias = _alias_of(step)
            aliased.add(id(alias))
            out.append(key_states(step, recorded(call), recorded(alias), names))
            continue
        for params in _split_new_snapshots(recorded(call), known):
            params, documents = _documents_at_run_time(step, params, names, run, known)
            out.extend(documents)
            sent = run.fill(params, known) if params is not None else None
            task: dict[str, Any] = {
                "Type": "Task",
                "Comment": call_comment(step, call, sent),
                "Resource": sdk_resource(service, operation),
                "Parameters": sent or {},
                "ResultPath": None,
            }
            if id(call) in wired:
                kind = wired[id(call)]
                task["ResultSelector"] = (
                    {"SnapshotIds.$": "$.Snapshots[*].SnapshotId"}
                    if kind == SNAPSHOTS
                    else {"GroupId.$": "$.GroupId"}
                )
                task["ResultPath"] = f"$.created.{kind}"
            if _writes_manifest(service, operation, sent):
                # Never over the bot's own manifest (If-None-Match): the refusal is kept in
                # $.not_written and the machine goes on.
                task["Catch"] = [
                    {"ErrorEquals": ["States.ALL"], "ResultPath": "$.not_written", "Next": _NEXT}
                ]
            name = names.unique(f"{step['action']} {service}.{operation}")
            if _locks_evidence(service, operation, sent):
                out.append((name, _evidence_put(step, task, names, run)))
            else:
                out.append((name, task))
    return out


def _split_new_snapshots(
    params: Mapping[str, Any] | None, known: set[str]
) -> list[Mapping[str, Any] | None]:
    """A call naming `<new snapshots>` among its Resources becomes two: the named resources,
    and the snapshots the machine made ($.created.snapshots), as no intrinsic joins arrays."""
    resources = (params or {}).get("Resources")
    if not isinstance(resources, list) or NEW_SNAPSHOTS not in resources:
        return [params]
    rest = {**params, "Resources": [r for r in resources if r != NEW_SNAPSHOTS]}  # type: ignore[dict-item]
    if SNAPSHOTS not in known:
        return [rest]
    made = {k: v for k, v in rest.items() if k != "Resources"}
    made["Resources.$"] = f"$.created.{SNAPSHOTS}.SnapshotIds"
    return [rest, made]


def _documents_at_run_time(
    step: Mapping[str, Any],
    params: Mapping[str, Any] | None,
    names: _Names,
    run: PlaceholderFiller,
    known: set[str],
) -> tuple[Mapping[str, Any] | None, list[tuple[str, dict[str, Any]]]]:
    """A JSON document parameter with the run time inside (a policy's condition): a Pass
    state builds it as an object (`<now>` from `$$.State.EnteredTime`) and the call sends it
    as a string (States.JsonToString)."""
    if params is None:
        return params, []
    out = dict(params)
    states: list[tuple[str, dict[str, Any]]] = []
    for key, value in params.items():
        if not (
            isinstance(value, str)
            and (NOW in value or CAPTURE_SHA256 in value)
            and value.lstrip().startswith("{")
        ):
            continue
        path = "$.documents." + re.sub(r"\W", "_", key)
        states.append(
            (
                names.unique(f"{step['action']} {key} at run time"),
                {
                    "Type": "Pass",
                    "Comment": f"{key}, with the time this runs in it",
                    "Parameters": run.fill(json.loads(value), known),
                    "ResultPath": path,
                },
            )
        )
        del out[key]
        out[f"{key}.$"] = f"States.JsonToString({path})"
    return out, states


def _writes_manifest(service: str, operation: str, sent: Mapping[str, Any] | None) -> bool:
    key = str((sent or {}).get("Key", ""))
    return (service, operation) == ("s3", "PutObject") and key.endswith("/manifest.json")


def _locks_evidence(service: str, operation: str, sent: Mapping[str, Any] | None) -> bool:
    return (service, operation) == ("s3", "PutObject") and "ObjectLockMode" in (sent or {})


def _evidence_put(
    step: Mapping[str, Any], put: dict[str, Any], names: _Names, run: PlaceholderFiller
) -> dict[str, Any]:
    """The evidence write as the bot does it: read the capture, then put it, under Object Lock
    only when the bucket has Object Lock enabled. One Parallel of one branch, so its own
    Choice can end both ways."""
    params = dict(put["Parameters"])
    bucket = params["Bucket"]
    states: list[tuple[str, dict[str, Any]]] = []
    capture = run.capture_read(step)
    if capture is not None:
        states.append((names.unique(f"{step['action']} capture"), capture))
    elif any(str(v).endswith("($.capture)") for v in params.values()):
        put = {**put, "Comment": f"{EDIT}: no capture read to take the body from: {put['Comment']}"}
    check = names.unique(f"{step['action']} Object Lock?")
    locked = names.unique(f"{step['action']} put, locked")
    unlocked = names.unique(f"{step['action']} put, not locked")
    plain = {
        k: v for k, v in params.items() if k not in ("ObjectLockMode", "ObjectLockRetainUntilDate")
    }
    enabled = "$.lock.ObjectLockConfiguration.ObjectLockEnabled"
    branch: dict[str, Any] = {
        check: {
            "Type": "Task",
            "Comment": "Object Lock only where the bucket has it enabled (else: not locked)",
            "Resource": sdk_resource("s3", "GetObjectLockConfiguration"),
            "Parameters": {"Bucket": bucket},
            "ResultPath": "$.lock",
            "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.lock", "Next": unlocked}],
            "Next": f"{check} choice",
        },
        f"{check} choice": {
            "Type": "Choice",
            "Choices": [
                {
                    "And": [
                        {"Variable": enabled, "IsPresent": True},
                        {"Variable": enabled, "StringEquals": "Enabled"},
                    ],
                    "Next": locked,
                }
            ],
            "Default": unlocked,
        },
        locked: {**put, "Parameters": params, "End": True},
        unlocked: {
            **put,
            "Comment": f"{put['Comment']} (NOT LOCKED: the bucket has no Object Lock)",
            "Parameters": plain,
            "End": True,
        },
    }
    names.used.add(f"{check} choice")
    start = check
    out: dict[str, Any] = {"Type": "Parallel", "Comment": put["Comment"], "ResultPath": None}
    if states:
        ((name, read),) = states
        # The body as text once, and its SHA-256 from that same text: what the put stores is
        # what the manifest records ($.evidence.sha256, after this state).
        digest = names.unique(f"{step['action']} body and SHA-256")
        branch = {
            name: {**read, "Next": digest},
            digest: {
                "Type": "Pass",
                "Comment": "the evidence body as stored, and its SHA-256 for the manifest",
                "Parameters": {
                    "body.$": "States.JsonToString($.capture)",
                    "sha256.$": "States.Hash(States.JsonToString($.capture), 'SHA-256')",
                },
                "ResultPath": "$.stored",
                "Next": check,
            },
            **{
                k: _body_from_stored(v) if k in (locked, unlocked) else v for k, v in branch.items()
            },
        }
        start = name
        out["ResultSelector"] = {"sha256.$": "$[0].stored.sha256"}
        out["ResultPath"] = "$.evidence"
    return {**out, "Branches": [{"StartAt": start, "States": branch}]}


def _body_from_stored(state: dict[str, Any]) -> dict[str, Any]:
    params = dict(state["Parameters"])
    if params.get("Body.$") == "States.JsonToString($.capture)":
        params["Body.$"] = "$.stored.body"
    return {**state, "Parameters": params}


_NEW_GROUP = re.compile(r"^<new (\w+) group>$")


def _alias_of(step: Mapping[str, Any]) -> Mapping[str, Any]:
    """The step's CreateAlias call, which names the key its CreateKey makes."""
    for call in step["calls"]:
        if (call.get("service"), call.get("operation")) == ("kms", "CreateAlias"):
            return call
    raise ValueError(f"step {step.get('action')!r} makes a key but names no alias for it")


def _created_groups(steps: Sequence[Mapping[str, Any]]) -> dict[int, str]:
    """The CreateSecurityGroup calls (by id()) whose group a later call of the same step names
    `<new X group>`, each with its X. An X created more than once (several VPCs) is left out:
    which group a later `<X group>` means is then unknown. A CreateSnapshots call, when a
    later call names `<new snapshots>`, keeps its snapshot ids under `snapshots`; a CreateKey
    whose step aliases the key it makes keeps `{KeyId, Arn}` under `key`."""
    keyed: dict[int, str] = {}
    wants_snapshots = any(NEW_SNAPSHOTS in _strings(recorded(c)) for s in steps for c in s["calls"])
    for step in steps:
        create: Mapping[str, Any] | None = None
        for call in step["calls"]:
            pair = (call.get("service"), call.get("operation"))
            if pair == ("ec2", "CreateSnapshots") and wants_snapshots:
                keyed[id(call)] = SNAPSHOTS
                continue
            if pair == ("kms", "CreateKey") and _names_the_key(step):
                keyed[id(call)] = KEY
                continue
            if pair == ("ec2", "CreateSecurityGroup"):
                create = call
                continue
            for value in _strings(recorded(call)):
                match = _NEW_GROUP.match(value)
                if match and create is not None:
                    keyed.setdefault(id(create), match[1])
    counts: dict[str, int] = {}
    for key in keyed.values():
        counts[key] = counts.get(key, 0) + 1
    return {call: key for call, key in keyed.items() if counts[key] == 1}


def _names_the_key(step: Mapping[str, Any]) -> bool:
    """The step's CreateAlias names the key CreateKey makes (as the evidence step records
    it), so the key's states can make both."""
    try:
        alias = recorded(_alias_of(step))
    except ValueError:
        return False
    return isinstance(alias, Mapping) and alias.get("TargetKeyId") == KEY_ID


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
