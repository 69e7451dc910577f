"""A realistic AWS environment for drills, built with real boto3 calls.

Offline drills build it inside moto; the same builder can seed a real sandbox account.
What it builds mirrors a typical production web tier: a VPC, an instance with data
volumes and PII tags in an Auto Scaling group, behind an ALB target group, with an
instance profile; plus an IAM user with an access key for credential scenarios. Scenarios not
about personal data have their own resources: a batch host without PII tags, an application
role whose credentials can leak, a publicly readable export bucket and a Lambda function with
a public function URL.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from containment.clients import aws_client
from containment.context import ClientHook
from containment.revoker.local import in_process_revoker

WORKLOAD_TAGS = {
    "Name": "checkout-web-1",
    "DataClassification": "PII",
    "Criticality": "high",
    "Owner": "payments-team",
    "Application": "checkout",
}
# The batch host holds no personal data: scenarios about a compromised host that is not the
# PII web tier use it, so the drill does not start a regulator clock for them.
BATCH_TAGS = {
    "Name": "batch-worker-1",
    "Criticality": "medium",
    "Owner": "data-platform",
    "Application": "batch",
}
APP_ROLE_NAME = "report-builder-role"
EXPORT_BUCKET = "checkout-partner-exports"
FUNCTION_NAME = "thumbnail-resizer"
FUNCTION_URL_SID = "FunctionURLAllowPublicAccess"


@dataclass
class Sandbox:
    region: str
    account_id: str
    vpc_id: str
    subnet_id: str
    web_group_id: str
    instance_id: str
    volume_ids: list[str]
    eni_ids: list[str]
    asg_name: str
    target_group_arn: str
    instance_profile_name: str
    role_name: str
    user_name: str
    access_key_id: str
    tags: dict[str, str] = field(default_factory=lambda: dict(WORKLOAD_TAGS))
    # The resources of the scenarios that are not about the PII web host (empty when a real
    # sandbox account names only the web host and the user).
    batch_instance_id: str = ""
    batch_volume_ids: list[str] = field(default_factory=list)
    batch_eni_ids: list[str] = field(default_factory=list)
    batch_group_id: str = ""
    batch_tags: dict[str, str] = field(default_factory=dict)
    app_role_name: str = ""
    bucket_name: str = ""
    function_name: str = ""


def _tags(d: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in d.items()]


def open_to_the_internet(ec2: Any, group_id: str, *, port: int) -> None:
    """Let anyone reach `port` (TCP) through the group, as a public web tier does."""
    ec2.authorize_security_group_ingress(
        GroupId=group_id,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": port,
                "ToPort": port,
                "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
            }
        ],
    )


def create_instance_profile(iam: Any, *, role_name: str, profile_name: str) -> dict[str, Any]:
    """An EC2 role in an instance profile (what containment detaches); the profile."""
    iam.create_role(
        RoleName=role_name,
        AssumeRolePolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "ec2.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            }
        ),
    )
    profile = iam.create_instance_profile(InstanceProfileName=profile_name)["InstanceProfile"]
    iam.add_role_to_instance_profile(InstanceProfileName=profile_name, RoleName=role_name)
    return dict(profile)


def build_sandbox(*, region: str = "us-east-1") -> Sandbox:
    """Build the sandbox with the bot's own clients (containment/clients.py: the one factory)."""
    ec2 = aws_client("ec2", region)
    iam = aws_client("iam", region)
    asg = aws_client("autoscaling", region)
    elbv2 = aws_client("elbv2", region)
    sts = aws_client("sts", region)
    account_id = sts.get_caller_identity()["Account"]

    vpc_id = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnet_a = ec2.create_subnet(
        VpcId=vpc_id, CidrBlock="10.20.1.0/24", AvailabilityZone=f"{region}a"
    )
    subnet_b = ec2.create_subnet(
        VpcId=vpc_id, CidrBlock="10.20.2.0/24", AvailabilityZone=f"{region}b"
    )
    subnet_id = subnet_a["Subnet"]["SubnetId"]
    web = ec2.create_security_group(GroupName="checkout-web", Description="web tier", VpcId=vpc_id)
    web_group_id = web["GroupId"]
    open_to_the_internet(ec2, web_group_id, port=443)

    role_name = "checkout-web-role"
    profile_name = "checkout-web-profile"
    profile = create_instance_profile(iam, role_name=role_name, profile_name=profile_name)

    # Filtered by name: Amazon's whole catalogue is thousands of images (seconds to list).
    image_id = ec2.describe_images(
        Owners=["amazon"], Filters=[{"Name": "name", "Values": ["amzn2-ami-hvm-*-x86_64-gp2"]}]
    )["Images"][0]["ImageId"]
    reservation = ec2.run_instances(
        ImageId=image_id,
        InstanceType="t3.medium",
        MinCount=1,
        MaxCount=1,
        # Groups on the interface, as the console does: the ENI is what containment edits.
        NetworkInterfaces=[{"DeviceIndex": 0, "SubnetId": subnet_id, "Groups": [web_group_id]}],
        IamInstanceProfile={"Arn": profile["Arn"]},
        BlockDeviceMappings=[
            {"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 8, "DeleteOnTermination": True}},
            {"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 20, "DeleteOnTermination": True}},
            {"DeviceName": "/dev/sdg", "Ebs": {"VolumeSize": 50, "DeleteOnTermination": True}},
        ],
        TagSpecifications=[{"ResourceType": "instance", "Tags": _tags(WORKLOAD_TAGS)}],
    )
    instance_id = reservation["Instances"][0]["InstanceId"]
    # A second interface, as on instances with a management network.
    eni2 = ec2.create_network_interface(SubnetId=subnet_id, Groups=[web_group_id])
    ec2.attach_network_interface(
        NetworkInterfaceId=eni2["NetworkInterface"]["NetworkInterfaceId"],
        InstanceId=instance_id,
        DeviceIndex=1,
    )
    desc = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    volume_ids = [m["Ebs"]["VolumeId"] for m in desc.get("BlockDeviceMappings", [])]
    eni_ids = [n["NetworkInterfaceId"] for n in desc.get("NetworkInterfaces", [])]

    lt = ec2.create_launch_template(
        LaunchTemplateName="checkout-web",
        LaunchTemplateData={"ImageId": image_id, "InstanceType": "t3.medium"},
    )["LaunchTemplate"]
    asg_name = "checkout-web-asg"
    asg.create_auto_scaling_group(
        AutoScalingGroupName=asg_name,
        LaunchTemplate={"LaunchTemplateId": lt["LaunchTemplateId"], "Version": "$Latest"},
        MinSize=0,
        MaxSize=3,
        DesiredCapacity=0,
        VPCZoneIdentifier=subnet_id,
    )
    asg.attach_instances(InstanceIds=[instance_id], AutoScalingGroupName=asg_name)

    lb = elbv2.create_load_balancer(
        Name="checkout-alb",
        Subnets=[subnet_id, subnet_b["Subnet"]["SubnetId"]],
        SecurityGroups=[web_group_id],
    )["LoadBalancers"][0]
    tg = elbv2.create_target_group(
        Name="checkout-web", Protocol="HTTPS", Port=443, VpcId=vpc_id, TargetType="instance"
    )["TargetGroups"][0]
    elbv2.create_listener(
        LoadBalancerArn=lb["LoadBalancerArn"],
        Protocol="HTTP",
        Port=80,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg["TargetGroupArn"]}],
    )
    elbv2.register_targets(
        TargetGroupArn=tg["TargetGroupArn"], Targets=[{"Id": instance_id, "Port": 443}]
    )

    user_name = "ci-deployer"
    iam.create_user(UserName=user_name)
    key = iam.create_access_key(UserName=user_name)["AccessKey"]

    batch = _build_batch_host(ec2, vpc_id=vpc_id, subnet_id=subnet_id, image_id=image_id)
    app_role = _build_app_role(iam)
    _build_export_bucket(aws_client("s3", region), EXPORT_BUCKET)
    _build_function(aws_client("lambda", region), role_arn=app_role)

    return Sandbox(
        region=region,
        account_id=account_id,
        vpc_id=vpc_id,
        subnet_id=subnet_id,
        web_group_id=web_group_id,
        instance_id=instance_id,
        volume_ids=volume_ids,
        eni_ids=eni_ids,
        asg_name=asg_name,
        target_group_arn=tg["TargetGroupArn"],
        instance_profile_name=profile_name,
        role_name=role_name,
        user_name=user_name,
        access_key_id=key["AccessKeyId"],
        batch_instance_id=batch["instance_id"],
        batch_volume_ids=batch["volume_ids"],
        batch_eni_ids=batch["eni_ids"],
        batch_group_id=batch["group_id"],
        batch_tags=dict(BATCH_TAGS),
        app_role_name=APP_ROLE_NAME,
        bucket_name=EXPORT_BUCKET,
        function_name=FUNCTION_NAME,
    )


