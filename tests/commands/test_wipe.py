"""The evidence wipe against moto (EC2, S3, KMS, CloudFormation): only what the incident
created, listed before anything goes, every deletion on the timeline."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from moto import mock_aws
from sqlalchemy import select

from commands.approvals import decide, execute
from commands.errors import UserError
from commands.forensics import stack_name
from commands.incidents import get_incident, open_incident, resolve_incident
from commands.wipe import SOURCE_SNAPSHOT_TAG, WipeEngine, propose_wipe, wipe_lines
from containment.context import ActionContext
from containment.tags import INCIDENT_TAG, STATUS_TAG
from storage.models import ContainmentRequest, TimelineEvent
from tests.clock import TEST_CLOCK

BUCKET = "ir-evidence"
HOUR = dt.timedelta(hours=1)
KEY = "INC-1"


def tags(kind: str, **kv: str) -> list[dict[str, Any]]:
    return [{"ResourceType": kind, "Tags": [{"Key": k, "Value": v} for k, v in kv.items()]}]


def ctx(**kw: Any) -> ActionContext:
    return ActionContext(now=TEST_CLOCK.now, incident_key=KEY, evidence_bucket=BUCKET, **kw)


@pytest.fixture
def world(database: Any) -> Any:
    with mock_aws():
        ec2 = boto3.client("ec2", "us-east-1")
        s3 = boto3.client("s3", "us-east-1")
        kms = boto3.client("kms", "us-east-1")
        cfn = boto3.client("cloudformation", "us-east-1")
        w: dict[str, Any] = {}
        # The compromised instance's own volume: tagged by containment, never the wipe's.
        w["own_volume"] = ec2.create_volume(
            AvailabilityZone="us-east-1a",
            Size=8,
            TagSpecifications=tags("volume", **{INCIDENT_TAG: KEY, STATUS_TAG: "Isolated"}),
        )["VolumeId"]
        w["snapshots"] = [
            ec2.create_snapshot(
                VolumeId=w["own_volume"], TagSpecifications=tags("snapshot", **{INCIDENT_TAG: KEY})
            )["SnapshotId"]
            for _ in range(2)
        ]
        w["other_snapshot"] = ec2.create_snapshot(
            VolumeId=w["own_volume"], TagSpecifications=tags("snapshot", **{INCIDENT_TAG: "INC-10"})
        )["SnapshotId"]
        w["restored"] = ec2.create_volume(
            AvailabilityZone="us-east-1a",
            SnapshotId=w["snapshots"][0],
            TagSpecifications=tags(
                "volume", **{INCIDENT_TAG: KEY, SOURCE_SNAPSHOT_TAG: w["snapshots"][0]}
            ),
        )["VolumeId"]
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
        eni = ec2.create_network_interface(SubnetId=subnet)["NetworkInterface"]
        s3.create_bucket(Bucket="flow-dest")
        w["flow_log"] = ec2.create_flow_logs(
            ResourceIds=[eni["NetworkInterfaceId"]],
            ResourceType="NetworkInterface",
            TrafficType="ALL",
            LogDestinationType="s3",
            LogDestination="arn:aws:s3:::flow-dest",
            TagSpecifications=tags("vpc-flow-log", **{INCIDENT_TAG: KEY}),
        )["FlowLogIds"][0]
        # A clean-room stack this incident created.
        cfn.create_stack(
            StackName=stack_name(KEY),
            TemplateBody=json.dumps({"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}}}),
            Tags=[{"Key": INCIDENT_TAG, "Value": KEY}],
        )
        # Evidence: a versioned bucket.
        s3.create_bucket(Bucket=BUCKET)
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        capture = f"incidents/{KEY}/instance/i-0abc/capture-20261127T120000Z.json"
        for body in (b"v1", b"v2"):
            s3.put_object(Bucket=BUCKET, Key=capture, Body=body, Tagging=f"{INCIDENT_TAG}={KEY}")
        flow_file = (
            f"incidents/{KEY}/flow-logs/AWSLogs/123456789012/vpcflowlogs/us-east-1/2026/11/27/"
            f"123456789012_vpcflowlogs_us-east-1_{w['flow_log']}_20261127T1200Z_ab12.log.gz"
        )
        stranger_flow = flow_file.replace(w["flow_log"], "fl-0123456789abcdef0")
        s3.put_object(Bucket=BUCKET, Key=flow_file, Body=b"flows")
        s3.put_object(Bucket=BUCKET, Key=stranger_flow, Body=b"someone else's")
        s3.put_object(Bucket=BUCKET, Key=f"incidents/{KEY}/notes.txt", Body=b"untagged")
        s3.put_object(
            Bucket=BUCKET,
            Key="incidents/INC-10/capture.json",
            Body=b"x",
            Tagging=f"{INCIDENT_TAG}=INC-10",
        )
        w.update(capture=capture, flow_file=flow_file, stranger_flow=stranger_flow)
        # KMS: the incident's key, the shared evidence key (also tagged), an unrelated key.
        w["key"] = kms.create_key(Tags=[{"TagKey": INCIDENT_TAG, "TagValue": KEY}])["KeyMetadata"][
            "KeyId"
        ]
        w["shared_key"] = kms.create_key(Tags=[{"TagKey": INCIDENT_TAG, "TagValue": KEY}])[
            "KeyMetadata"
        ]["KeyId"]
        w["other_key"] = kms.create_key()["KeyMetadata"]["KeyId"]
        with database.session() as s:
            open_incident(session=s, title="web-1", created_by="U1", region="us-east-1")
        w.update(ec2=ec2, s3=s3, kms=kms, cfn=cfn)
        yield w


def propose(database: Any, w: dict[str, Any], **kw: Any) -> Any:
    return propose_wipe(
        db=database,
        ctx=ctx(),
        incident_key=KEY,
        requested_by="U1",
        expire_after=HOUR,
        kms_pending_days=7,
        shared_kms_key=w["shared_key"],
        **kw,
    )


def resolve(database: Any) -> None:
    with database.session() as s:
        resolve_incident(
            session=s,
            incident=get_incident(session=s, key=KEY),
            actor="U1",
            summary="miner removed",
        )


def run(database: Any, request_id: int) -> Any:
    with database.session() as s:
        assert decide(
            session=s, request_id=request_id, actor="U2", approve=True, approvers=["U2"]
        ).won
    return execute(
        database=database,
        request_id=request_id,
        engine=WipeEngine(database=database),
        context_factory=lambda r: ctx(),
        heartbeat_every=60,
    )


def ours(w: dict[str, Any]) -> set[str]:
    """The test's snapshots still there (moto also lists its AMIs' snapshots as ours)."""
    made = {*w["snapshots"], w["other_snapshot"]}
    found = w["ec2"].describe_snapshots(
        OwnerIds=["self"], Filters=[{"Name": "snapshot-id", "Values": sorted(made)}]
    )["Snapshots"]
    return {s["SnapshotId"] for s in found}


def object_versions(s3: Any) -> set[tuple[str, str]]:
    out = s3.list_object_versions(Bucket=BUCKET)
    return {(v["Key"], v["VersionId"]) for v in out.get("Versions", [])}


def test_refused_until_resolved(database: Any, world: dict[str, Any]) -> None:
    with pytest.raises(UserError, match="is open: resolve it first"):
        propose(database, world)


def test_plan_lists_everything_then_deletes_only_the_incidents(
    database: Any, world: dict[str, Any]
) -> None:
    w = world
    resolve(database)
    before = object_versions(w["s3"])
    proposed = propose(database, w)
    assert proposed.created
    with database.read_session() as s:
        req = s.get(ContainmentRequest, proposed.request_id)
        plan = req.plan
    listed = {step["action"]: [c["text"] for c in step["calls"]] for step in plan["steps"]}
    assert list(listed) == [
        "delete_clean_room",
        "delete_volumes",
        "delete_snapshots",
        "delete_flow_logs",
        "delete_evidence_objects",
        "schedule_key_deletion",
    ]
    assert listed["delete_volumes"] == [f"ec2.DeleteVolume(VolumeId={w['restored']})"]
    assert sorted(listed["delete_snapshots"]) == sorted(
        f"ec2.DeleteSnapshot(SnapshotId={sid})" for sid in w["snapshots"]
    )
    objects = "\n".join(listed["delete_evidence_objects"])
    assert objects.count(w["capture"]) == 2 and w["flow_file"] in objects
    assert "notes.txt" not in objects and w["stranger_flow"] not in objects
    assert "INC-10" not in objects
    assert listed["schedule_key_deletion"] == [
        f"kms.ScheduleKeyDeletion(KeyId={w['key']}, PendingWindowInDays=7)"
    ]
    note = plan["blast_radius"]["note"]
    assert w["own_volume"] in note and w["shared_key"] in note and "notes.txt" in note
    # Listed, not deleted: nothing has changed before the approval.
    assert object_versions(w["s3"]) == before
    assert len(ours(w)) == 3

    outcome = run(database, proposed.request_id)
    assert outcome.status == "succeeded", outcome.failed

    ec2, s3, kms = w["ec2"], w["s3"], w["kms"]
    assert ours(w) == {w["other_snapshot"]}
    vols = {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]}
    assert w["own_volume"] in vols and w["restored"] not in vols
    assert ec2.describe_flow_logs(FlowLogIds=[w["flow_log"]])["FlowLogs"] == []
    left = {k for k, _ in object_versions(s3)}
    assert left == {
        f"incidents/{KEY}/notes.txt",
        w["stranger_flow"],
        "incidents/INC-10/capture.json",
    }
    meta = kms.describe_key(KeyId=w["key"])["KeyMetadata"]
    assert meta["KeyState"] == "PendingDeletion"
    assert kms.describe_key(KeyId=w["shared_key"])["KeyMetadata"]["KeyState"] == "Enabled"
    assert kms.describe_key(KeyId=w["other_key"])["KeyMetadata"]["KeyState"] == "Enabled"
    statuses = [s["StackStatus"] for s in w["cfn"].list_stacks()["StackSummaries"]]
    assert statuses == ["DELETE_COMPLETE"]

    with database.read_session() as s:
        inc = get_incident(session=s, key=KEY)
        deleted = [
            e
            for e in s.scalars(
                select(TimelineEvent).where(
                    TimelineEvent.incident_id == inc.id, TimelineEvent.kind == "wipe.deleted"
                )
            )
        ]
        facts = inc.facts
    # One timeline event per deleted item: stack, volume, 2 snapshots, flow log,
    # 3 object versions, KMS key.
    assert len(deleted) == 9
    assert any(
        e.summary.startswith(f"Scheduled deletion of KMS key {w['key']} in 7 days") for e in deleted
    )
    assert len(facts["wipe"]["deleted"]) == 9
    lines = wipe_lines(facts)
    assert lines[0] == (
        "wiped: 1 stacks, 1 volumes, 2 snapshots, 1 flow logs, 3 objects, 1 kms keys"
    )
    assert lines[1].startswith(f"KMS key {w['key']} deleted on ")

    with pytest.raises(UserError, match="nothing left to wipe"):
        propose(database, w)


def test_item_that_lost_its_tag_is_left(database: Any, world: dict[str, Any]) -> None:
    w = world
    resolve(database)
    proposed = propose(database, w)
    # Between the plan and the approval someone re-tags a snapshot as not the incident's.
    w["ec2"].create_tags(
        Resources=[w["snapshots"][1]], Tags=[{"Key": INCIDENT_TAG, "Value": "INC-99"}]
    )
    outcome = run(database, proposed.request_id)
    assert outcome.status == "succeeded"
    assert ours(w) == {w["snapshots"][1], w["other_snapshot"]}
    with database.read_session() as s:
        inc = get_incident(session=s, key=KEY)
        refused = s.scalars(
            select(TimelineEvent).where(
                TimelineEvent.incident_id == inc.id, TimelineEvent.kind == "wipe.refused"
            )
        ).all()
    assert [e.summary for e in refused] == [
        f"Left snapshots {w['snapshots'][1]}: its incident tag is gone"
    ]


def test_dry_run_deletes_nothing(database: Any, world: dict[str, Any]) -> None:
    w = world
    resolve(database)
    before = object_versions(w["s3"])
    proposed = propose(database, w, dry_run=True)
    outcome = run(database, proposed.request_id)
    assert outcome.status == "succeeded" and outcome.dry_run
    assert object_versions(w["s3"]) == before
    assert len(ours(w)) == 3
    assert w["kms"].describe_key(KeyId=w["key"])["KeyMetadata"]["KeyState"] == "Enabled"


class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.data


def test_re_sent_deletions_after_a_lost_answer_still_succeed(
    database: Any, world: dict[str, Any]
) -> None:
    """botocore re-sends a call whose answer was lost although it took effect: the second
    ScheduleKeyDeletion (or DeleteSnapshot) finds the work done, and the wipe says so."""
    resent: list[str] = []

    def resend_once(client: Any) -> None:
        def again(operation: Any = None, attempts: int = 1, **_: Any) -> float | None:
            name = operation.name if operation is not None else ""
            if attempts == 1 and name in ("ScheduleKeyDeletion", "DeleteSnapshot"):
                resent.append(name)
                return 0.0  # retry now, as after a lost answer
            return None

        def as_aws_answers(request: Any, event_name: str = "", **_: Any) -> Any:
            # moto schedules a key twice without complaint; AWS refuses the second.
            if not event_name.endswith("ScheduleKeyDeletion") or resent.count("answered"):
                return None
            if "ScheduleKeyDeletion" not in resent:
                return None
            resent.append("answered")
            request.url = "https://resent.invalid/"  # keep moto's handler off this attempt
            body = b'{"__type": "KMSInvalidStateException", "message": "pending deletion"}'
            return AWSResponse(request.url, 400, {}, _Body(body))

        client.meta.events.register_first("needs-retry", again)
        client.meta.events.register_first("before-send", as_aws_answers)

    w = world
    resolve(database)
    proposed = propose(database, w)
    with database.session() as s:
        assert decide(
            session=s, request_id=proposed.request_id, actor="U2", approve=True, approvers=["U2"]
        ).won
    outcome = execute(
        database=database,
        request_id=proposed.request_id,
        engine=WipeEngine(database=database),
        context_factory=lambda r: ctx(client_hooks=(resend_once,)),
        heartbeat_every=60,
    )
    assert {"ScheduleKeyDeletion", "answered", "DeleteSnapshot"} <= set(resent)
    assert outcome is not None and outcome.status == "succeeded", outcome.failed
    key = w["kms"].describe_key(KeyId=w["key"])["KeyMetadata"]
    assert key["KeyState"] == "PendingDeletion"
    assert ours(w) == {w["other_snapshot"]}
