"""RDS DB instance containment: snapshot, evidence, isolation group, not publicly accessible;
rollback restores groups and accessibility and keeps the snapshot."""

from __future__ import annotations

import boto3
import pytest

from commands.approvals.engine import ContainmentEngine
from containment.actions.rds_instance import (
    OPEN_CONNECTIONS,
    CaptureDbInstance,
    SnapshotDbInstance,
)
from containment.executor import rollback_plan, run_plan
from containment.registry import RunState
from containment.targets import Target
from tests.containment.test_permissions import attribute_calls, uncovered
from tests.containment.world import REGION

DB = "orders-db"
SNAPSHOT = "incident-bot-inc-7-orders-db"


@pytest.fixture
def db(world) -> dict:
    ec2 = boto3.client("ec2", region_name=REGION)
    rds = boto3.client("rds", region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.20.{i}.0/24", AvailabilityZone=f"{REGION}{az}")[
            "Subnet"
        ]["SubnetId"]
        for i, az in ((1, "a"), (2, "b"))
    ]
    sg = ec2.create_security_group(GroupName="db", Description="db", VpcId=vpc)["GroupId"]
    rds.create_db_subnet_group(
        DBSubnetGroupName="db-subnets", DBSubnetGroupDescription="db", SubnetIds=subnets
    )
    rds.create_db_instance(
        DBInstanceIdentifier=DB,
        DBInstanceClass="db.t3.micro",
        Engine="postgres",
        AllocatedStorage=20,
        MasterUsername="admin1",
        MasterUserPassword="Sup3r-secret-pw",
        DBSubnetGroupName="db-subnets",
        VpcSecurityGroupIds=[sg],
        PubliclyAccessible=True,
    )
    return {"rds": rds, "ec2": ec2, "vpc": vpc, "sg": sg}


def target() -> Target:
    return Target(kind="db_instance", resource_id=DB, region=REGION)


def described(rds) -> dict:
    return rds.describe_db_instances(DBInstanceIdentifier=DB)["DBInstances"][0]


def test_plan_snapshots_before_isolating_and_changes_nothing(db, make_ctx, calls) -> None:
    plan = ContainmentEngine().plan(target=target(), ctx=make_ctx())
    steps = plan.actions
    assert steps == ["capture_db", "evidence", "snapshot_db", "isolate_db"]
    isolate = [c.text for c in plan.steps[3].calls]
    assert isolate[0].startswith("ec2.CreateSecurityGroup(")
    assert "PubliclyAccessible=False" in isolate[-1] and OPEN_CONNECTIONS in isolate[-1]
    assert OPEN_CONNECTIONS in plan.blast_radius["attached"]
    assert all(c.is_read for c in calls.calls)
    assert described(db["rds"])["PubliclyAccessible"] is True


def test_db_is_snapshotted_isolated_and_restored(db, make_ctx, calls) -> None:
    rds = db["rds"]
    results = run_plan(target=target(), ctx=make_ctx())
    assert all(r.status == "succeeded" for r in results.values()), {
        n: r.error for n, r in results.items()
    }
    snap = rds.describe_db_snapshots(DBSnapshotIdentifier=SNAPSHOT)["DBSnapshots"][0]
    assert snap["DBInstanceIdentifier"] == DB
    after = described(rds)
    iso = results["isolate_db"].changes["db"]["isolation_group"]
    assert [g["VpcSecurityGroupId"] for g in after["VpcSecurityGroups"]] == [iso]
    assert after["PubliclyAccessible"] is False
    group = db["ec2"].describe_security_groups(GroupIds=[iso])["SecurityGroups"][0]
    assert group["VpcId"] == db["vpc"] and group["IpPermissions"] == []
    assert group["IpPermissionsEgress"] == []
    captured = results["capture_db"].evidence
    assert captured["security_groups"] == [db["sg"]] and captured["publicly_accessible"] is True
    assert captured["parameter_groups"]

    calls.clear()
    again = run_plan(target=target(), ctx=make_ctx())
    assert all(not r.changes for r in again.values())
    # Evidence only (a new capture also adds its hash to the manifest).
    assert {c.action for c in calls.writes()} == {"s3:PutObject"}  # evidence, refused

    undone = rollback_plan(target=target(), ctx=make_ctx(), results=results)
    assert list(undone) == ["isolate_db"] and undone["isolate_db"].status == "succeeded"
    back = described(rds)
    assert [g["VpcSecurityGroupId"] for g in back["VpcSecurityGroups"]] == [db["sg"]]
    assert back["PubliclyAccessible"] is True
    assert rds.describe_db_snapshots(DBSnapshotIdentifier=SNAPSHOT)["DBSnapshots"]  # kept


def test_unknown_db_fails_capture(world, make_ctx) -> None:
    results = run_plan(target=target(), ctx=make_ctx())
    assert results["capture_db"].status == "failed"
    assert results["isolate_db"].blocked_by == ["capture_db"]


def test_db_steps_call_only_what_they_declare(db, make_ctx, calls) -> None:
    ctx = make_ctx()
    on_step = attribute_calls(calls)
    results = run_plan(target=target(), ctx=ctx, max_workers=1, on_step=on_step)
    rollback_plan(target=target(), ctx=ctx, results=results, max_workers=1, on_step=on_step)
    assert {c.step for c in calls.calls} >= {"capture_db", "snapshot_db", "isolate_db"}
    assert uncovered(calls) == {}


def test_a_snapshot_an_earlier_attempt_took_counts_as_taken(db, make_ctx) -> None:
    """CreateDBSnapshot's answer lost, the create re-sent: AWS refuses the incident's snapshot
    name a second time, and that is the snapshot taken, not a failure."""
    ctx = make_ctx()
    facts = CaptureDbInstance().read(target(), ctx)
    db["rds"].create_db_snapshot(DBInstanceIdentifier=DB, DBSnapshotIdentifier=SNAPSHOT)
    result = SnapshotDbInstance().apply(target(), ctx, RunState(facts=facts, captured=facts))
    assert result.status == "succeeded", result.error
    assert result.evidence["snapshot"]["id"] == SNAPSHOT
    manual = db["rds"].describe_db_snapshots(DBInstanceIdentifier=DB, SnapshotType="manual")
    assert len(manual["DBSnapshots"]) == 1


def test_an_isolation_group_left_open_by_a_lost_answer_is_emptied(db, make_ctx) -> None:
    """A retried step that finds the isolation group an earlier attempt made (its egress rule
    not yet revoked) empties it before using it."""
    ec2 = db["ec2"]
    ctx = make_ctx()
    gid = ec2.create_security_group(
        GroupName=ctx.isolation_group_name, Description="left open", VpcId=db["vpc"]
    )["GroupId"]
    results = run_plan(target=target(), ctx=ctx)
    assert results["isolate_db"].status == "succeeded", results["isolate_db"].error
    group = ec2.describe_security_groups(GroupIds=[gid])["SecurityGroups"][0]
    assert group["IpPermissionsEgress"] == [] and group["IpPermissions"] == []
    assert [g["VpcSecurityGroupId"] for g in described(db["rds"])["VpcSecurityGroups"]] == [gid]
