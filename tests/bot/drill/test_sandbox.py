from __future__ import annotations

import datetime as dt
import json

import boto3
from moto import mock_aws

from commands.approvals.plans import finding_target_kind
from commands.drills.sandbox import build_sandbox
from commands.drills.scenarios import SCENARIOS
from commands.findings.normalize import normalize


@mock_aws
def test_sandbox_is_the_realistic_environment_the_drill_promises() -> None:
    sb = build_sandbox(region="us-east-1")
    ec2 = boto3.client("ec2", region_name="us-east-1")
    inst = ec2.describe_instances(InstanceIds=[sb.instance_id])["Reservations"][0]["Instances"][0]
    assert len(inst["BlockDeviceMappings"]) == 3
    assert len(sb.eni_ids) == 2
    tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
    assert tags["DataClassification"] == "PII"
    assert inst["IamInstanceProfile"]["Arn"].endswith(sb.instance_profile_name)
    asg = boto3.client("autoscaling", region_name="us-east-1")
    members = asg.describe_auto_scaling_instances(InstanceIds=[sb.instance_id])
    assert members["AutoScalingInstances"][0]["AutoScalingGroupName"] == sb.asg_name
    elbv2 = boto3.client("elbv2", region_name="us-east-1")
    health = elbv2.describe_target_health(TargetGroupArn=sb.target_group_arn)
    assert [t["Target"]["Id"] for t in health["TargetHealthDescriptions"]] == [sb.instance_id]
    iam = boto3.client("iam", region_name="us-east-1")
    keys = iam.list_access_keys(UserName=sb.user_name)["AccessKeyMetadata"]
    assert keys[0]["AccessKeyId"] == sb.access_key_id


@mock_aws
def test_the_other_scenarios_have_their_own_subjects() -> None:
    sb = build_sandbox(region="us-east-1")
    ec2 = boto3.client("ec2", region_name="us-east-1")
    batch = ec2.describe_instances(InstanceIds=[sb.batch_instance_id])["Reservations"][0][
        "Instances"
    ][0]
    tags = {t["Key"]: t["Value"] for t in batch["Tags"]}
    assert "DataClassification" not in tags, "the batch host is the one without PII"
    assert sb.batch_instance_id != sb.instance_id and len(sb.batch_volume_ids) == 2
    s3 = boto3.client("s3", region_name="us-east-1")
    policy = json.loads(s3.get_bucket_policy(Bucket=sb.bucket_name)["Policy"])
    assert policy["Statement"][0]["Principal"] == "*"
    lam = boto3.client("lambda", region_name="us-east-1")
    fn = lam.get_function(FunctionName=sb.function_name)["Configuration"]
    assert fn["Role"].endswith(f"role/{sb.app_role_name}")
    statements = json.loads(lam.get_policy(FunctionName=sb.function_name)["Policy"])["Statement"]
    assert [s["Principal"] for s in statements] == ["*"]


@mock_aws
def test_every_scenario_finding_proposes_a_plan_on_its_sandbox_resource() -> None:
    sb = build_sandbox(region="us-east-1")
    expected = {
        "ec2-c2": sb.instance_id,
        "ssh-brute-force": sb.batch_instance_id,
        "iam-exfil": sb.access_key_id,
        "iam-role-outside": sb.app_role_name,
        "s3-public": sb.bucket_name,
        "lambda-c2": sb.function_name,
    }
    assert sorted(SCENARIOS) == sorted(expected) and len(SCENARIOS) >= 6
    for scenario in SCENARIOS.values():
        event = scenario.finding(sb, dt.datetime(2026, 11, 29, 12, tzinfo=dt.UTC))
        assert event["detail-type"] == "GuardDuty Finding"
        finding = normalize(event)[0]
        kind = finding_target_kind(finding.resource_kind, finding.user_type)
        assert kind == scenario.target_kind, scenario.name
        # Assumed-role credentials are contained on the role the finding names, not the key.
        subject = finding.user_name if kind == "role" else finding.resource_id
        assert subject == expected[scenario.name], scenario.name


def test_only_scenarios_about_personal_data_use_the_pii_host() -> None:
    for scenario in SCENARIOS.values():
        if scenario.target_kind == "instance" and not scenario.personal_data:
            assert scenario.host != "web", scenario.name