def _build_batch_host(ec2: Any, *, vpc_id: str, subnet_id: str, image_id: str) -> dict[str, Any]:
    """A lone worker (no Auto Scaling, no load balancer) reachable over SSH, without PII."""
    group_id = ec2.create_security_group(
        GroupName="batch-workers", Description="batch workers", VpcId=vpc_id
    )["GroupId"]
    open_to_the_internet(ec2, group_id, port=22)
    instance = ec2.run_instances(
        ImageId=image_id,
        InstanceType="c6i.large",
        MinCount=1,
        MaxCount=1,
        NetworkInterfaces=[{"DeviceIndex": 0, "SubnetId": subnet_id, "Groups": [group_id]}],
        BlockDeviceMappings=[
            {"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 8, "DeleteOnTermination": True}},
            {"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 100, "DeleteOnTermination": True}},
        ],
        TagSpecifications=[{"ResourceType": "instance", "Tags": _tags(BATCH_TAGS)}],
    )["Instances"][0]
    desc = ec2.describe_instances(InstanceIds=[instance["InstanceId"]])["Reservations"][0][
        "Instances"
    ][0]
    return {
        "instance_id": instance["InstanceId"],
        "volume_ids": [m["Ebs"]["VolumeId"] for m in desc.get("BlockDeviceMappings", [])],
        "eni_ids": [n["NetworkInterfaceId"] for n in desc.get("NetworkInterfaces", [])],
        "group_id": group_id,
    }


def _build_app_role(iam: Any) -> str:
    """The role a reporting job assumes (and the Lambda function runs as); its ARN."""
    role = iam.create_role(
        RoleName=APP_ROLE_NAME,
        AssumeRolePolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "lambda.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            }
        ),
    )["Role"]
    return str(role["Arn"])


def _build_export_bucket(s3: Any, name: str) -> None:
    """A bucket someone made world-readable: the S3 exposure scenario's subject."""
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key="exports/2026-11-28.csv", Body=b"order_id,amount\n")
    s3.put_bucket_policy(
        Bucket=name,
        Policy=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Sid": "PartnerDownload",
                        "Effect": "Allow",
                        "Principal": "*",
                        "Action": "s3:GetObject",
                        "Resource": f"arn:aws:s3:::{name}/*",
                    }
                ],
            }
        ),
    )


