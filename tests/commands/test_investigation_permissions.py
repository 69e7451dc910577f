"""Every AWS call a command feature makes is declared in that feature's `PERMISSIONS` (and so
in `incident-bot policy`). Calls are recorded from every client containment.clients makes,
whichever way the feature got it."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from moto import mock_aws

from commands.abuse import check_answers, report_abuse
from commands.approvals import decide, execute
from commands.forensics import CleanRoomEngine, propose
from commands.impact import refresh_impact
from commands.incidents import get_incident, open_incident, resolve_incident
from commands.permissions import BY_FEATURE, policy_document
from commands.trail import run_trail
from commands.wipe import WipeEngine, propose_wipe
from containment.clients import aws_client, observe
from containment.context import ActionContext
from containment.tags import INCIDENT_TAG
from tests.clock import TEST_CLOCK
from tests.commands.test_trail import ct_event

HOUR = dt.timedelta(hours=1)
TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "forensics-cleanroom.yml"
# What CloudFormation needs from the caller to create each resource type of the template.
CREATES = {
    "AWS::EC2::VPC": "ec2:CreateVpc",
    "AWS::EC2::Subnet": "ec2:CreateSubnet",
    "AWS::EC2::SecurityGroup": "ec2:CreateSecurityGroup",
    "AWS::EC2::VPCEndpoint": "ec2:CreateVpcEndpoint",
    "AWS::EC2::Instance": "ec2:RunInstances",
    "AWS::EC2::Volume": "ec2:CreateVolume",
    "AWS::EC2::VolumeAttachment": "ec2:AttachVolume",
    "AWS::IAM::Role": "iam:CreateRole",
    "AWS::IAM::InstanceProfile": "iam:CreateInstanceProfile",
}


_recording: list[Any] = []


@pytest.fixture(autouse=True)
def _stop_recording() -> Any:
    yield
    while _recording:
        _recording.pop().__exit__(None, None, None)


class Recorder:
    """Records, from now to the end of the test, every AWS call made through the one client
    factory; stubs the named services on the contexts it makes."""

    def __init__(self, stub: dict[str, list[tuple[str, Any]]] | None = None) -> None:
        self.actions: set[str] = set()
        self.lock = threading.Lock()
        self.stub = stub or {}
        watching = observe(self.record)
        watching.__enter__()
        _recording.append(watching)

    def record(self, service: str, operation: str, params: dict[str, Any]) -> None:
        action = iam_action(service, operation, params)
        if action:
            with self.lock:
                self.actions.add(action)

    def hook(self, client: Any) -> None:
        service = client.meta.service_model.service_name
        if service in self.stub:
            from botocore.stub import Stubber

            stubber = Stubber(client)
            for method, response in self.stub[service]:
                stubber.add_response(method, response)
            stubber.activate()

    def ctx(self, key: str, **kw: Any) -> ActionContext:
        return ActionContext(now=TEST_CLOCK.now, incident_key=key, client_hooks=(self.hook,), **kw)


def iam_action(service: str, operation: str, params: dict[str, Any]) -> str | None:
    """The IAM action an API call is authorised by."""
    if service == "sts" and operation == "GetCallerIdentity":
        return None  # needs no permission
    if service == "s3":
        versioned = bool(params.get("VersionId"))
        if operation == "ListObjectVersions":
            return "s3:ListBucketVersions"
        if operation == "GetObjectTagging" and versioned:
            return "s3:GetObjectVersionTagging"
        if operation == "DeleteObject" and versioned:
            return "s3:DeleteObjectVersion"
    return f"{service}:{operation}"


def check(recorder: Recorder, *features: str) -> None:
    assert recorder.actions, "nothing recorded"
    undeclared = recorder.actions - {p for f in features for p in BY_FEATURE[f]}
    assert not undeclared, f"{features} call undeclared {sorted(undeclared)}"


@pytest.fixture
def aws() -> Any:
    with mock_aws():
        yield


def test_impact(database: Any, aws: Any) -> None:
    ec2 = boto3.client("ec2", "us-east-1")
    image = "ami-12c6146b"  # one of moto's stock AMIs (listing them all costs seconds)
    iid = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    iam = boto3.client("iam")
    iam.create_user(UserName="ci")
    key = iam.create_access_key(UserName="ci")["AccessKey"]["AccessKeyId"]
    boto3.client("organizations").create_organization(FeatureSet="ALL")
    with database.session() as s:
        open_incident(session=s, title="a", created_by="U1", resource_id=iid)
        open_incident(session=s, title="b", created_by="U1", resource_id=key)
    rec = Recorder()
    for inc in ("INC-1", "INC-2"):
        refresh_impact(db=database, incident_key=inc, ctx=rec.ctx(inc), tag_keys={}, actor="U1")
    check(rec, "impact")
    assert "organizations:ListParents" in rec.actions


def test_trail(database: Any) -> None:
    with database.session() as s:
        open_incident(session=s, title="a", created_by="U1", resource_id="i-0abc1234def567890")
    rec = Recorder(
        {"cloudtrail": [("lookup_events", {"Events": [ct_event(1, "X", minutes_ago=1)]})]}
    )
    run_trail(
        db=database,
        ctx=rec.ctx("INC-1"),
        incident_key="INC-1",
        resource_id="i-0abc1234def567890",
        hours=1,
        actor="U1",
    )
    check(rec, "trail")


def test_abuse(database: Any) -> None:
    rec = Recorder({"support": [("create_case", {"caseId": "case-1"})]})
    report_abuse(db=database, ctx=rec.ctx("-"), reference="AWS-ABUSE-1", summary="spam", actor="U1")
    rec.stub = {
        "support": [
            ("describe_cases", {"cases": [{"caseId": "case-1", "status": "opened"}]}),
            ("describe_communications", {"communications": []}),
        ]
    }
    client = rec.ctx("-").home_client("support", "us-east-1")
    assert check_answers(db=database, client_for=lambda account: client) == []
    check(rec, "abuse")
    assert "support:DescribeCommunications" in rec.actions


def _approve_and_run(database: Any, request_id: int, engine: Any, ctx: ActionContext) -> None:
    with database.session() as s:
        decide(session=s, request_id=request_id, actor="U2", approve=True, approvers=["U2"])
    out = execute(
        database=database,
        request_id=request_id,
        engine=engine,
        context_factory=lambda r: ctx,
        heartbeat_every=60,
    )
    assert out is not None and out.status == "succeeded", out


def test_forensics_and_wipe(database: Any, aws: Any) -> None:
    ec2 = boto3.client("ec2", "us-east-1")
    image = "ami-12c6146b"  # one of moto's stock AMIs (listing them all costs seconds)
    vol = ec2.create_volume(AvailabilityZone="us-east-1a", Size=8)["VolumeId"]
    tag = [{"ResourceType": "snapshot", "Tags": [{"Key": INCIDENT_TAG, "Value": "INC-1"}]}]
    ec2.create_snapshot(VolumeId=vol, TagSpecifications=tag)
    s3 = boto3.client("s3", "us-east-1")
    s3.create_bucket(Bucket="ir-evidence")
    s3.put_bucket_versioning(Bucket="ir-evidence", VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(
        Bucket="ir-evidence",
        Key="incidents/INC-1/capture.json",
        Body=b"{}",
        Tagging=f"{INCIDENT_TAG}=INC-1",
    )
    boto3.client("kms", "us-east-1").create_key(
        Tags=[{"TagKey": INCIDENT_TAG, "TagValue": "INC-1"}]
    )
    with database.session() as s:
        open_incident(session=s, title="a", created_by="U1")
    clean_room = CleanRoomEngine(database=database, poll_seconds=0)
    rec = Recorder()
    ctx = rec.ctx("INC-1", evidence_bucket="ir-evidence")
    made = propose(
        db=database,
        ctx=ctx,
        incident_key="INC-1",
        teardown=False,
        requested_by="U1",
        expire_after=HOUR,
        ami_id=image,
    )
    _approve_and_run(database, made.request_id, clean_room, ctx)
    check(rec, "forensics")

    with database.session() as s:
        resolve_incident(
            session=s, incident=get_incident(session=s, key="INC-1"), actor="U1", summary="done"
        )
    rec = Recorder()
    ctx = rec.ctx("INC-1", evidence_bucket="ir-evidence")
    wipe = propose_wipe(
        db=database,
        ctx=ctx,
        incident_key="INC-1",
        requested_by="U1",
        expire_after=HOUR,
        kms_pending_days=7,
    )
    _approve_and_run(
        database, wipe.request_id, WipeEngine(database=database, clean_room=clean_room), ctx
    )
    check(rec, "wipe")
    assert {
        "s3:DeleteObjectVersion",
        "kms:ScheduleKeyDeletion",
        "cloudformation:DeleteStack",
    } <= rec.actions


def test_clean_room_template_resources_are_covered() -> None:
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    doc = yaml.load(TEMPLATE.read_text(), Loader=Loader)
    types = {r["Type"] for r in doc["Resources"].values()}
    assert types <= set(CREATES), types - set(CREATES)
    assert {CREATES[t] for t in types} <= set(BY_FEATURE["forensics"])


def test_policy_document_grants_them() -> None:
    granted = {a for s in policy_document()["Statement"] for a in s["Action"]}
    for feature, perms in BY_FEATURE.items():
        assert set(perms) <= granted, feature


def test_intake_polling_and_tags(database: Any, aws: Any) -> None:
    from commands.findings.normalize import normalize_finding
    from commands.findings.poll import poll_region
    from commands.findings.tags import read_resource_tags

    ec2 = boto3.client("ec2", region_name="us-east-1")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instance = ec2.run_instances(
        ImageId=image,
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": "DataClassification", "Value": "PII"}]}
        ],
    )["Instances"][0]["InstanceId"]
    recorder = Recorder(
        {
            "guardduty": [
                ("list_detectors", {"DetectorIds": ["det-1"]}),
                ("list_findings", {"FindingIds": []}),
            ]
        }
    )
    ctx = recorder.ctx("INC-1")
    poll_region(
        database=database,
        client=ctx.home_client("guardduty", "us-east-1"),
        region="us-east-1",
        min_severity=4,
    )
    finding = normalize_finding(
        {
            "id": "f1",
            "type": "Backdoor:EC2/C&CActivity.B!DNS",
            "severity": 8,
            "accountId": "123456789012",
            "region": "us-east-1",
            "resource": {"resourceType": "Instance", "instanceDetails": {"instanceId": instance}},
            "service": {"count": 1},
        }
    )
    tags, source = read_resource_tags(
        finding=finding,
        client_for=aws_client,  # the factory's default client, recorded too
    )
    assert source == "ec2" and tags["DataClassification"] == "PII"
    check(recorder, "intake", "resource_tags")


def test_contacts_publish(database: Any, aws: Any) -> None:
    from commands.approvals.contacts import Notice, notify_contacts

    arn = boto3.client("sns", region_name="us-east-1").create_topic(Name="secops")["TopicArn"]
    boto3.client("ses", region_name="us-east-1").verify_email_identity(
        EmailAddress="bot@example.com"
    )
    recorder = Recorder()
    with database.session() as session:
        incident = open_incident(session=session, title="t", created_by="U1")

    class Contacts:
        sns_topic_arn = arn
        slack_usergroup = None
        emails = ("security@example.com",)
        ses_sender = "bot@example.com"
        ses_region = "us-east-1"

    record = notify_contacts(
        database=database,
        incident_id=incident.id,
        notice=Notice("INC-1", "s", "b"),
        contacts=Contacts(),
    )  # the default SNS and SES clients: made by the one factory, so recorded too
    assert record["channels"]["sns"]["message_id"]
    assert list(record["channels"]["email"]["sent"]) == ["security@example.com"]
    check(recorder, "contacts")


def test_drill_in_a_sandbox_account(aws: Any) -> None:
    from commands.drills.sandbox import build_sandbox
    from commands.drills.sandbox_account import (
        pick_scenario,
        request_sample_finding,
        sandbox_from_account,
    )

    sandbox = build_sandbox(region="us-east-1")
    recorder = Recorder(
        {"guardduty": [("list_detectors", {"DetectorIds": ["d"]}), ("create_sample_findings", {})]}
    )
    ctx = recorder.ctx("INC-1")

    class Config:
        class drills:  # mirrors the settings section
            instance_id = sandbox.instance_id
            access_key_id = user_name = None

    sandbox_from_account(
        scenario=pick_scenario("ec2-c2"),
        config=Config(),
        ec2=ctx.home_client("ec2", "us-east-1"),
        sts=ctx.home_client("sts", "us-east-1"),
        region="us-east-1",
    )
    said = request_sample_finding(
        guardduty=ctx.home_client("guardduty", "us-east-1"),
        finding_type="Recon:EC2/PortProbeUnprotectedPort",
    )
    assert "requested on detector d" in said
    check(recorder, "drills")


def test_timeline_anchors(database: Any, aws: Any) -> None:
    from commands.anchors import due_anchors, write_s3_anchor

    boto3.client("s3", region_name="us-east-1").create_bucket(
        Bucket="evidence", ObjectLockEnabledForBucket=True
    )
    with database.session() as session:
        open_incident(session=session, title="t", created_by="U1")
    with database.read_session() as session:
        [due] = due_anchors(session=session, now=TEST_CLOCK.now())
    recorder = Recorder()
    s3 = recorder.ctx("INC-1").home_client("s3", "us-east-1")
    write_s3_anchor(s3=s3, bucket="evidence", anchor=due.anchor, retain_days=1)
    check(recorder, "anchors")


def test_writeback_calls_are_declared(database: Any) -> None:
    """The write-back's calls, made through the one client factory, are all declared."""
    from botocore.stub import Stubber

    from commands.findings.ingest import record_findings
    from commands.findings.normalize import normalize_finding
    from commands.incidents import get_incident, set_status
    from commands.writeback import write_back
    from containment.clients import aws_client
    from tests.commands.findings.guardduty_fixtures import ec2_detail

    arn = "arn:aws:guardduty:us-east-1:123456789012:detector/det1/finding/f1"
    finding = normalize_finding(ec2_detail(severity=8, arn=arn, id="f1"), region="us-east-1")
    with database.session() as session:
        record_findings(session=session, findings=[finding], min_severity=4.0)
    with database.session() as session:
        set_status(
            session=session,
            incident=get_incident(session=session, key="INC-1"),
            actor="U1",
            status="closed",
        )
    recorder = Recorder()
    stubbers = []

    def client_for(service: str, region: str | None) -> Any:
        client = aws_client(service, region)  # the factory the observer watches
        stub = Stubber(client)
        if service == "guardduty":
            stub.add_response("archive_findings", {})
        else:
            stub.add_response(
                "batch_update_findings", {"ProcessedFindings": [], "UnprocessedFindings": []}
            )
        stub.activate()
        stubbers.append(stub)
        return client

    result = write_back(
        database=database,
        key="INC-1",
        summary="done",
        archive=True,
        securityhub=True,
        client_for=client_for,
    )
    for stub in stubbers:
        stub.deactivate()
    assert result.archived == ["f1"]
    assert recorder.actions == {"guardduty:ArchiveFindings", "securityhub:BatchUpdateFindings"}
    check(recorder, "writeback")
