"""The forensic account (moto, two accounts through AssumeRole): the incident's snapshots are
shared with it and copied under its own key, the copies land in the evidence manifest, and
the clean room is built there from the copies; the plan names the account of every step."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from sqlalchemy import select

from commands.approvals import decide, execute
from commands.forensics import CleanRoomEngine, propose, stack_name
from commands.forensics.account import COPY_OF_TAG
from commands.incidents import get_incident, open_incident
from containment.context import ActionContext
from containment.tags import INCIDENT_TAG, tag_dict
from storage.models import TimelineEvent
from tests.clock import TEST_CLOCK
from tests.moto_gaps import shared_snapshot_copies

HOUR = dt.timedelta(hours=1)
REGION = "us-east-1"
FORENSIC = "111111111111"
ROLE = "IncidentBotForensics"
IMAGE = "ami-12c6146b"


def forensic_session() -> boto3.Session:
    creds = boto3.client("sts", region_name=REGION).assume_role(
        RoleArn=f"arn:aws:iam::{FORENSIC}:role/setup", RoleSessionName="fixture"
    )["Credentials"]
    return boto3.Session(
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
        region_name=REGION,
    )


@pytest.fixture
def accounts(database: Any) -> Iterator[dict[str, Any]]:
    with mock_aws(), shared_snapshot_copies():
        ec2 = boto3.client("ec2", REGION)
        inst = ec2.run_instances(
            ImageId=IMAGE, MinCount=1, MaxCount=1, Placement={"AvailabilityZone": "us-east-1b"}
        )["Instances"][0]
        snaps = []
        for size in (8, 20):
            vol = ec2.create_volume(AvailabilityZone="us-east-1b", Size=size)["VolumeId"]
            snaps.append(
                ec2.create_snapshot(
                    VolumeId=vol,
                    TagSpecifications=[
                        {
                            "ResourceType": "snapshot",
                            "Tags": [{"Key": INCIDENT_TAG, "Value": "INC-1"}],
                        }
                    ],
                )["SnapshotId"]
            )
        forensic = forensic_session()
        key = forensic.client("kms").create_key(Description="forensic copies")["KeyMetadata"]
        forensic.client("s3").create_bucket(Bucket="forensic-evidence")
        with database.session() as s:
            open_incident(
                session=s,
                title="web-1",
                created_by="U1",
                resource_id=inst["InstanceId"],
                region=REGION,
            )
        yield {"snapshots": snaps, "key": key["Arn"], "forensic": forensic}


def ctx(key_arn: str) -> ActionContext:
    return ActionContext(
        now=TEST_CLOCK.now,
        incident_key="INC-1",
        evidence_bucket="forensic-evidence",
        forensic_account_id=FORENSIC,
        forensic_role_name=ROLE,
        forensic_kms_key_id=key_arn,
    )


def test_clean_room_is_built_in_the_forensic_account_from_copies(
    database: Any, accounts: dict[str, Any]
) -> None:
    forensic = accounts["forensic"]
    proposed = propose(
        db=database,
        ctx=ctx(accounts["key"]),
        incident_key="INC-1",
        teardown=False,
        requested_by="U1",
        expire_after=HOUR,
        ami_id=IMAGE,
    )
    with database.read_session() as s:
        from storage.models import ContainmentRequest

        plan = s.get(ContainmentRequest, proposed.request_id).plan
    steps = {st["action"]: st for st in plan["steps"]}
    assert list(steps) == ["share_snapshots", "copy_snapshots", "create_stack"]
    # The plan says which account every step acts in.
    assert "acts in the bot's own account" in steps["share_snapshots"]["summary"]
    assert f"acts in account {FORENSIC}" in steps["copy_snapshots"]["summary"]
    assert f"forensic account {FORENSIC}" in steps["create_stack"]["summary"]
    assert all(f"UserIds=[{FORENSIC}]" in c["text"] for c in steps["share_snapshots"]["calls"])
    # Nothing shared before approval.
    ec2 = boto3.client("ec2", REGION)
    perms = ec2.describe_snapshot_attribute(
        SnapshotId=accounts["snapshots"][0], Attribute="createVolumePermission"
    )["CreateVolumePermissions"]
    assert perms == []

    with database.session() as s:
        assert decide(
            session=s, request_id=proposed.request_id, actor="U2", approve=True, approvers=["U2"]
        ).won
    outcome = execute(
        database=database,
        request_id=proposed.request_id,
        engine=CleanRoomEngine(database=database, poll_seconds=0),
        context_factory=lambda r: ctx(accounts["key"]),
        heartbeat_every=60,
    )
    assert outcome.status == "succeeded", outcome.failed

    for snap in accounts["snapshots"]:
        perms = ec2.describe_snapshot_attribute(
            SnapshotId=snap, Attribute="createVolumePermission"
        )["CreateVolumePermissions"]
        assert perms == [{"UserId": FORENSIC}]
    fec2 = forensic.client("ec2")
    copies = {
        tag_dict(c["Tags"])[COPY_OF_TAG]: c
        for c in fec2.describe_snapshots(
            OwnerIds=["self"], Filters=[{"Name": f"tag:{INCIDENT_TAG}", "Values": ["INC-1"]}]
        )["Snapshots"]
    }
    assert sorted(copies) == sorted(accounts["snapshots"])
    assert all(c["Encrypted"] and c["KmsKeyId"] == accounts["key"] for c in copies.values())

    # The clean room stands in the forensic account, restored from the copies.
    assert boto3.client("cloudformation", REGION).list_stacks()["StackSummaries"] == []
    fcfn = forensic.client("cloudformation")
    stack = fcfn.describe_stacks(StackName=stack_name("INC-1"))["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    params = {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]}
    assert {params["SnapshotId1"], params["SnapshotId2"]} == {
        c["SnapshotId"] for c in copies.values()
    }

    # Chain of custody: source snapshot, volume, start time and copy id, in the manifest...
    body = forensic.client("s3").get_object(
        Bucket="forensic-evidence", Key="incidents/INC-1/manifest.json"
    )["Body"]
    manifest = json.loads(body.read())
    source = {
        s["SnapshotId"]: s
        for s in ec2.describe_snapshots(SnapshotIds=accounts["snapshots"])["Snapshots"]
    }
    recorded = {e["snapshot_id"]: e for e in manifest["snapshots"]}
    for sid, snap in source.items():
        entry = recorded[sid]
        assert entry["volume_id"] == snap["VolumeId"]
        assert entry["start_time"] == snap["StartTime"].isoformat()
        assert entry["copy_id"] == copies[sid]["SnapshotId"]
        assert entry["copy_account"] == FORENSIC
    # ...and on the timeline.
    with database.read_session() as s:
        inc = get_incident(session=s, key="INC-1")
        events = s.scalars(
            select(TimelineEvent)
            .where(TimelineEvent.incident_id == inc.id)
            .where(TimelineEvent.kind == "containment.step.succeeded")
        ).all()
    details = [(e.summary, json.loads(e.details)) for e in events]
    summary, copied = next((t, d) for t, d in details if d.get("action") == "copy_snapshots")
    assert {c["copy_id"] for c in copied["evidence"]["copies"]} == {
        c["SnapshotId"] for c in copies.values()
    }
    assert all(copies[sid]["SnapshotId"] in summary for sid in accounts["snapshots"])
