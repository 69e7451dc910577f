"""S3 bucket containment: evidence, a deny for the finding's principals, Block Public Access;
rollback restores the exact previous policy and settings."""

from __future__ import annotations

import json

import boto3
import pytest

from commands.approvals.engine import ContainmentEngine
from containment.executor import rollback_plan, run_plan
from containment.targets import Target
from tests.containment.test_permissions import attribute_calls, uncovered
from tests.containment.world import REGION

BUCKET = "exposed-data"
THIEF = "arn:aws:iam::123456789012:user/ci-deployer"
# Spacing and key order as the owner wrote it: rollback must give back these very bytes.
OWN_POLICY = (
    '{"Version":"2012-10-17","Statement":[{"Sid":"PublicRead","Effect":"Allow",'
    '"Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::exposed-data/*"}]}'
)
PARTIAL_BLOCK = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": False,
    "BlockPublicPolicy": False,
    "RestrictPublicBuckets": False,
}


@pytest.fixture
def s3(world):
    client = boto3.client("s3", region_name=REGION)
    client.create_bucket(Bucket=BUCKET)
    return client


def target(*principals: str) -> Target:
    return Target(kind="bucket", resource_id=BUCKET, region=REGION, principals=principals)


def test_plan_reads_only_and_names_the_principals(s3, make_ctx, calls) -> None:
    s3.put_bucket_policy(Bucket=BUCKET, Policy=OWN_POLICY)
    plan = ContainmentEngine().plan(target=target(THIEF), ctx=make_ctx())
    assert plan.actions == [
        "capture_bucket",
        "evidence",
        "bucket_deny_principals",
        "bucket_block_public",
    ]
    assert THIEF in plan.steps[2].calls[0].text
    assert f"principals to deny: {THIEF}" in plan.blast_radius["attached"]
    assert all(c.is_read for c in calls.calls)
    assert s3.get_bucket_policy(Bucket=BUCKET)["Policy"] == OWN_POLICY


def test_bucket_is_contained_and_restored_exactly(s3, make_ctx, calls) -> None:
    s3.put_bucket_policy(Bucket=BUCKET, Policy=OWN_POLICY)
    s3.put_public_access_block(Bucket=BUCKET, PublicAccessBlockConfiguration=PARTIAL_BLOCK)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    results = run_plan(target=target(THIEF), ctx=make_ctx())
    assert all(r.status == "succeeded" for r in results.values()), {
        n: r.error for n, r in results.items()
    }
    block = s3.get_public_access_block(Bucket=BUCKET)["PublicAccessBlockConfiguration"]
    assert all(block.values())
    stmts = json.loads(s3.get_bucket_policy(Bucket=BUCKET)["Policy"])["Statement"]
    assert stmts[0]["Sid"] == "PublicRead"  # the owner's statements are kept
    deny = stmts[-1]
    assert deny["Effect"] == "Deny" and deny["Condition"]["ArnLike"]["aws:PrincipalArn"] == [THIEF]
    captured = results["capture_bucket"].evidence
    assert captured["policy"] == OWN_POLICY and captured["public_access_block"] == PARTIAL_BLOCK
    assert captured["versioning"]["Status"] == "Enabled" and "Grants" in captured["acl"]

    calls.clear()
    again = run_plan(target=target(THIEF), ctx=make_ctx())
    assert all(not r.changes for r in again.values())
    # Evidence only (a new capture also adds its hash to the manifest).
    assert {c.action for c in calls.writes()} == {"s3:PutObject"}  # evidence, refused

    undone = rollback_plan(target=target(THIEF), ctx=make_ctx(), results=results)
    assert list(undone) == ["bucket_block_public", "bucket_deny_principals"]
    assert s3.get_bucket_policy(Bucket=BUCKET)["Policy"] == OWN_POLICY
    restored = s3.get_public_access_block(Bucket=BUCKET)["PublicAccessBlockConfiguration"]
    assert restored == PARTIAL_BLOCK


def test_what_did_not_exist_is_removed_on_rollback(s3, make_ctx) -> None:
    results = run_plan(target=target(THIEF), ctx=make_ctx())
    assert results["bucket_deny_principals"].changes["policy"]["before"] is None
    rollback_plan(target=target(THIEF), ctx=make_ctx(), results=results)
    with pytest.raises(s3.exceptions.ClientError, match="NoSuchBucketPolicy"):
        s3.get_bucket_policy(Bucket=BUCKET)
    with pytest.raises(s3.exceptions.ClientError, match="NoSuchPublicAccessBlock"):
        s3.get_public_access_block(Bucket=BUCKET)


def test_without_principals_only_public_access_is_blocked(s3, make_ctx) -> None:
    results = run_plan(target=target(), ctx=make_ctx())
    assert results["bucket_deny_principals"].status == "skipped"
    assert results["bucket_block_public"].status == "succeeded"
    with pytest.raises(s3.exceptions.ClientError, match="NoSuchBucketPolicy"):
        s3.get_bucket_policy(Bucket=BUCKET)


def test_unknown_bucket_fails_capture(world, make_ctx) -> None:
    results = run_plan(target=target(THIEF), ctx=make_ctx())
    assert results["capture_bucket"].status == "failed"
    assert results["bucket_block_public"].blocked_by == ["capture_bucket"]


def test_bucket_steps_call_only_what_they_declare(s3, make_ctx, calls) -> None:
    s3.put_bucket_policy(Bucket=BUCKET, Policy=OWN_POLICY)
    ctx = make_ctx()
    on_step = attribute_calls(calls)
    results = run_plan(target=target(THIEF), ctx=ctx, max_workers=1, on_step=on_step)
    rollback_plan(target=target(THIEF), ctx=ctx, results=results, max_workers=1, on_step=on_step)
    assert {c.step for c in calls.calls} >= {
        "capture_bucket",
        "bucket_deny_principals",
        "bucket_block_public",
    }
    assert uncovered(calls) == {}
