"""Which plan a /contain argument or a GuardDuty finding leads to."""

from __future__ import annotations

import pytest

from commands.approvals.plans import (
    finding_principals,
    finding_target_kind,
    parse_target,
    target_from_dict,
    target_to_dict,
    typed_id,
)
from commands.errors import UserError


def test_an_arn_carries_its_own_region_and_account() -> None:
    target = parse_target(
        "arn:aws:lambda:eu-west-1:210987654321:function:resize",
        region="us-east-1",
        account_id="123456789012",
    )
    assert (target.kind, target.resource_id) == ("function", "resize")
    assert (target.region, target.account_id) == ("eu-west-1", "210987654321")


def test_typed_ids_round_trip() -> None:
    for kind, name in (("bucket", "logs"), ("function", "f"), ("db_instance", "db"), ("role", "r")):
        target = parse_target(typed_id(kind, name), region="us-east-1")
        assert (target.kind, target.resource_id) == (kind, name)
        assert target_from_dict(target_to_dict(target)) == target


def test_a_plain_name_needs_a_kind() -> None:
    with pytest.raises(UserError, match="bucket:NAME"):
        parse_target("exposed-data")
    assert parse_target("exposed-data", kind="bucket").kind == "bucket"


@pytest.mark.parametrize(
    ("resource_kind", "user_type", "expected"),
    [
        ("Instance", None, "instance"),
        ("AccessKey", "IAMUser", "access_key"),
        ("AccessKey", "AssumedRole", "role"),
        ("AccessKey", "Root", None),
        ("S3Bucket", None, "bucket"),
        ("Lambda", None, "function"),
        ("RDSDBInstance", None, "db_instance"),
        ("EKSCluster", None, None),
    ],
)
def test_finding_kinds(resource_kind: str, user_type: str | None, expected: str | None) -> None:
    assert finding_target_kind(resource_kind, user_type) == expected


def finding(user_type: str, user_name: str = "ci-deployer") -> dict:
    return {
        "id": "f1",
        "type": "UnauthorizedAccess:S3/MaliciousIPCaller.Custom",
        "severity": 8,
        "accountId": "123456789012",
        "resource": {
            "resourceType": "S3Bucket",
            "accessKeyDetails": {"userName": user_name, "userType": user_type},
        },
    }


def test_finding_principals() -> None:
    assert finding_principals(finding("IAMUser"), None) == (
        "arn:aws:iam::123456789012:user/ci-deployer",
    )
    assert finding_principals(finding("AssumedRole", "app-role"), None) == (
        "arn:aws:iam::123456789012:role/app-role",
    )
    assert finding_principals(finding("Federated"), None) == ()
    assert finding_principals({"not": "a finding"}, None) == ()
