"""Every GuardDuty resource type: its identifier from every fixture file, and its incident.

`RESOURCES` names, for every fixture file, the (resource_kind, resource_id) of each finding it
holds, in order; a new file in tests/fixtures/guardduty/ or sns/ fails here until it is listed.
The per-type tests below change one real finding (the aws-samples EC2 finding) into each
documented resource shape (API reference, `Resource`), in both casings.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from commands.findings.errors import BadFinding, Ignored
from commands.findings.ingest import record_findings
from commands.findings.normalize import NormalizedFinding, normalize, normalize_finding
from storage.db import Database
from storage.models import Incident
from tests.commands.findings.guardduty_fixtures import (
    GUARDDUTY_DIR,
    SNS_DIR,
    all_files,
    ec2_detail,
    payloads,
)

EC2 = ("Instance", "i-99999999")
NONE: list[tuple[str | None, str | None]] = []
# file -> [(resource_kind, resource_id) of each finding, in payload order]
RESOURCES: dict[str, list[tuple[str | None, str | None]]] = {
    "automated-response-sample__guardduty_ec2_event.json": [("Instance", "i-05746eb48123455e0")],
    "automated-response-sample__guardduty_iam_event.json": [
        ("AccessKey", "GeneratedFindingAccessKeyId")
    ],
    "automated-response-sample__guardduty_s3_event.json": [("S3Bucket", "bucketName")],
    "awsdocs-guardduty__GetFindings-REST-response-syntax.txt": NONE,
    "awsdocs-guardduty__eventbridge-rule-pattern-medium-high.json": NONE,
    "awsdocs-guardduty__input-transformer-paths.json": NONE,
    "custodian__ec2-duty-event.json": [EC2],
    "custodian__iam-duty-event.json": [("AccessKey", "GeneratedFindingAccessKeyId")],
    "guardduty-waf-acl__gd2acl_test_event.json": [EC2],
    # Trimmed by their authors: no resource left.
    "notify-slack__guardduty_finding_high.json": [(None, None)],
    "notify-slack__guardduty_finding_medium.json": [(None, None)],
    "notify-slack__guardduty_finding_low.json": [(None, None)],
    # Extended Threat Detection: the sequence spans resources and names none itself.
    "panther__aws_guardduty_critical_sev_findings.yml": [("AttackSequence", None)] * 2,
    "panther__aws_guardduty_high_sev_findings.yml": [(None, None)] * 2,
    "panther__aws_guardduty_med_sev_findings.yml": [(None, None)] * 2,
    "panther__aws_guardduty_low_sev_findings.yml": [(None, None)] * 2,
    "stix-shifter__test_aws_guardduty_json_to_stix.py.txt": [
        ("Instance", "i-0bc12345678910"),
        ("S3Bucket", "bucketName"),
        ("AccessKey", "SSSSSSSSSSSSSSS"),
        ("RDSDBInstance", None),  # the test keeps only ResourceType
    ],
    "stix-shifter__test_aws_guardduty_transmission.py.txt": [("Instance", "i-0999999999999999")],
    "sumologic__aws-api-call-via-cloudtrail_CreateSampleFindings.json": NONE,
}


def _findings(name: str) -> Iterator[NormalizedFinding]:
    path = GUARDDUTY_DIR / name if (GUARDDUTY_DIR / name).exists() else SNS_DIR / name
    for _label, payload in payloads(path):
        try:
            yield from normalize(payload)
        except (Ignored, BadFinding):
            continue  # tests/commands/findings/test_findings_normalize.py checks these


def _guardduty_files() -> list[str]:
    return sorted(p.name for p in all_files() if p.parent == GUARDDUTY_DIR)


def test_every_guardduty_fixture_file_is_listed() -> None:
    assert set(_guardduty_files()) == set(RESOURCES)


@pytest.mark.parametrize("name", _guardduty_files())
def test_each_file_gives_its_resources(name: str) -> None:
    expected = RESOURCES.get(name)
    assert expected is not None, f"list {name} in RESOURCES"
    assert [(f.resource_kind, f.resource_id) for f in _findings(name)] == expected


# -- every documented resource type, built from one real finding --------------------------

INSTANCE_DETAILS = ec2_detail()["resource"]["instanceDetails"]
SHAPES: dict[str, tuple[dict[str, Any], str, str]] = {
    # name: (resource, expected kind, expected id)
    "Instance": (
        {"resourceType": "Instance", "instanceDetails": INSTANCE_DETAILS},
        *EC2[:1],
        INSTANCE_DETAILS["instanceId"],
    ),
    "AccessKey": (
        {
            "resourceType": "AccessKey",
            "accessKeyDetails": {"accessKeyId": "AKIAIOSFODNN7EXAMPLE", "userName": "ci"},
        },
        "AccessKey",
        "AKIAIOSFODNN7EXAMPLE",
    ),
    "S3Bucket": (
        {
            "resourceType": "S3Bucket",
            "s3BucketDetails": [{"name": "ir-logs", "type": "Destination"}],
        },
        "S3Bucket",
        "ir-logs",
    ),
    "EKSCluster": (
        {
            "resourceType": "EKSCluster",
            "eksClusterDetails": {
                "name": "prod-eks",
                "arn": "arn:aws:eks:us-east-1:1:cluster/prod-eks",
            },
            "kubernetesDetails": {"kubernetesUserDetails": {"username": "system:anonymous"}},
        },
        "EKSCluster",
        "prod-eks",
    ),
    "ECSCluster": (
        {
            "resourceType": "ECSCluster",
            "ecsClusterDetails": {"name": "web", "taskDetails": {"definitionArn": "arn:td"}},
            "containerDetails": {"id": "abc123", "image": "nginx"},
        },
        "ECSCluster",
        "web",
    ),
    "Container": (
        {
            "resourceType": "Container",
            "containerDetails": {"id": "8f1e2a3b4c5d", "name": "web", "image": "nginx:1.25"},
            "instanceDetails": INSTANCE_DETAILS,
        },
        "Container",
        "8f1e2a3b4c5d",
    ),
    "Container on its host only": (
        {"resourceType": "Container", "instanceDetails": INSTANCE_DETAILS},
        "Instance",
        INSTANCE_DETAILS["instanceId"],
    ),
    "RDSDBInstance": (
        {
            "resourceType": "RDSDBInstance",
            "rdsDbInstanceDetails": {
                "dbInstanceIdentifier": "orders-db",
                "dbClusterIdentifier": "orders",
                "engine": "aurora-postgresql",
            },
            "rdsDbUserDetails": {"user": "admin", "application": "psql"},
        },
        "RDSDBInstance",
        "orders-db",
    ),
    "RDSLimitlessDB": (
        {
            "resourceType": "RDSLimitlessDB",
            "rdsLimitlessDbDetails": {
                "dbShardGroupIdentifier": "orders-shards",
                "dbClusterIdentifier": "orders",
                "engine": "aurora-postgresql",
            },
        },
        "RDSLimitlessDB",
        "orders-shards",
    ),
    "Lambda": (
        {
            "resourceType": "Lambda",
            "lambdaDetails": {
                "functionName": "invoice-renderer",
                "functionArn": "arn:aws:lambda:us-east-1:1:function:invoice-renderer",
            },
        },
        "Lambda",
        "invoice-renderer",
    ),
    "Malware Protection EBS volume scan": (
        {
            "resourceType": "Instance",
            "instanceDetails": INSTANCE_DETAILS,
            "ebsVolumeDetails": {
                "scannedVolumeDetails": [
                    {
                        "volumeArn": "arn:aws:ec2:us-east-1:1:volume/vol-0abc",
                        "deviceName": "/dev/xvda",
                    }
                ]
            },
        },
        "Instance",
        INSTANCE_DETAILS["instanceId"],
    ),
    "Malware Protection S3 object scan": (
        {
            "resourceType": "S3Object",
            "s3BucketDetails": [
                {"name": "uploads", "s3ObjectDetails": [{"key": "invoice.pdf", "eTag": "e1"}]}
            ],
        },
        "S3Bucket",
        "uploads",
    ),
}


def _shaped(
    name: str, finding_id: str = "f-1", finding_type: str = "Execution:Runtime/NewBinaryExecuted"
) -> dict[str, Any]:
    resource, _, _ = SHAPES[name]
    detail = ec2_detail(id=finding_id, type=finding_type, severity=8)
    detail["resource"] = resource
    return detail


def _pascal(value: Any) -> Any:
    if isinstance(value, dict):
        return {k[0].upper() + k[1:]: _pascal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_pascal(v) for v in value]
    return value


@pytest.mark.parametrize("name", sorted(SHAPES))
@pytest.mark.parametrize("casing", ["eventbridge", "boto3"])
def test_each_resource_type_gives_its_identifier(name: str, casing: str) -> None:
    _, kind, resource_id = SHAPES[name]
    detail = _shaped(name)
    finding = normalize_finding(detail if casing == "eventbridge" else _pascal(detail))
    assert (finding.resource_kind, finding.resource_id) == (kind, resource_id)


def test_scan_and_runtime_details_are_read() -> None:
    ebs = normalize_finding(_shaped("Malware Protection EBS volume scan"))
    assert ebs.volume_ids == ("vol-0abc",)
    s3 = normalize_finding(_shaped("Malware Protection S3 object scan"))
    assert s3.object_keys == ("invoice.pdf",)
    runtime = _shaped("Container")
    runtime["service"]["runtimeDetails"] = {
        "process": {"name": "xmrig", "executablePath": "/tmp/xmrig", "pid": 4242}
    }
    assert normalize_finding(runtime).process == "/tmp/xmrig"
    container = normalize_finding(_shaped("Container"))
    assert container.instance_id == INSTANCE_DETAILS["instanceId"]  # the host, kept apart


@pytest.fixture
def database(tmp_path, clock) -> Iterator[Database]:
    from storage.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'findings.db'}"
    upgrade(url)
    db = Database(url, clock=clock)
    yield db
    db.dispose()


def _record(database: Database, details: list[dict[str, Any]]) -> None:
    with database.session() as session:
        record_findings(
            session=session,
            findings=[normalize_finding(d) for d in details],
            min_severity=0.0,
            channel_id="C0INC",
        )


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_each_resource_type_opens_then_joins_one_incident(database: Database, name: str) -> None:
    _, kind, resource_id = SHAPES[name]
    _record(database, [_shaped(name, "f-1", "Execution:Runtime/NewBinaryExecuted")])
    _record(database, [_shaped(name, "f-2", "Backdoor:Runtime/C&CActivity.B")])
    with database.read_session() as session:
        incidents = list(session.scalars(select(Incident)))
    assert [(i.resource_type, i.resource_id) for i in incidents] == [(kind, resource_id)]


def test_findings_on_one_instance_join_whatever_their_type(database: Database) -> None:
    # EC2 network finding, EBS malware scan and a container on that host: one incident.
    _record(database, [_shaped("Instance", "f-1", "UnauthorizedAccess:EC2/SSHBruteForce")])
    _record(
        database,
        [_shaped("Malware Protection EBS volume scan", "f-2", "Execution:EC2/MaliciousFile")],
    )
    _record(
        database, [_shaped("Container on its host only", "f-3", "Execution:Runtime/ReverseShell")]
    )
    with database.read_session() as session:
        assert len(list(session.scalars(select(Incident)))) == 1
