from __future__ import annotations

import boto3
from moto import mock_aws

from commands.drills.sandbox import build_sandbox
from commands.drills.scenarios import SCENARIOS


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
def test_every_scenario_finding_names_sandbox_resources() -> None:
    import datetime as dt

    sb = build_sandbox(region="us-east-1")
    now = dt.datetime.now(dt.UTC)
    for scenario in SCENARIOS.values():
        event = scenario.finding(sb, now)
        assert event["detail-type"] == "GuardDuty Finding"
        resource = event["detail"]["resource"]
        if scenario.target_kind == "instance":
            assert resource["instanceDetails"]["instanceId"] == sb.instance_id
        else:
            assert resource["accessKeyDetails"]["accessKeyId"] == sb.access_key_id
