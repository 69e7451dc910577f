"""IAM role containment: sessions revoked, blast radius planned, optional deny-all."""

from __future__ import annotations

import json

import boto3

from commands.approvals.engine import ContainmentEngine
from containment.executor import rollback_plan, run_plan
from containment.targets import Target
from tests.containment.lambda_code import zipped_handler
from tests.containment.test_permissions import attribute_calls, uncovered
from tests.containment.world import REGION


def role_target(world) -> Target:
    return Target(kind="role", resource_id=world.role_name, region=REGION)


def add_function(world) -> str:
    arn = boto3.client("iam").get_role(RoleName=world.role_name)["Role"]["Arn"]
    boto3.client("lambda", region_name=REGION).create_function(
        FunctionName="resize",
        Runtime="python3.11",
        Role=arn,
        Handler="handler.handle",
        Code={"ZipFile": zipped_handler()},
    )
    return "resize"


def inline(world, name: str) -> dict:
    return boto3.client("iam").get_role_policy(RoleName=world.role_name, PolicyName=name)[
        "PolicyDocument"
    ]


def test_plan_shows_the_instances_and_functions_running_as_the_role(world, make_ctx, calls):
    add_function(world)
    plan = ContainmentEngine(include=("deny_all_role",)).plan(
        target=role_target(world), ctx=make_ctx()
    )
    assert plan.actions == [
        "capture_role",
        "evidence",
        "revoke_role_sessions",
        "deny_all_role",
    ]
    attached = plan.blast_radius["attached"]
    assert f"instance {world.instance_id} (runs as this role)" in attached
    assert "Lambda function resize (runs as this role)" in attached
    deny = plan.steps[-1].calls[0].text
    assert "stops 2 instance(s)/function(s)" in deny
    assert calls.calls and all(c.is_read for c in calls.calls)
    assert boto3.client("iam").list_role_policies(RoleName=world.role_name)["PolicyNames"] == []


def test_sessions_revoked_by_default_and_deny_all_only_when_asked(world, make_ctx, calls):
    results = run_plan(target=role_target(world), ctx=make_ctx())
    assert list(results) == ["capture_role", "evidence", "revoke_role_sessions"]
    assert all(r.status == "succeeded" for r in results.values()), results
    doc = inline(world, "incident-bot-revoke-sessions-INC-7")
    assert "aws:TokenIssueTime" in doc["Statement"][0]["Condition"]["DateLessThan"]
    assert results["capture_role"].evidence["instances"] == [world.instance_id]

    names = ["revoke_role_sessions", "deny_all_role"]
    more = run_plan(target=role_target(world), ctx=make_ctx(), action_names=names)
    assert more["revoke_role_sessions"].status == "skipped"  # already there: idempotent
    assert more["deny_all_role"].status == "succeeded"
    assert inline(world, "incident-bot-deny-all-INC-7")["Statement"][0]["Action"] == "*"

    calls.clear()
    again = run_plan(target=role_target(world), ctx=make_ctx(), action_names=names)
    assert all(not r.changes for r in again.values())
    assert calls.writes() == []

    undone = rollback_plan(target=role_target(world), ctx=make_ctx(), results=more)
    assert list(undone) == ["deny_all_role"] and undone["deny_all_role"].status == "succeeded"
    left = boto3.client("iam").list_role_policies(RoleName=world.role_name)["PolicyNames"]
    assert left == ["incident-bot-revoke-sessions-INC-7"]  # stolen sessions stay dead
    json.dumps([r.to_dict() for r in undone.values()])


def test_unknown_role_fails_capture(world, make_ctx) -> None:
    target = Target(kind="role", resource_id="no-such-role", region=REGION)
    results = run_plan(target=target, ctx=make_ctx())
    assert results["capture_role"].error["kind"] == "not_found"
    assert results["revoke_role_sessions"].blocked_by == ["capture_role"]


def test_role_steps_call_only_what_they_declare(world, make_ctx, calls) -> None:
    add_function(world)
    ctx = make_ctx()
    names = ["capture_role", "evidence", "revoke_role_sessions", "deny_all_role"]
    on_step = attribute_calls(calls)
    results = run_plan(
        target=role_target(world), ctx=ctx, action_names=names, max_workers=1, on_step=on_step
    )
    rollback_plan(
        target=role_target(world), ctx=ctx, results=results, max_workers=1, on_step=on_step
    )
    assert {c.step for c in calls.calls} >= set(names)
    assert uncovered(calls) == {}
