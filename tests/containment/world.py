"""Build the containment test world in whatever AWS the clients point at (moto in-process or
moto_server): an instance with a root and two data volumes and two ENIs, in an Auto Scaling
group, behind an ELBv2 instance target group, an IP target group and a classic ELB, with an
instance profile; an evidence bucket with a KMS key; an IAM user with an access key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import boto3

from commands.drills.sandbox import create_instance_profile, open_to_the_internet
from containment.context import shared_session

REGION = "us-east-1"
AMI = "ami-12c6146b"  # one of moto's stock images
BUCKET = "ir-evidence-bucket"


@dataclass
class World:
    instance_id: str
    vpc_id: str
    enis: list[str]
    eni_groups: dict[str, list[str]]
    volumes: list[str]
    asg_name: str
    instance_tg: str
    ip_tg: str
    ip_target: str
    classic_elb: str
    profile_arn: str
    role_name: str
    bucket: str
    kms_key_id: str
    user_name: str
    access_key_id: str
    extra: dict[str, Any] = field(default_factory=dict)


def build_world(session: boto3.Session | None = None, *, region: str = REGION) -> World:
    s = session or shared_session()
    ec2 = s.client("ec2", region_name=region)
    iam = s.client("iam", region_name=region)
    asg = s.client("autoscaling", region_name=region)
    elb = s.client("elb", region_name=region)
    elbv2 = s.client("elbv2", region_name=region)
    s3 = s.client("s3", region_name=region)
    kms = s.client("kms", region_name=region)

    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"{region}{az}")[
            "Subnet"
        ]["SubnetId"]
        for i, az in ((1, "a"), (2, "b"))
    ]
    web = ec2.create_security_group(GroupName="web", Description="web", VpcId=vpc)["GroupId"]
    mgmt = ec2.create_security_group(GroupName="mgmt", Description="mgmt", VpcId=vpc)["GroupId"]
    open_to_the_internet(ec2, web, port=80)

    role = "app-role"
    profile = create_instance_profile(iam, role_name=role, profile_name="app-profile")

    run = ec2.run_instances(
        ImageId=AMI,
        MinCount=1,
        MaxCount=1,
        InstanceType="t3.micro",
        BlockDeviceMappings=[
            {"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 8, "DeleteOnTermination": True}},
            {"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 10}},
            {"DeviceName": "/dev/sdg", "Ebs": {"VolumeSize": 10}},
        ],
        NetworkInterfaces=[
            {"DeviceIndex": 0, "SubnetId": subnets[0], "Groups": [web]},
            {"DeviceIndex": 1, "SubnetId": subnets[0], "Groups": [mgmt, web]},
        ],
        IamInstanceProfile={"Name": "app-profile"},
        InstanceInitiatedShutdownBehavior="terminate",
        TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "web-1"}]}
        ],
    )
    instance = run["Instances"][0]
    iid = instance["InstanceId"]
    described = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    nics = sorted(described["NetworkInterfaces"], key=lambda n: n["Attachment"]["DeviceIndex"])
    enis = [n["NetworkInterfaceId"] for n in nics]
    eni_groups = {n["NetworkInterfaceId"]: [g["GroupId"] for g in n["Groups"]] for n in nics}
    volumes = [b["Ebs"]["VolumeId"] for b in described["BlockDeviceMappings"]]

    ec2.create_launch_template(
        LaunchTemplateName="web-template",
        LaunchTemplateData={"ImageId": AMI, "InstanceType": "t3.micro"},
    )
    asg.create_auto_scaling_group(
        AutoScalingGroupName="web-asg",
        LaunchTemplate={"LaunchTemplateName": "web-template"},
        MinSize=0,
        MaxSize=3,
        DesiredCapacity=0,
        VPCZoneIdentifier=subnets[0],
    )
    asg.attach_instances(InstanceIds=[iid], AutoScalingGroupName="web-asg")

    alb = elbv2.create_load_balancer(Name="web-alb", Subnets=subnets, SecurityGroups=[web])[
        "LoadBalancers"
    ][0]["LoadBalancerArn"]
    instance_tg = elbv2.create_target_group(
        Name="web-instances", Protocol="HTTP", Port=80, VpcId=vpc, TargetType="instance"
    )["TargetGroups"][0]["TargetGroupArn"]
    ip_tg = elbv2.create_target_group(
        Name="web-ips", Protocol="HTTP", Port=8080, VpcId=vpc, TargetType="ip"
    )["TargetGroups"][0]["TargetGroupArn"]
    elbv2.create_listener(
        LoadBalancerArn=alb,
        Protocol="HTTP",
        Port=80,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": instance_tg}],
    )
    ip_target = nics[1]["PrivateIpAddress"]
    elbv2.register_targets(TargetGroupArn=instance_tg, Targets=[{"Id": iid, "Port": 80}])
    elbv2.register_targets(TargetGroupArn=ip_tg, Targets=[{"Id": ip_target, "Port": 8080}])

    elb.create_load_balancer(
        LoadBalancerName="web-classic",
        Listeners=[{"Protocol": "HTTP", "LoadBalancerPort": 80, "InstancePort": 80}],
        Subnets=[subnets[0]],
        SecurityGroups=[web],
    )
    elb.register_instances_with_load_balancer(
        LoadBalancerName="web-classic", Instances=[{"InstanceId": iid}]
    )

    s3.create_bucket(Bucket=BUCKET)
    key_id = kms.create_key(Description="incident evidence")["KeyMetadata"]["KeyId"]

    iam.create_user(UserName="ci-deployer")
    access_key = iam.create_access_key(UserName="ci-deployer")["AccessKey"]["AccessKeyId"]

    return World(
        instance_id=iid,
        vpc_id=vpc,
        enis=enis,
        eni_groups=eni_groups,
        volumes=volumes,
        asg_name="web-asg",
        instance_tg=instance_tg,
        ip_tg=ip_tg,
        ip_target=ip_target,
        classic_elb="web-classic",
        profile_arn=profile["Arn"],
        role_name=role,
        bucket=BUCKET,
        kms_key_id=key_id,
        user_name="ci-deployer",
        access_key_id=access_key,
        extra={"subnets": subnets, "web": web, "mgmt": mgmt},
    )
