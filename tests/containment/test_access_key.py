"""Access-key containment (IAM findings), also across accounts via AssumeRole."""

from __future__ import annotations

import boto3
import pytest

from containment.context import ActionContext
from containment.executor import rollback_plan, run_plan
from containment.targets import Target
from tests.containment.conftest import CallLog
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
    policy = iam.get_user_policy(UserName=world.user_name,
                                 PolicyName="incident-bot-revoke-sessions-INC-7")
    cond = policy["PolicyDocument"]["Statement"][0]["Condition"]["DateLessThan"]
    assert "aws:TokenIssueTime" in cond
    captured = results["capture_key"].evidence
    assert captured["user_name"] == world.user_name  # found from the key alone
    assert "last_used" in captured and captured["status"] == "Active"
    assert results["evidence"].evidence["key"].startswith(
        f"incidents/INC-7/access_key/{world.access_key_id}/"
    )

    calls.clear()
    again = run_plan(target=access_key, ctx=make_ctx())
    assert all(not r.changes for r in again.values())
    assert [c.action for c in calls.writes()] == ["s3:PutObject"]

    undone = rollback_plan(target=access_key, ctx=make_ctx(), results=results)
    assert list(undone) == ["deactivate_key"] and undone["deactivate_key"].status == "succeeded"
    assert key_status(iam, world.user_name, world.access_key_id) == "Active"


def test_unknown_key_fails_capture(make_ctx) -> None:
    target = Target(kind="access_key", resource_id="AKIAAAAAAAAAAAAAAAAA", region=REGION)
    results = run_plan(target=target, ctx=make_ctx())
    assert results["capture_key"].status == "failed"
    assert results["deactivate_key"].blocked_by == ["capture_key"]


MEMBER = "222222222222"


@pytest.mark.usefixtures("aws")
def test_cross_account_assumes_the_role_with_the_external_id() -> None:
    home_iam = boto3.client("iam", region_name=REGION)
    s3 = boto3.client("s3", region_name=REGION)
    s3.create_bucket(Bucket="home-evidence")
    creds = boto3.client("sts", region_name=REGION).assume_role(
        RoleArn=f"arn:aws:iam::{MEMBER}:role/setup", RoleSessionName="fixture"
    )["Credentials"]
    member = boto3.Session(
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
        region_name=REGION,
    )
    member_iam = member.client("iam")
    member_iam.create_user(UserName="dev")
    key = member_iam.create_access_key(UserName="dev")["AccessKey"]["AccessKeyId"]

    log = CallLog()
    ctx = ActionContext(
        incident_key="INC-9",
        evidence_bucket="home-evidence",
        cross_account_role_name="IncidentBotResponder",
        external_id="ext-7f3a",
        client_hooks=(log.hook,),
    )
    target = Target(kind="access_key", resource_id=key, region=REGION, account_id=MEMBER)
    results = run_plan(target=target, ctx=ctx)
    assert all(r.status == "succeeded" for r in results.values()), results

    assume = [c for c in log.calls if c.operation == "AssumeRole"]
    assert len(assume) == 1  # credentials are cached for the whole containment
    assert assume[0].params["RoleArn"] == f"arn:aws:iam::{MEMBER}:role/IncidentBotResponder"
    assert assume[0].params["ExternalId"] == "ext-7f3a"
    assert assume[0].params["RoleSessionName"] == "incident-bot-INC-9"
    # The key lives, and was deactivated, in the member account; evidence went home.
    assert key_status(member_iam, "dev", key) == "Inactive"
    with pytest.raises(home_iam.exceptions.NoSuchEntityException):
        home_iam.get_user(UserName="dev")
    assert s3.list_objects_v2(Bucket="home-evidence")["KeyCount"] == 1
