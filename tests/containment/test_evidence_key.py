"""Evidence under the incident's own KMS key: scheduling its deletion shreds that evidence."""

from __future__ import annotations

import boto3

from containment.actions.evidence import StoreEvidence
from containment.executor import run_plan
from containment.tags import INCIDENT_TAG

REGION = "us-east-1"


def test_evidence_is_encrypted_under_a_key_made_for_the_incident(
    world, instance, make_ctx, calls
) -> None:
    ctx = make_ctx(evidence_kms_key_id=None, evidence_key_per_incident=True)
    results = run_plan(target=instance, ctx=ctx, action_names=["evidence"])
    ev = results["evidence"]
    assert ev.status == "succeeded", ev.error
    kms = boto3.client("kms", region_name=REGION)
    key = kms.describe_key(KeyId="alias/incident-bot/INC-7")["KeyMetadata"]
    assert ev.evidence["kms_key_id"].endswith(key["KeyId"])
    tags = {t["TagKey"]: t["TagValue"] for t in kms.list_resource_tags(KeyId=key["KeyId"])["Tags"]}
    assert tags[INCIDENT_TAG] == "INC-7"
    head = boto3.client("s3", region_name=REGION).head_object(
        Bucket=ev.evidence["bucket"], Key=ev.evidence["key"]
    )
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"].endswith(key["KeyId"])
    # Every call the step made is declared, so the generated policy allows it.
    declared = set(StoreEvidence.permissions)
    made = {c.action for c in calls.calls if c.step in (None, "evidence")}
    kms_and_s3 = {a for a in made if a.split(":")[0] in ("kms", "s3")}
    assert kms_and_s3 <= declared, kms_and_s3 - declared


def test_a_second_run_reuses_the_incidents_key(world, instance, make_ctx) -> None:
    ctx = make_ctx(evidence_kms_key_id=None, evidence_key_per_incident=True)
    run_plan(target=instance, ctx=ctx, action_names=["evidence"])
    run_plan(
        target=instance,
        ctx=make_ctx(evidence_kms_key_id=None, evidence_key_per_incident=True),
        action_names=["evidence"],
    )
    kms = boto3.client("kms", region_name=REGION)
    aliases = [
        a for a in kms.list_aliases()["Aliases"] if a["AliasName"].startswith("alias/incident-bot/")
    ]
    assert len(aliases) == 1
    live = [
        k
        for k in kms.list_keys()["Keys"]
        if kms.describe_key(KeyId=k["KeyId"])["KeyMetadata"]["KeyState"] == "Enabled"
        and any(
            t["TagKey"] == INCIDENT_TAG for t in kms.list_resource_tags(KeyId=k["KeyId"])["Tags"]
        )
    ]
    assert len(live) == 1


def test_a_configured_key_wins_and_no_key_is_made(world, instance, make_ctx) -> None:
    ctx = make_ctx(evidence_key_per_incident=True)  # the fixture configures world.kms_key_id
    plan = StoreEvidence().calls(instance, ctx, {})
    assert [c.operation for c in plan] == ["GetObjectLockConfiguration", "PutObject", "PutObject"]
    run_plan(target=instance, ctx=ctx, action_names=["evidence"])
    kms = boto3.client("kms", region_name=REGION)
    assert not [
        a for a in kms.list_aliases()["Aliases"] if a["AliasName"].startswith("alias/incident-bot/")
    ]


def test_the_plan_names_the_key_calls(world, instance, make_ctx) -> None:
    ctx = make_ctx(evidence_kms_key_id=None, evidence_key_per_incident=True)
    plan = [str(c) for c in StoreEvidence().calls(instance, ctx, {})]
    assert plan[0].startswith("kms.DescribeKey(KeyId=alias/incident-bot/INC-7")
    assert plan[1].startswith("kms.CreateKey(")
    assert "this incident's own key" in plan[-2]
    assert "manifest.json" in plan[-1]
