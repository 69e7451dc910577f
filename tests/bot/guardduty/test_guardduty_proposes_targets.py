"""A high-severity finding on a bucket, a Lambda function or assumed-role credentials proposes
the matching containment plan, as an EC2 finding does."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import boto3
from sqlalchemy import select

from storage.models import ContainmentRequest, Incident, TimelineEvent
from tests.bot.guardduty.conftest import GuardDutyBot
from tests.bot.guardduty.test_guardduty_route import event
from tests.commands.findings.guardduty_fixtures import load_json, variant
from tests.containment.lambda_code import zipped_handler

Start = Callable[..., GuardDutyBot]
REGION = "us-east-1"


def s3_detail(**changes: Any) -> dict[str, Any]:
    detail = load_json("automated-response-sample__guardduty_s3_event.json")
    detail["resource"].pop("instanceDetails", None)
    detail["service"]["additionalInfo"] = {}
    return variant(
        detail,
        severity=8,
        region=REGION,
        accountId="123456789012",
        service__archived=False,
        **changes,
    )


def proposed(gd: GuardDutyBot) -> ContainmentRequest:
    gd.bot.slack.wait_for(
        "chat.postMessage", lambda c: "containment_approve" in str(c.args.get("blocks")), timeout=15
    )
    gd.bot.idle()
    with gd.bot.session() as session:
        return session.scalars(select(ContainmentRequest)).one()


def steps(request: ContainmentRequest) -> list[str]:
    return [s["action"] for s in request.plan["steps"]]


def test_a_bucket_finding_proposes_the_bucket_plan_naming_its_caller(guardduty_bot: Start):
    boto3.client("s3", region_name=REGION).create_bucket(Bucket="exposed-data")
    gd = guardduty_bot(propose=True)
    detail = s3_detail()
    detail["resource"]["s3BucketDetails"][0]["name"] = "exposed-data"
    assert gd.post(event(detail)).status_code == 200
    gd.settle()
    request = proposed(gd)
    assert request.plan["target"]["kind"] == "bucket"
    assert request.plan["target"]["resource_id"] == "exposed-data"
    # The finding's caller is the one the bucket policy will deny.
    assert request.plan["target"]["principals"] == [
        "arn:aws:iam::123456789012:user/GeneratedFindingUserName"
    ]
    assert steps(request) == [
        "capture_bucket",
        "evidence",
        "bucket_deny_principals",
        "bucket_block_public",
    ]


def test_a_lambda_finding_proposes_the_function_plan(guardduty_bot: Start):
    iam = boto3.client("iam")
    role = iam.create_role(RoleName="fn-role", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    boto3.client("lambda", region_name=REGION).create_function(
        FunctionName="resize",
        Runtime="python3.11",
        Role=role,
        Handler="handler.handle",
        Code={"ZipFile": zipped_handler()},
    )
    gd = guardduty_bot(propose=True)
    detail = s3_detail(type="Execution:Lambda/MaliciousFile", resource__resourceType="Lambda")
    detail["resource"]["lambdaDetails"] = {"functionName": "resize"}
    detail["resource"].pop("s3BucketDetails")
    assert gd.post(event(detail)).status_code == 200
    gd.settle()
    request = proposed(gd)
    assert (request.plan["target"]["kind"], request.plan["target"]["resource_id"]) == (
        "function",
        "resize",
    )
    assert "function_concurrency_zero" in steps(request)


def test_assumed_role_credentials_propose_the_role_plan(guardduty_bot: Start):
    boto3.client("iam").create_role(RoleName="app-role", AssumeRolePolicyDocument="{}")
    gd = guardduty_bot(propose=True)
    detail = s3_detail(
        type="UnauthorizedAccess:IAMUser/InstanceCredentialExfiltration.OutsideAWS",
        resource__resourceType="AccessKey",
        resource__accessKeyDetails={
            "accessKeyId": "ASIAEXAMPLEEXAMPLE12",
            "principalId": "AROAEXAMPLE:i-0abc",
            "userType": "AssumedRole",
            "userName": "app-role",
        },
    )
    detail["resource"].pop("s3BucketDetails")
    assert gd.post(event(detail)).status_code == 200
    gd.settle()
    request = proposed(gd)
    assert (request.plan["target"]["kind"], request.plan["target"]["resource_id"]) == (
        "role",
        "app-role",
    )
    assert steps(request) == ["capture_role", "evidence", "revoke_role_sessions"]


def test_root_credentials_get_a_checklist_on_the_timeline_and_no_plan(guardduty_bot: Start):
    gd = guardduty_bot(propose=True)
    detail = s3_detail(
        type="Policy:IAMUser/RootCredentialUsage",
        resource__resourceType="AccessKey",
        resource__accessKeyDetails={
            "accessKeyId": "ASIAEXAMPLEEXAMPLE99",
            "principalId": "123456789012",
            "userType": "Root",
            "userName": "Root",
        },
    )
    detail["resource"].pop("s3BucketDetails")
    assert gd.post(event(detail)).status_code == 200
    gd.settle()
    posted = gd.bot.slack.wait_for(
        "chat.postMessage", lambda c: "root credentials checklist" in str(c.args), timeout=15
    )
    gd.bot.idle()
    text = str(posted.args.get("blocks"))
    assert posted.args.get("thread_ts"), "the checklist goes in the incident's thread"
    for call in (
        "AccountMFAEnabled",
        "AccountAccessKeysPresent",
        "cloudtrail lookup-events",
        "AttributeValue=root",
    ):
        assert call in text, call
    with gd.bot.session() as session:
        assert session.scalars(select(ContainmentRequest)).all() == []
        incident = session.scalars(select(Incident)).one()
        events = session.scalars(
            select(TimelineEvent).where(TimelineEvent.kind == "containment.checklist")
        ).all()
        assert [json.loads(e.details)["items"] for e in events] == [
            ["mfa", "access_keys", "cloudtrail", "credentials"]
        ]
        assert "root credentials" in incident.facts["not_automatic"]["containment"]
