"""Every AWS call an action makes is covered by the permissions it declares.

The calls are recorded through botocore's before-call event on every client the context
builds. Steps run one at a time here so each call is attributed to the step making it.
"""

from __future__ import annotations

from collections import defaultdict

import pytest

from containment.executor import plan_all, rollback_plan, run_plan
from containment.investigation_permissions import investigation_permissions
from containment.policy import CROSS_ACCOUNT_ACTION, policy_document
from containment.registry import all_actions, get_action


def attribute_calls(calls):
    def on_step(name: str, event: str, _result) -> None:
        if event == "started":
            calls.step = name

    return on_step


def uncovered(calls) -> dict[str, set[str]]:
    missing: dict[str, set[str]] = defaultdict(set)
    for call in calls.calls:
        assert call.step is not None, call
        if call.action not in get_action(call.step).permissions:
            missing[call.step].add(call.action)
    return dict(missing)


def test_instance_steps_and_rollbacks_call_only_what_they_declare(
    world, instance, make_ctx, calls
) -> None:
    ctx = make_ctx()
    names = [a.name for a in all_actions() if "instance" in a.kinds]  # optional ones too
    results = run_plan(
        target=instance, ctx=ctx, action_names=names, max_workers=1, on_step=attribute_calls(calls)
    )
    # flow_logs: moto refuses S3 flow-log delivery to a prefix; its calls are still checked.
    assert all(r.status == "succeeded" for n, r in results.items() if n != "flow_logs"), {
        n: r.error for n, r in results.items() if r.status != "succeeded"
    }
    assert "flow_logs" in {c.step for c in calls.calls}
    undone = rollback_plan(
        target=instance, ctx=ctx, results=results, max_workers=1, on_step=attribute_calls(calls)
    )
    assert all(r.status == "succeeded" for r in undone.values())
    ran = {c.step for c in calls.calls}
    assert {"capture", "protect", "isolate", "iam", "tag", "lb", "asg"} <= ran
    assert uncovered(calls) == {}


def test_access_key_steps_call_only_what_they_declare(world, access_key, make_ctx, calls):
    ctx = make_ctx()
    results = run_plan(target=access_key, ctx=ctx, max_workers=1, on_step=attribute_calls(calls))
    rollback_plan(
        target=access_key, ctx=ctx, results=results, max_workers=1, on_step=attribute_calls(calls)
    )
    assert {c.step for c in calls.calls} >= {"capture_key", "deactivate_key", "evidence"}
    assert uncovered(calls) == {}


def test_planning_reads_only_what_capture_and_the_action_declare(
    world, instance, make_ctx, calls
) -> None:
    ctx = make_ctx()
    names = [a.name for a in all_actions() if "instance" in a.kinds]
    plan_all(target=instance, ctx=ctx, action_names=names)
    allowed = {p for a in all_actions() if "instance" in a.kinds for p in a.permissions}
    assert calls.calls and all(c.is_read for c in calls.calls)
    assert {c.action for c in calls.calls} <= allowed


@pytest.mark.parametrize("action", all_actions(), ids=lambda a: a.name)
def test_declarations_are_well_formed(action) -> None:
    assert action.permissions, action.name
    assert all(p.count(":") == 1 and p.split(":")[1][:1].isupper() for p in action.permissions)
    assert len(set(action.permissions)) == len(action.permissions)


def test_policy_covers_every_declared_permission_and_cross_account() -> None:
    doc = policy_document()
    granted = {a for s in doc["Statement"] for a in s["Action"]}
    declared = {p for a in all_actions() for p in a.permissions}
    # The investigation commands (impact, trail, clean room, abuse, wipe) declare theirs apart.
    declared |= set(investigation_permissions())
    assert declared | {CROSS_ACCOUNT_ACTION} == granted
    general = doc["Statement"][0]["Action"]
    assert general == sorted(set(general))  # deduplicated, sorted
    assert "iam:PassRole" not in general  # scoped to the deny-all role instead
    assume = next(s for s in doc["Statement"] if s["Action"] == [CROSS_ACCOUNT_ACTION])
    assert assume["Condition"] == {"Null": {"sts:ExternalId": "false"}}
