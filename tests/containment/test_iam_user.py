"""IAM user containment: every key off, console password gone, sessions revoked."""

from __future__ import annotations

import boto3
import pytest

from containment.actions.iam_user import HUMAN_RESET
from containment.executor import plan_all, rollback_plan, run_plan
from containment.targets import Target
from tests.containment.test_permissions import attribute_calls, uncovered
from tests.containment.world import REGION

USER = "build-bot"
READ_ONLY = (
    '{"Version": "2012-10-17", "Statement": '
    '[{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}'
)


@pytest.fixture
def user(world) -> dict:
    iam = boto3.client("iam", region_name=REGION)
    iam.create_user(UserName=USER)
    keys = [iam.create_access_key(UserName=USER)["AccessKey"]["AccessKeyId"] for _ in range(2)]
    iam.update_access_key(UserName=USER, AccessKeyId=keys[1], Status="Inactive")
    iam.create_login_profile(UserName=USER, Password="Correct-horse-1")
    iam.create_group(GroupName="deployers")
    iam.add_user_to_group(GroupName="deployers", UserName=USER)
    arn = iam.create_policy(PolicyName="deploy", PolicyDocument=READ_ONLY)["Policy"]["Arn"]
    iam.attach_user_policy(UserName=USER, PolicyArn=arn)
    return {"iam": iam, "active": keys[0], "inactive": keys[1]}


def statuses(iam) -> dict[str, str]:
    return {
        k["AccessKeyId"]: k["Status"]
        for k in iam.list_access_keys(UserName=USER)["AccessKeyMetadata"]
    }


def target() -> Target:
    return Target(kind="user", resource_id=USER, region=REGION)


def test_plan_lists_the_calls_and_changes_nothing(user, make_ctx, calls) -> None:
    plan = dict(
        (a.name, [str(c) for c in cs]) for a, cs in plan_all(target=target(), ctx=make_ctx())
    )
    assert list(plan) == [
        "capture_user",
        "evidence",
        "deactivate_user_keys",
        "delete_login_profile",
        "revoke_user_sessions_all",
    ]
    assert (
        len(plan["deactivate_user_keys"]) == 1 and user["active"] in plan["deactivate_user_keys"][0]
    )
    assert plan["delete_login_profile"] == [f"iam.DeleteLoginProfile(UserName={USER})"]
    assert all(c.is_read for c in calls.calls)
    assert statuses(user["iam"])[user["active"]] == "Active"


def test_user_is_contained_idempotently_and_rolled_back(user, make_ctx, calls) -> None:
    iam = user["iam"]
    created = iam.get_login_profile(UserName=USER)["LoginProfile"]["CreateDate"]
    results = run_plan(target=target(), ctx=make_ctx())
    assert all(r.status == "succeeded" for r in results.values()), {
        n: r.error for n, r in results.items()
    }
    assert set(statuses(iam).values()) == {"Inactive"}
    with pytest.raises(iam.exceptions.NoSuchEntityException):
        iam.get_login_profile(UserName=USER)
    doc = iam.get_user_policy(UserName=USER, PolicyName="incident-bot-revoke-sessions-INC-7")
    stmt = doc["PolicyDocument"]["Statement"][0]
    assert stmt["Effect"] == "Deny" and "aws:TokenIssueTime" in stmt["Condition"]["DateLessThan"]
    # Evidence first: the password's creation time, policies and groups, all kept attached.
    captured = results["capture_user"].evidence
    assert captured["login_profile"]["CreateDate"] == created.isoformat()
    assert captured["groups"] == ["deployers"]
    assert iam.list_attached_user_policies(UserName=USER)["AttachedPolicies"]
    assert results["evidence"].evidence["key"].startswith(f"incidents/INC-7/user/{USER}/")
    assert results["deactivate_user_keys"].changes == {"keys": {user["active"]: "Active"}}

    calls.clear()
    again = run_plan(target=target(), ctx=make_ctx())
    assert all(not r.changes for r in again.values())
    # Evidence only (a new capture also adds its hash to the manifest).
    assert {c.action for c in calls.writes()} == {"s3:PutObject"}  # refused: never overwritten

    undone = rollback_plan(target=target(), ctx=make_ctx(), results=results)
    assert set(undone) == {"deactivate_user_keys", "delete_login_profile"}
    assert statuses(iam) == {user["active"]: "Active", user["inactive"]: "Inactive"}
    assert undone["delete_login_profile"].note == HUMAN_RESET
    assert undone["delete_login_profile"].changes["human_action"] == HUMAN_RESET


def test_a_user_without_password_or_keys_needs_only_the_session_deny(world, make_ctx) -> None:
    boto3.client("iam", region_name=REGION).create_user(UserName=USER)
    results = run_plan(target=target(), ctx=make_ctx())
    assert results["deactivate_user_keys"].status == "skipped"
    assert results["delete_login_profile"].status == "skipped"
    assert results["revoke_user_sessions_all"].status == "succeeded"


def test_unknown_user_fails_capture_and_blocks_the_rest(world, make_ctx) -> None:
    results = run_plan(target=target(), ctx=make_ctx())
    assert results["capture_user"].error["kind"] == "not_found"
    assert results["deactivate_user_keys"].blocked_by == ["capture_user"]


def test_user_steps_call_only_what_they_declare(user, make_ctx, calls) -> None:
    ctx = make_ctx()
    results = run_plan(target=target(), ctx=ctx, max_workers=1, on_step=attribute_calls(calls))
    rollback_plan(
        target=target(), ctx=ctx, results=results, max_workers=1, on_step=attribute_calls(calls)
    )
    assert {c.step for c in calls.calls} >= {
        "capture_user",
        "deactivate_user_keys",
        "delete_login_profile",
        "revoke_user_sessions_all",
    }
    assert uncovered(calls) == {}
