"""What AWS holds after a containment, as a comparable value (ids and times left out).

Two runs of the same containment on fresh worlds must give equal states; counts of created
resources are kept (not sets), so a duplicate snapshot, group, key or policy shows."""

from __future__ import annotations

from collections import Counter
from typing import Any

import boto3

from containment.tags import TIME_TAG
from tests.containment.world import REGION, World
from tests.reliability.kinds import kind_state

_VARYING_TAGS = {TIME_TAG}


def _tags(tags: list[dict[str, str]] | None) -> tuple[tuple[str, str], ...]:
    return tuple(
        sorted((t["Key"], "*" if t["Key"] in _VARYING_TAGS else t["Value"]) for t in tags or [])
    )


def _stable(world: World) -> dict[str, str]:
    """The world's own ids, which differ between fresh worlds, by their role in it."""
    names = {world.instance_id: "instance", world.access_key_id: "access-key"}
    names.update({v: f"volume-{i}" for i, v in enumerate(world.volumes)})
    names.update({e: f"eni-{i}" for i, e in enumerate(world.enis)})
    names.update({world.vpc_id: "vpc"})
    names.update(world.extra.get("renames", {}))  # ids of the kind's own resources
    return names


def _rename(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, str):
        for old, new in names.items():
            value = value.replace(old, new)
        return value
    if isinstance(value, tuple):
        return tuple(_rename(v, names) for v in value)
    if isinstance(value, list):
        return [_rename(v, names) for v in value]
    if isinstance(value, Counter):
        return Counter({_rename(k, names): n for k, n in value.items()})
    return value


def aws_state(session: boto3.Session, world: World) -> dict[str, Any]:
    names = _stable(world)
    state = {**_state(session, world), **kind_state(session, world)}
    out = {k: _rename(v, names) for k, v in state.items()}
    return {k: sorted(v) if isinstance(v, list) else v for k, v in out.items()}


def _state(session: boto3.Session, world: World) -> dict[str, Any]:
    def c(service: str) -> Any:
        return session.client(service, region_name=REGION)

    ec2, iam, kms, s3 = c("ec2"), c("iam"), c("kms"), c("s3")
    groups = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [world.vpc_id]}])
    names = {g["GroupId"]: g["GroupName"] for g in groups["SecurityGroups"]}
    snaps = ec2.describe_snapshots(
        OwnerIds=["self"], Filters=[{"Name": "volume-id", "Values": world.volumes}]
    )["Snapshots"]
    enis = ec2.describe_network_interfaces(NetworkInterfaceIds=world.enis)["NetworkInterfaces"]
    instance = ec2.describe_instances(InstanceIds=[world.instance_id])["Reservations"][0][
        "Instances"
    ][0]
    assoc = ec2.describe_iam_instance_profile_associations(
        Filters=[{"Name": "instance-id", "Values": [world.instance_id]}]
    )["IamInstanceProfileAssociations"]
    flow_logs = ec2.describe_flow_logs()["FlowLogs"]
    roles = iam.list_roles()["Roles"]
    keys = kms.list_keys()["Keys"]
    asg = c("autoscaling")
    member = asg.describe_auto_scaling_instances(InstanceIds=[world.instance_id])
    objects = s3.list_objects_v2(Bucket=world.bucket).get("Contents", [])
    return {
        "security_groups": Counter(
            (g["GroupName"], len(g["IpPermissions"]), len(g["IpPermissionsEgress"]))
            for g in groups["SecurityGroups"]
        ),
        "snapshots": Counter((s["VolumeId"], _tags(s.get("Tags"))) for s in snaps),
        "eni_groups": sorted(
            (n["NetworkInterfaceId"], tuple(sorted(names[g["GroupId"]] for g in n["Groups"])))
            for n in enis
        ),
        "instance_tags": _tags(instance.get("Tags")),
        "volume_tags": sorted(
            (v["VolumeId"], _tags(v.get("Tags")))
            for v in ec2.describe_volumes(VolumeIds=world.volumes)["Volumes"]
        ),
        "termination_protection": ec2.describe_instance_attribute(
            InstanceId=world.instance_id, Attribute="disableApiTermination"
        )["DisableApiTermination"]["Value"],
        "shutdown_behaviour": ec2.describe_instance_attribute(
            InstanceId=world.instance_id, Attribute="instanceInitiatedShutdownBehavior"
        )["InstanceInitiatedShutdownBehavior"]["Value"],
        "profile_associations": Counter(
            (a["IamInstanceProfile"]["Arn"].rsplit("/", 1)[-1], a["State"]) for a in assoc
        ),
        "flow_logs": Counter((f["ResourceId"], f.get("LogDestination")) for f in flow_logs),
        "roles": Counter(r["RoleName"] for r in roles),
        "role_policies": sorted(
            (r["RoleName"], tuple(iam.list_role_policies(RoleName=r["RoleName"])["PolicyNames"]))
            for r in roles
        ),
        "instance_profiles": Counter(
            (p["InstanceProfileName"], tuple(sorted(r["RoleName"] for r in p["Roles"])))
            for p in iam.list_instance_profiles()["InstanceProfiles"]
        ),
        "user_policies": tuple(iam.list_user_policies(UserName=world.user_name)["PolicyNames"]),
        "access_keys": sorted(
            (k["AccessKeyId"], k["Status"])
            for k in iam.list_access_keys(UserName=world.user_name)["AccessKeyMetadata"]
        ),
        "kms_keys": Counter(
            kms.describe_key(KeyId=k["KeyId"])["KeyMetadata"]["KeyState"] for k in keys
        ),
        "kms_aliases": sorted(
            a["AliasName"]
            for a in kms.list_aliases()["Aliases"]
            if not a["AliasName"].startswith("alias/aws/")
        ),
        "asg": [
            (m["LifecycleState"], m["AutoScalingGroupName"]) for m in member["AutoScalingInstances"]
        ],
        "asg_desired": asg.describe_auto_scaling_groups(AutoScalingGroupNames=[world.asg_name])[
            "AutoScalingGroups"
        ][0]["DesiredCapacity"],
        "target_groups": sorted(
            (arn.rsplit("/", 2)[-2], d["Target"]["Id"] == world.instance_id)
            for arn in (world.instance_tg, world.ip_tg)
            for d in c("elbv2").describe_target_health(TargetGroupArn=arn)[
                "TargetHealthDescriptions"
            ]
        ),
        "classic_elb": [
            i["InstanceId"]
            for i in c("elb").describe_load_balancers(LoadBalancerNames=[world.classic_elb])[
                "LoadBalancerDescriptions"
            ][0]["Instances"]
        ],
        "evidence_objects": len(objects),
    }


def duplicates(got: dict[str, Any], want: dict[str, Any]) -> int:
    """Resources present more often than after a clean run (every counted field)."""
    return sum(
        max(0, n - want[field].get(key, 0))
        for field, counts in got.items()
        if isinstance(counts, Counter)
        for key, n in counts.items()
    )


def differences(got: dict[str, Any], want: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    return {k: (got[k], want[k]) for k in want if got.get(k) != want[k]}
