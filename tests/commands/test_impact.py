"""Blast radius from tags, Organizations and network neighbours, against moto."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from commands.errors import UserError
from commands.impact import (
    account_info,
    estimate_impact,
    impact_for_new_incident,
    refresh_impact,
    summary_lines,
)
from commands.incidents import get_incident, open_incident
from containment.context import ActionContext
from storage.timeline import latest_events
from tests.clock import TEST_CLOCK

TAG_KEYS = {
    "name": "Name",
    "data_classification": "DataClassification",
    "criticality": "Criticality",
    "owner": "Owner",
    "application": "Application",
}
AMI = "ami-12c6146b"


def _tags(**kv: str) -> list[dict[str, Any]]:
    return [{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in kv.items()]}]


@pytest.fixture
def aws() -> Any:
    with mock_aws():
        yield


@pytest.fixture
def network(aws: Any) -> dict[str, str]:
    ec2 = boto3.client("ec2", "us-east-1")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    other_subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.2.0/24")["Subnet"]["SubnetId"]
    web = ec2.create_security_group(GroupName="web", Description="web", VpcId=vpc)["GroupId"]
    db = ec2.create_security_group(GroupName="db", Description="db", VpcId=vpc)["GroupId"]
    victim = ec2.run_instances(
        ImageId=AMI,
        MinCount=1,
        MaxCount=1,
        SubnetId=subnet,
        SecurityGroupIds=[web],
        TagSpecifications=_tags(
            Name="web-1", DataClassification="PII", Criticality="high", Owner="payments"
        ),
    )["Instances"][0]["InstanceId"]
    # Same group, other subnet; carries a classification.
    peer = ec2.run_instances(
        ImageId=AMI,
        MinCount=1,
        MaxCount=1,
        SubnetId=other_subnet,
        SecurityGroupIds=[web],
        TagSpecifications=_tags(Name="web-2", DataClassification="Confidential"),
    )["Instances"][0]["InstanceId"]
    # Same subnet, other group, untagged.
    ec2.run_instances(ImageId=AMI, MinCount=2, MaxCount=2, SubnetId=subnet, SecurityGroupIds=[db])
    # Unrelated: other subnet, other group.
    ec2.run_instances(
        ImageId=AMI, MinCount=1, MaxCount=1, SubnetId=other_subnet, SecurityGroupIds=[db]
    )
    return {"victim": victim, "peer": peer, "web": web, "db": db, "subnet": subnet}


def ctx(key: str = "INC-1") -> ActionContext:
    return ActionContext(now=TEST_CLOCK.now, incident_key=key)


def test_instance_blast_radius(network: dict[str, str]) -> None:
    impact = estimate_impact(
        ctx=ctx(), resource_id=network["victim"], region="us-east-1", tag_keys=TAG_KEYS
    )
    assert impact["tags"] == {
        "name": "web-1",
        "data_classification": "PII",
        "criticality": "high",
        "owner": "payments",
    }
    net = impact["network"]
    assert [g["id"] for g in net["security_groups"]] == [network["web"]]
    assert net["per_security_group"] == {network["web"]: 1}
    assert net["per_subnet"] == {network["subnet"]: 2}
    assert net["neighbour_count"] == 3
    assert net["neighbour_instances"] == 3
    # The tagged neighbour sorts first and says how it is related.
    first = net["neighbours"][0]
    assert first["instance_id"] == network["peer"]
    assert first["tags"] == {"name": "web-2", "data_classification": "Confidential"}
    assert first["via"] == [network["web"]]
    assert all(n.get("instance_id") != network["victim"] for n in net["neighbours"])
    # No organization in this moto account: said plainly, not an error.
    assert impact["account"]["id"] == "123456789012"
    assert "not readable" in impact["account"]["note"]
    lines = summary_lines(impact)
    assert lines[0].startswith("name: web-1, data classification: PII")
    assert "3 neighbouring interfaces (3 instances, 1 tagged)" in lines


def test_account_name_and_ou_from_organizations(network: dict[str, str]) -> None:
    org = boto3.client("organizations")
    org.create_organization(FeatureSet="ALL")
    root = org.list_roots()["Roots"][0]["Id"]
    prod = org.create_organizational_unit(ParentId=root, Name="Prod")["OrganizationalUnit"]["Id"]
    pay = org.create_organizational_unit(ParentId=prod, Name="Payments")["OrganizationalUnit"]
    created = org.create_account(Email="pay@example.com", AccountName="payments-prod")
    member = created["CreateAccountStatus"]["AccountId"]
    org.move_account(AccountId=member, SourceParentId=root, DestinationParentId=pay["Id"])

    info = account_info(organizations=org, account_id=member)
    assert info["name"] == "payments-prod"
    assert info["ou"] == "Payments"
    assert [p["name"] for p in info["ou_path"]] == ["Prod", "Payments"]
    # The management account itself sits under the root.
    own = account_info(organizations=org, account_id="123456789012")
    assert own["ou"] == "Root" and own["ou_path"] == []


def test_organizations_access_denied_is_a_note() -> None:
    org = boto3.client("organizations", "us-east-1")
    with Stubber(org) as stub:
        stub.add_client_error(
            "describe_account", "AccessDeniedException", "You don't have permissions", 400
        )
        info = account_info(organizations=org, account_id="210987654321")
    assert info == {
        "id": "210987654321",
        "note": "AWS Organizations not readable from this account (access denied)",
    }


def test_access_key_blast_radius(aws: Any) -> None:
    iam = boto3.client("iam")
    iam.create_user(UserName="ci", Tags=[{"Key": "Owner", "Value": "platform"}])
    policy = iam.create_policy(
        PolicyName="deploy",
        PolicyDocument='{"Version":"2012-10-17",'
        '"Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}',
    )
    iam.attach_user_policy(UserName="ci", PolicyArn=policy["Policy"]["Arn"])
    key = iam.create_access_key(UserName="ci")["AccessKey"]["AccessKeyId"]
    impact = estimate_impact(ctx=ctx(), resource_id=key, region="us-east-1", tag_keys=TAG_KEYS)
    assert impact["user"] == "ci"
    assert impact["tags"] == {"owner": "platform"}
    assert impact["attached_policies"] == ["deploy"]
    assert "IAM user ci (deploy)" in summary_lines(impact)


def test_missing_instance_is_a_note(aws: Any) -> None:
    impact = estimate_impact(
        ctx=ctx(), resource_id="i-0123456789abcdef0", region="us-east-1", tag_keys=TAG_KEYS
    )
    assert "network" not in impact
    assert any("not found" in n for n in impact["notes"])


def test_refresh_stores_facts_and_timeline(database: Any, network: dict[str, str]) -> None:
    with database.session() as s:
        open_incident(
            session=s,
            title="web-1 beaconing",
            created_by="U1",
            resource_id=network["victim"],
            region="us-east-1",
        )
        open_incident(session=s, title="no resource", created_by="U1")
    impact = refresh_impact(
        db=database, incident_key="INC-1", ctx=ctx(), tag_keys=TAG_KEYS, actor="U1"
    )
    with database.read_session() as s:
        inc = get_incident(session=s, key="INC-1")
        assert inc.facts["impact"] == impact
        ev = latest_events(session=s, incident=inc, limit=1)[0]
        assert ev.kind == "impact.estimated" and ev.actor == "U1"
        assert "data classification: PII" in ev.summary
    with pytest.raises(UserError, match="names no affected resource"):
        refresh_impact(db=database, incident_key="INC-2", ctx=ctx(), tag_keys=TAG_KEYS, actor="U1")
    # The intake hook stays quiet when there is nothing to examine.
    assert (
        impact_for_new_incident(db=database, incident_key="INC-2", ctx=ctx(), tag_keys=TAG_KEYS)
        is None
    )
    assert (
        impact_for_new_incident(db=database, incident_key="INC-1", ctx=ctx(), tag_keys=TAG_KEYS)[
            "tags"
        ]["criticality"]
        == "high"
    )