def _build_function(lam: Any, *, role_arn: str) -> None:
    """A function anyone can invoke through its URL: the Lambda scenario's subject."""
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as zf:
        zf.writestr("handler.py", "def handler(event, context):\n    return {}\n")
    lam.create_function(
        FunctionName=FUNCTION_NAME,
        Runtime="python3.12",
        Role=role_arn,
        Handler="handler.handler",
        Code={"ZipFile": code.getvalue()},
        Environment={"Variables": {"OUTPUT_BUCKET": "thumbnails"}},
    )
    lam.add_permission(
        FunctionName=FUNCTION_NAME,
        StatementId=FUNCTION_URL_SID,
        Action="lambda:InvokeFunctionUrl",
        Principal="*",
        FunctionUrlAuthType="NONE",
    )


def deployed_functions(now: Callable[[], datetime]) -> tuple[ClientHook, ...]:
    """What the deployment runs in the account that moto cannot: incident-bot-revoker's code,
    run in this process when the bot invokes it (for the offline drill's client hooks)."""
    return (in_process_revoker(now),)


def describe(sandbox: Sandbox) -> dict[str, Any]:
    """A plain summary for the transcript."""
    return {
        "instance": sandbox.instance_id,
        "volumes": len(sandbox.volume_ids),
        "interfaces": len(sandbox.eni_ids),
        "auto_scaling_group": sandbox.asg_name,
        "target_group": sandbox.target_group_arn.rsplit("/", 2)[-2],
        "instance_profile": sandbox.instance_profile_name,
        "tags": sandbox.tags,
        "batch_host": sandbox.batch_instance_id,
        "application_role": sandbox.app_role_name,
        "export_bucket": sandbox.bucket_name,
        "function": sandbox.function_name,
    }
