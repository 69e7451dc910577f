"""The optional flow-logs containment step: moto for coverage checks, Stubber for delivery."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from containment.actions.flow_logs import EnableFlowLogs, destination
from containment.context import ActionContext
from containment.idempotency import client_token
from containment.registry import RunState
from containment.tags import INCIDENT_TAG
from containment.targets import Target
from tests.clock import TEST_CLOCK

BUCKET = "ir-evidence"


@pytest.fixture
def instance() -> Any:
    with mock_aws():
        ec2 = boto3.client("ec2", "us-east-1")
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
        inst = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, SubnetId=subnet)
        i = inst["Instances"][0]
        second = ec2.create_network_interface(SubnetId=subnet)["NetworkInterface"]
        ec2.attach_network_interface(
            NetworkInterfaceId=second["NetworkInterfaceId"],
            InstanceId=i["InstanceId"],
            DeviceIndex=1,
        )
        enis = [i["NetworkInterfaces"][0]["NetworkInterfaceId"], second["NetworkInterfaceId"]]
        yield {"id": i["InstanceId"], "vpc": vpc, "subnet": subnet, "enis": enis}


def facts(inst: dict[str, Any]) -> dict[str, Any]:
    """The slice of the capture step's facts this action reads."""
    return {
        "instance": {"id": inst["id"], "subnet_id": inst["subnet"], "vpc_id": inst["vpc"]},
        "enis": [{"id": e, "vpc_id": inst["vpc"]} for e in inst["enis"]],
    }


def target(inst: dict[str, Any]) -> Target:
    return Target(kind="instance", resource_id=inst["id"], region="us-east-1")


def ctx(**kw: Any) -> ActionContext:
    return ActionContext(now=TEST_CLOCK.now, incident_key="INC-7", evidence_bucket=BUCKET, **kw)


def test_is_optional_and_declares_permissions() -> None:
    action = EnableFlowLogs()
    assert action.optional and action.name == "flow_logs"
    assert {"ec2:CreateFlowLogs", "ec2:DescribeFlowLogs"} <= set(action.permissions)
    assert destination(ctx()) == "arn:aws:s3:::ir-evidence/incidents/INC-7/flow-logs/"


def test_skips_when_the_vpc_is_already_logged(instance: dict[str, Any]) -> None:
    ec2 = boto3.client("ec2", "us-east-1")
    boto3.client("s3").create_bucket(Bucket="vpc-logs")
    existing = ec2.create_flow_logs(
        ResourceIds=[instance["vpc"]],
        ResourceType="VPC",
        TrafficType="ALL",
        LogDestinationType="s3",
        LogDestination="arn:aws:s3:::vpc-logs",
    )["FlowLogIds"]
    c = ctx()
    planned = EnableFlowLogs().calls(target(instance), c, facts(instance))
    assert [p.operation for p in planned] == ["DescribeFlowLogs"]
    assert "already logged by " + existing[0] in (planned[0].note or "")
    result = EnableFlowLogs().apply(target(instance), c, RunState(facts(instance), facts(instance)))
    assert result.status == "skipped" and existing[0] in (result.note or "")
    assert len(ec2.describe_flow_logs()["FlowLogs"]) == 1


def test_missing_bucket_is_a_failed_step(instance: dict[str, Any]) -> None:
    """CreateFlowLogs answers 200 with `Unsuccessful` entries; that must not read as success."""
    c = ctx()
    result = EnableFlowLogs().apply(target(instance), c, RunState(facts(instance), facts(instance)))
    assert result.status == "failed"
    assert result.error["operation"] == "CreateFlowLogs"
    assert "does not exist" in result.error["message"]
    assert sorted(result.state_left["enis_without_flow_logs"]) == sorted(instance["enis"])


def test_creates_for_unlogged_enis_only(instance: dict[str, Any]) -> None:
    """Delivery to a prefix, through a Stubber (moto takes the prefix for a bucket name)."""
    logged, unlogged = instance["enis"]
    stubs: list[Stubber] = []

    def hook(client: Any) -> None:
        if client.meta.service_model.service_name != "ec2":
            return
        stub = Stubber(client)
        stubs.append(stub)
        covering = [*instance["enis"], instance["vpc"], instance["subnet"]]
        if client.meta.config.retries["total_max_attempts"] == 1:
            # Creates go through a client that does not re-send (containment/idempotency.py).
            stub.add_response(
                "create_flow_logs",
                {"FlowLogIds": ["fl-0bbb"], "Unsuccessful": []},
                {
                    "ResourceIds": [unlogged],
                    "ResourceType": "NetworkInterface",
                    "TrafficType": "ALL",
                    "LogDestinationType": "s3",
                    "LogDestination": "arn:aws:s3:::ir-evidence/incidents/INC-7/flow-logs/",
                    "MaxAggregationInterval": 60,
                    "TagSpecifications": [
                        {
                            "ResourceType": "vpc-flow-log",
                            "Tags": [{"Key": INCIDENT_TAG, "Value": "INC-7"}],
                        }
                    ],
                    "ClientToken": client_token(c, "flow-logs", unlogged),
                },
            )
            stub.activate()
            return
        stub.add_response(
            "describe_flow_logs",
            {
                "FlowLogs": [
                    {
                        "FlowLogId": "fl-0aaa",
                        "ResourceId": logged,
                        "FlowLogStatus": "ACTIVE",
                        "LogDestination": "arn:aws:s3:::x",
                    }
                ]
            },
            {"Filters": [{"Name": "resource-id", "Values": covering}]},
        )
        stub.activate()

    c = ctx(client_hooks=(hook,))
    result = EnableFlowLogs().apply(target(instance), c, RunState(facts(instance), facts(instance)))
    assert result.status == "succeeded", result.error
    assert result.evidence["created"] == ["fl-0bbb"]
    assert result.changes == {"flow_log_ids": ["fl-0bbb"]}
    assert len(stubs) == 2
    for stub in stubs:
        stub.assert_no_pending_responses()


def test_without_evidence_bucket_nothing_to_do(instance: dict[str, Any]) -> None:
    c = ActionContext(now=TEST_CLOCK.now, incident_key="INC-7")
    result = EnableFlowLogs().apply(target(instance), c, RunState(facts(instance), facts(instance)))
    assert result.status == "skipped" and "no evidence bucket" in (result.note or "")
