"""Resource tags for the finding card, read from EC2/IAM under moto."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from sqlalchemy import select

from commands.deadlines.policy import DeadlinePolicy
from commands.findings.ingest import record_findings
from commands.findings.normalize import normalize_finding
from commands.findings.tags import read_resource_tags, store_resource_tags
from storage.db import Database
from storage.models import Incident, TimelineEvent
from tests.commands.findings.guardduty_fixtures import ec2_detail, load_json

TAGS = {
    "Name": "web-1",
    "DataClassification": "PII",
    "Criticality": "high",
    "Owner": "team-payments",
}


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        yield


def client_for(service: str, region: str | None) -> Any:
    return boto3.client(service, region_name=region or "us-east-1")


def run_instance(tags: dict[str, str]) -> str:
    ec2 = boto3.client("ec2", region_name="us-east-1")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    spec = [{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
    reservation = ec2.run_instances(
        ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.micro", TagSpecifications=spec
    )
    return reservation["Instances"][0]["InstanceId"]


def test_instance_tags_come_from_ec2(aws: None) -> None:
    instance_id = run_instance(TAGS)
    finding = normalize_finding(ec2_detail(resource__instanceDetails__instanceId=instance_id))
    tags, source = read_resource_tags(finding=finding, client_for=client_for)
    assert source == "ec2"
    # EC2's answer wins over the copy in the finding; the finding's other tags stay.
    assert tags == {**TAGS}
    assert finding.tags == {"Name": "ssh-22-open"}


def test_unknown_instance_falls_back_to_the_finding_tags(aws: None) -> None:
    finding = normalize_finding(
        ec2_detail(resource__instanceDetails__instanceId="i-0123456789abcdef0")
    )
    assert read_resource_tags(finding=finding, client_for=client_for) == (
        {"Name": "ssh-22-open"},
        "finding",
    )


def test_aws_errors_fall_back_to_the_finding_tags(aws: None) -> None:
    def broken(service: str, region: str | None) -> Any:
        return boto3.client(service, region_name="us-east-1", endpoint_url="http://127.0.0.1:9")

    finding = normalize_finding(ec2_detail())
    tags, source = read_resource_tags(finding=finding, client_for=broken)
    assert (tags, source) == ({"Name": "ssh-22-open"}, "finding")


def test_access_key_tags_come_from_the_iam_user(aws: None) -> None:
    iam = boto3.client("iam", region_name="us-east-1")
    iam.create_user(UserName="GeneratedFindingUserName", Tags=[{"Key": "Owner", "Value": "ci"}])
    finding = normalize_finding(load_json("custodian__iam-duty-event.json")["detail"])
    assert read_resource_tags(finding=finding, client_for=client_for) == ({"Owner": "ci"}, "iam")


def test_missing_iam_user_falls_back(aws: None) -> None:
    finding = normalize_finding(load_json("custodian__iam-duty-event.json")["detail"])
    assert read_resource_tags(finding=finding, client_for=client_for) == ({}, "finding")


def test_stored_tags_land_on_the_incident_and_its_timeline(aws: None, database: Database) -> None:
    instance_id = run_instance(TAGS)
    finding = normalize_finding(ec2_detail(resource__instanceDetails__instanceId=instance_id))
    with database.session() as session:
        (result,) = record_findings(session=session, findings=[finding], min_severity=4)
    tags, source = read_resource_tags(finding=finding, client_for=client_for)
    store_resource_tags(
        database=database,
        incident_id=result.incident_id,
        tags=tags,
        source=source,
        policy=DeadlinePolicy(),
    )
    with database.read_session() as session:
        incident = session.get(Incident, result.incident_id)
        assert incident.facts["tags"] == TAGS
        assert incident.facts["tags_source"] == "ec2"
        assert incident.facts["source"] == "guardduty"
        kinds = session.scalars(
            select(TimelineEvent.kind).where(TimelineEvent.incident_id == incident.id)
        ).all()
    # DataClassification=PII also starts the regulator clock (commands.deadlines).
    assert kinds == ["incident.opened", "resource.tags", "incident.personal_data"]
