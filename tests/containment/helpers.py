"""Reading AWS state back in containment tests (always per ENI: moto reports them apart)."""

from __future__ import annotations

from typing import Any

import boto3

from containment.context import shared_session
from tests.containment.world import REGION, World


def client(service: str, session: boto3.Session | None = None) -> Any:
    return (session or shared_session()).client(service, region_name=REGION)


def eni_groups(world: World, session: boto3.Session | None = None) -> dict[str, list[str]]:
    ec2 = client("ec2", session)
    found = ec2.describe_network_interfaces(NetworkInterfaceIds=world.enis)["NetworkInterfaces"]
    return {n["NetworkInterfaceId"]: [g["GroupId"] for g in n["Groups"]] for n in found}


def group_by_name(name: str, vpc: str, session: boto3.Session | None = None) -> dict | None:
    found = client("ec2", session).describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [name]}, {"Name": "vpc-id", "Values": [vpc]}]
    )["SecurityGroups"]
    return found[0] if found else None


def tags_of(resource_id: str, session: boto3.Session | None = None) -> dict[str, str]:
    found = client("ec2", session).describe_tags(
        Filters=[{"Name": "resource-id", "Values": [resource_id]}]
    )["Tags"]
    return {t["Key"]: t["Value"] for t in found}


def tg_targets(arn: str, session: boto3.Session | None = None) -> list[dict[str, Any]]:
    health = client("elbv2", session).describe_target_health(TargetGroupArn=arn)
    return [d["Target"] for d in health["TargetHealthDescriptions"]]


def classic_instances(name: str, session: boto3.Session | None = None) -> list[str]:
    lbs = client("elb", session).describe_load_balancers(LoadBalancerNames=[name])
    return [i["InstanceId"] for i in lbs["LoadBalancerDescriptions"][0]["Instances"]]


def asg_state(world: World, session: boto3.Session | None = None) -> tuple[str, int]:
    asg = client("autoscaling", session)
    member = asg.describe_auto_scaling_instances(InstanceIds=[world.instance_id])
    group = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[world.asg_name])
    return (
        member["AutoScalingInstances"][0]["LifecycleState"],
        group["AutoScalingGroups"][0]["DesiredCapacity"],
    )


def profile_arn(world: World, session: boto3.Session | None = None) -> str | None:
    found = client("ec2", session).describe_iam_instance_profile_associations(
        Filters=[{"Name": "instance-id", "Values": [world.instance_id]}]
    )["IamInstanceProfileAssociations"]
    live = [a for a in found if a["State"] == "associated"]
    return live[0]["IamInstanceProfile"]["Arn"] if live else None


def incident_snapshots(key: str, session: boto3.Session | None = None) -> list[dict[str, Any]]:
    return client("ec2", session).describe_snapshots(
        OwnerIds=["self"], Filters=[{"Name": "tag:incident-bot:incident", "Values": [key]}]
    )["Snapshots"]
