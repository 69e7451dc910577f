"""Access-key containment (IAM findings)."""

from __future__ import annotations

import boto3

from containment.executor import rollback_plan, run_plan
from containment.targets import Target
from tests.containment.world import REGION


def key_status(iam, user: str, key: str) -> str:
    keys = iam.list_access_keys(UserName=user)["AccessKeyMetadata"]
    return next(k["Status"] for k in keys if k["AccessKeyId"] == key)


def test_key_is_deactivated_sessions_revoked_and_last_use_recorded(
    world, access_key, make_ctx, calls
) -> None:
    results = run_plan(target=access_key, ctx=make_ctx())
    assert list(results) == ["capture_key", "evidence", "deactivate_key", "revoke_user_sessions"]
    assert all(r.status == "succeeded" for r in results.values()), results
    iam = boto3.client("iam", region_name=REGION)
    assert key_status(iam, world.user_name, world.access_key_id) == "Inactive"
    policy = iam.get_user_policy(
        UserName=world.user_name, PolicyName="incident-bot-revoke-sessions-INC-7"
    )
    cond = policy["PolicyDocument"]["Statement"][0]["Condition"]["DateLessThan"]
    assert "aws:TokenIssueTime" in cond
    captured = results["capture_key"].evidence
    assert captured["user_name"] == world.user_name  # found from the key alone
    assert "last_used" in captured and captured["status"] == "Active"
    assert (
        results["evidence"]
        .evidence["key"]
        .startswith(f"incidents/INC-7/access_key/{world.access_key_id}/")
    )

    calls.clear()
    again = run_plan(target=access_key, ctx=make_ctx())
    assert all(not r.changes for r in again.values())
    # Evidence only (a new capture also adds its hash to the manifest).
    assert {c.action for c in calls.writes()} == {"s3:PutObject"}

    undone = rollback_plan(target=access_key, ctx=make_ctx(), results=results)
    assert list(undone) == ["deactivate_key"] and undone["deactivate_key"].status == "succeeded"
    assert key_status(iam, world.user_name, world.access_key_id) == "Active"


def test_unknown_key_fails_capture(make_ctx) -> None:
    target = Target(kind="access_key", resource_id="AKIAAAAAAAAAAAAAAAAA", region=REGION)
    results = run_plan(target=target, ctx=make_ctx())
    assert results["capture_key"].status == "failed"
    assert results["deactivate_key"].blocked_by == ["capture_key"]
