"""The forensic clean room: plan, approve, build and tear down the stack (moto), and stack
events reported as steps (Stubber with DescribeStackEvents' real shape)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws
from sqlalchemy import select

from commands.approvals import decide, execute
from commands.errors import UserError
from commands.forensics import (
    CleanRoomEngine,
    StackWatcher,
    clean_room_lines,
    propose,
    stack_name,
    subnet_cidr,
)
from commands.incidents import get_incident, open_incident
from containment.context import ActionContext
from containment.tags import INCIDENT_TAG, tag_dict
from storage.models import ActionStep, ContainmentRequest, TimelineEvent
from tests.clock import TEST_CLOCK

HOUR = dt.timedelta(hours=1)


@pytest.fixture
def aws() -> Any:
    with mock_aws():
        yield


@pytest.fixture
def contained(aws: Any, database: Any) -> dict[str, Any]:
    """An incident whose containment already snapshotted two volumes."""
    ec2 = boto3.client("ec2", "us-east-1")
    image = "ami-12c6146b"  # one of moto's stock AMIs (listing them all costs seconds)
    inst = ec2.run_instances(
        ImageId=image, MinCount=1, MaxCount=1, Placement={"AvailabilityZone": "us-east-1b"}
    )["Instances"][0]
    snaps = []
    for size in (8, 20):
        vol = ec2.create_volume(AvailabilityZone="us-east-1b", Size=size)["VolumeId"]
        snaps.append(
            ec2.create_snapshot(
                VolumeId=vol,
                TagSpecifications=[
                    {"ResourceType": "snapshot", "Tags": [{"Key": INCIDENT_TAG, "Value": "INC-1"}]}
                ],
            )["SnapshotId"]
        )
    # Someone else's snapshot: never restored into this incident's clean room.
    vol = ec2.create_volume(AvailabilityZone="us-east-1b", Size=4)["VolumeId"]
    ec2.create_snapshot(VolumeId=vol)
    with database.session() as s:
        open_incident(
            session=s,
            title="web-1",
            created_by="U1",
            resource_id=inst["InstanceId"],
            region="us-east-1",
        )
    return {"instance": inst["InstanceId"], "snapshots": snaps, "image": image}


def ctx(**kw: Any) -> ActionContext:
    return ActionContext(now=TEST_CLOCK.now, incident_key="INC-1", **kw)


def approve(database: Any, request_id: int) -> None:
    with database.session() as s:
        assert decide(
            session=s, request_id=request_id, actor="U2", approve=True, approvers=["U2"]
        ).won


def run(database: Any, request_id: int, engine: CleanRoomEngine) -> Any:
    return execute(
        database=database,
        request_id=request_id,
        engine=engine,
        context_factory=lambda r: ctx(),
        heartbeat_every=60,
    )


def test_subnet_cidr() -> None:
    assert subnet_cidr("10.99.0.0/16") == "10.99.0.0/24"
    assert subnet_cidr("192.168.7.0/24") == "192.168.7.0/24"
    with pytest.raises(UserError, match="/16 to /24"):
        subnet_cidr("10.0.0.0/8")
    with pytest.raises(UserError, match="not a network"):
        subnet_cidr("10.99.0.1/16")


def test_plan_needs_ami_and_snapshots(database: Any, aws: Any) -> None:
    with database.session() as s:
        open_incident(session=s, title="x", created_by="U1", resource_id="i-0123456789abcdef0")
    with pytest.raises(UserError, match=r"forensics\.ami_id"):
        propose(
            db=database,
            ctx=ctx(),
            incident_key="INC-1",
            teardown=False,
            requested_by="U1",
            expire_after=HOUR,
        )
    with pytest.raises(UserError, match="no snapshots yet"):
        propose(
            db=database,
            ctx=ctx(),
            incident_key="INC-1",
            teardown=False,
            requested_by="U1",
            expire_after=HOUR,
            ami_id="ami-12c6146b",
        )
    with pytest.raises(UserError, match="no clean room to tear down"):
        propose(
            db=database,
            ctx=ctx(),
            incident_key="INC-1",
            teardown=True,
            requested_by="U1",
            expire_after=HOUR,
        )


def test_build_and_tear_down(database: Any, contained: dict[str, Any]) -> None:
    proposed = propose(
        db=database,
        ctx=ctx(),
        incident_key="INC-1",
        teardown=False,
        requested_by="U1",
        expire_after=HOUR,
        ami_id=contained["image"],
    )
    assert proposed.created
    # Asking again while it is pending finds the same request.
    again = propose(
        db=database,
        ctx=ctx(),
        incident_key="INC-1",
        teardown=False,
        requested_by="U3",
        expire_after=HOUR,
        ami_id=contained["image"],
    )
    assert (again.request_id, again.created) == (proposed.request_id, False)
    with database.read_session() as s:
        req = s.get(ContainmentRequest, proposed.request_id)
        assert req.kind == "forensics" and req.status == "pending"
        assert req.target_type == "clean_room" and req.target_id == stack_name("INC-1")
        params = req.plan["parameters"]
        restored = {
            params["SnapshotId1"]: params["VolumeSize1"],
            params["SnapshotId2"]: params["VolumeSize2"],
        }
        assert restored == dict(zip(contained["snapshots"], ("8", "20"), strict=True))
        assert params["AvailabilityZone"] == "us-east-1b"
        assert params["SubnetCidr"] == "10.99.0.0/24"
        assert "SnapshotId3" not in params
    # Nothing exists before approval.
    cfn = boto3.client("cloudformation", "us-east-1")
    assert cfn.list_stacks()["StackSummaries"] == []

    approve(database, proposed.request_id)
    facts_seen: list[str] = []
    engine = CleanRoomEngine(database=database, poll_seconds=0, on_facts=facts_seen.append)
    outcome = run(database, proposed.request_id, engine)
    assert outcome.status == "succeeded", outcome.failed

    stack = cfn.describe_stacks(StackName=stack_name("INC-1"))["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    assert tag_dict(stack["Tags"])[INCIDENT_TAG] == "INC-1"
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    ec2 = boto3.client("ec2", "us-east-1")
    vpc = outputs["VpcId"]
    # Isolated: no internet gateway anywhere near it; SSM reachable through endpoints.
    igws = ec2.describe_internet_gateways(Filters=[{"Name": "attachment.vpc-id", "Values": [vpc]}])[
        "InternetGateways"
    ]
    assert igws == []
    services = sorted(
        e["ServiceName"].rsplit(".", 1)[-1]
        for e in ec2.describe_vpc_endpoints(Filters=[{"Name": "vpc-id", "Values": [vpc]}])[
            "VpcEndpoints"
        ]
    )
    assert services == ["ec2messages", "ssm", "ssmmessages"]
    forensic = ec2.describe_instances(InstanceIds=[outputs["InstanceId"]])["Reservations"][0][
        "Instances"
    ][0]
    assert forensic["VpcId"] == vpc
    attached = sorted(b["DeviceName"] for b in forensic["BlockDeviceMappings"])
    assert attached == ["/dev/sdf", "/dev/sdg"]

    with database.read_session() as s:
        inc = get_incident(session=s, key="INC-1")
        room = inc.facts["forensics"]
        assert room["status"] == "CREATE_COMPLETE"
        assert room["instance_id"] == outputs["InstanceId"]
        assert len(room["volume_ids"]) == 2
        steps = s.scalars(
            select(ActionStep).where(ActionStep.request_id == proposed.request_id)
        ).all()
        assert [st.status for st in steps if st.action == "create_stack"] == ["succeeded"]
    assert "INC-1" in facts_seen
    lines = clean_room_lines({"forensics": room})
    assert lines[0] == f"clean room {stack_name('INC-1')}: CREATE_COMPLETE"
    assert lines[1] == f"connect: aws ssm start-session --target {outputs['InstanceId']}"

    # A second clean room is refused while this one stands.
    with pytest.raises(UserError, match="already has a clean room"):
        propose(
            db=database,
            ctx=ctx(),
            incident_key="INC-1",
            teardown=False,
            requested_by="U1",
            expire_after=HOUR,
            ami_id=contained["image"],
        )

    down = propose(
        db=database,
        ctx=ctx(),
        incident_key="INC-1",
        teardown=True,
        requested_by="U1",
        expire_after=HOUR,
    )
    approve(database, down.request_id)
    outcome = run(database, down.request_id, engine)
    assert outcome.status == "succeeded", outcome.failed
    assert cfn.describe_stacks(StackName=stack["StackId"])["Stacks"][0]["StackStatus"] == (
        "DELETE_COMPLETE"
    )
    with database.read_session() as s:
        inc = get_incident(session=s, key="INC-1")
        assert inc.facts["forensics"]["status"] == "DELETE_COMPLETE"
        kinds = [
            e.kind
            for e in s.scalars(
                select(TimelineEvent)
                .where(TimelineEvent.incident_id == inc.id)
                .order_by(TimelineEvent.seq)
            )
        ]
    assert kinds.count("containment.requested") == 2
    assert kinds.count("containment.finished") == 2
    # The snapshots are evidence: the teardown leaves them.
    assert len(ec2.describe_snapshots(SnapshotIds=contained["snapshots"])["Snapshots"]) == 2


def test_teardown_refuses_a_stack_without_the_incident_tag(
    database: Any, contained: dict[str, Any]
) -> None:
    cfn = boto3.client("cloudformation", "us-east-1")
    cfn.create_stack(
        StackName=stack_name("INC-1"),
        TemplateBody=json.dumps({"Resources": {"T": {"Type": "AWS::SNS::Topic"}}}),
    )
    with pytest.raises(UserError, match="does not carry the incident-bot:incident=INC-1 tag"):
        propose(
            db=database,
            ctx=ctx(),
            incident_key="INC-1",
            teardown=True,
            requested_by="U1",
            expire_after=HOUR,
        )


def _event(n: int, logical: str, rtype: str, status: str, reason: str | None = None) -> dict:
    event = {
        "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/s/1",
        "EventId": f"{logical}-{status}-{n}",
        "StackName": "incident-bot-forensics-inc-1",
        "LogicalResourceId": logical,
        "PhysicalResourceId": f"phys-{logical}" if "COMPLETE" in status else "",
        "ResourceType": rtype,
        "Timestamp": dt.datetime(2026, 11, 27, 12, 0, n, tzinfo=dt.UTC),
        "ResourceStatus": status,
    }
    if reason:
        event["ResourceStatusReason"] = reason
    return event


def test_stack_events_become_steps(database: Any) -> None:
    """Each resource reports as a step, once, oldest first; a failure carries its reason."""
    with database.session() as s:
        open_incident(session=s, title="x", created_by="U1")
    cfn = boto3.client("cloudformation", "us-east-1")
    stub = Stubber(cfn)
    sid = "arn:aws:cloudformation:us-east-1:123456789012:stack/s/1"
    first = [  # newest first, as DescribeStackEvents returns them
        _event(2, "Vpc", "AWS::EC2::VPC", "CREATE_COMPLETE"),
        _event(1, "Vpc", "AWS::EC2::VPC", "CREATE_IN_PROGRESS"),
        _event(0, "s", "AWS::CloudFormation::Stack", "CREATE_IN_PROGRESS", "User Initiated"),
    ]
    second = [
        _event(
            4,
            "ForensicInstance",
            "AWS::EC2::Instance",
            "CREATE_FAILED",
            "The image id '[ami-0bad]' does not exist",
        ),
        _event(3, "ForensicInstance", "AWS::EC2::Instance", "CREATE_IN_PROGRESS"),
        *first,
    ]
    stack = {
        "StackName": "s",
        "StackId": sid,
        "CreationTime": dt.datetime(2026, 11, 27),
        "StackStatus": "CREATE_IN_PROGRESS",
    }
    stub.add_response("describe_stack_events", {"StackEvents": first}, {"StackName": sid})
    stub.add_response("describe_stacks", {"Stacks": [stack]}, {"StackName": sid})
    stub.add_response("describe_stack_events", {"StackEvents": second}, {"StackName": sid})
    stub.add_response(
        "describe_stacks",
        {"Stacks": [{**stack, "StackStatus": "ROLLBACK_IN_PROGRESS"}]},
        {"StackName": sid},
    )
    stub.add_response("describe_stack_events", {"StackEvents": second}, {"StackName": sid})
    stub.add_response(
        "describe_stacks",
        {"Stacks": [{**stack, "StackStatus": "ROLLBACK_COMPLETE"}]},
        {"StackName": sid},
    )
    calls: list[tuple[str, str, str | None]] = []
    engine = CleanRoomEngine(database=database, poll_seconds=0)
    with stub:
        final = engine.follow(
            StackWatcher(cfn, sid),
            lambda action, phase, result: calls.append(
                (action, phase, result.status if result else None)
            ),
            {},
            "INC-1",
        )
    assert final["StackStatus"] == "ROLLBACK_COMPLETE"
    assert calls == [
        ("stack:Vpc", "started", None),
        ("stack:Vpc", "finished", "succeeded"),
        ("stack:ForensicInstance", "started", None),
        ("stack:ForensicInstance", "finished", "failed"),
    ]
    with database.read_session() as s:
        events = get_incident(session=s, key="INC-1").facts["forensics"]["events"]
    assert events[-1] == (
        "12:00:04 ForensicInstance CREATE_FAILED: The image id '[ami-0bad]' does not exist"
    )
