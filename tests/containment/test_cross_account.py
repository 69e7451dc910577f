"""Cross-account containment: AssumeRole into the member account with the external id."""

from __future__ import annotations

import boto3
import pytest

from containment.context import ActionContext
from containment.executor import run_plan
from containment.revoker.local import in_process_revoker
from containment.targets import Target
from tests.clock import TEST_CLOCK
from tests.containment import helpers as h
from tests.containment.conftest import CallLog
from tests.containment.world import REGION, build_world


def key_status(iam, user: str, key: str) -> str:
    keys = iam.list_access_keys(UserName=user)["AccessKeyMetadata"]
    return next(k["Status"] for k in keys if k["AccessKeyId"] == key)


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
        now=TEST_CLOCK.now,
        incident_key="INC-9",
        evidence_bucket="home-evidence",
        cross_account_role_name="IncidentBotResponder",
        external_id="ext-7f3a",
        client_hooks=(log.hook, in_process_revoker(TEST_CLOCK.now)),
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
    # The revoker ran in the member account, as the bot's Invoke went there.
    assert member_iam.list_user_policies(UserName="dev")["PolicyNames"] == [
        "incident-bot-revoke-sessions-INC-9"
    ]
    with pytest.raises(home_iam.exceptions.NoSuchEntityException):
        home_iam.get_user(UserName="dev")
    stored = [o["Key"] for o in s3.list_objects_v2(Bucket="home-evidence")["Contents"]]
    assert len(stored) == 2 and "incidents/INC-9/manifest.json" in stored


@pytest.mark.usefixtures("aws")
def test_cross_account_instance_is_contained_in_the_member_account() -> None:
    creds = boto3.client("sts", region_name=REGION).assume_role(
        RoleArn=f"arn:aws:iam::{MEMBER}:role/setup", RoleSessionName="fixture"
    )["Credentials"]
    member = boto3.Session(
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
        region_name=REGION,
    )
    world = build_world(member)
    ctx = ActionContext(
        now=TEST_CLOCK.now,
        incident_key="INC-10",
        cross_account_role_name="IncidentBotResponder",
        external_id="ext-7f3a",
        client_hooks=(CallLog().hook, in_process_revoker(TEST_CLOCK.now)),
    )
    target = Target(
        kind="instance", resource_id=world.instance_id, region=REGION, account_id=MEMBER
    )
    results = run_plan(target=target, ctx=ctx)
    assert all(r.status in ("succeeded", "skipped") for r in results.values()), results
    assert results["evidence"].note == "no evidence bucket configured"
    iso = h.group_by_name("incident-bot-isolation", world.vpc_id, member)
    assert h.eni_groups(world, member) == {eni: [iso["GroupId"]] for eni in world.enis}
    assert h.profile_arn(world, member) == (
        f"arn:aws:iam::{MEMBER}:instance-profile/incident-bot-deny-all"
    )
    home = boto3.client("ec2", region_name=REGION)
    assert (
        home.describe_security_groups(
            Filters=[{"Name": "group-name", "Values": ["incident-bot-isolation"]}]
        )["SecurityGroups"]
        == []
    )
