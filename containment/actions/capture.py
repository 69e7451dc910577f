"""Step 1: capture the instance's state before anything changes (AWS ContainEC2: capture first).

The same read-only inspection feeds planning, dry runs and every later step, so the whole
containment reads each fact once. Reads that depend only on the instance id run at once;
the longest chain is two calls deep (DescribeTargetGroups -> DescribeTargetHealth).
"""

from __future__ import annotations

import base64
import hashlib
from concurrent.futures import Future
from typing import Any

from botocore.exceptions import ClientError

from containment.actions.iam_revoke import DENY_ALL_ROLE_POLICY
from containment.concurrency import ContextPool, parallel_map
from containment.context import ActionContext
from containment.errors import error_record, is_not_found
from containment.jsonsafe import jsonable
from containment.registry import Action, Facts, PlannedCall, RunState, StepResult
from containment.tags import tag_dict
from containment.targets import Target

CONSOLE_TAIL = 4096  # characters of console output kept in the step result (S3 gets all)

READ_PERMISSIONS = (
    "ec2:DescribeInstances",
    "ec2:DescribeInstanceAttribute",
    "ec2:GetConsoleOutput",
    "ec2:GetConsoleScreenshot",
    "ec2:DescribeIamInstanceProfileAssociations",
    "ec2:DescribeSecurityGroups",
    "iam:GetInstanceProfile",
    "iam:ListInstanceProfilesForRole",
    "iam:ListRolePolicies",
    "autoscaling:DescribeAutoScalingInstances",
    "autoscaling:DescribeAutoScalingGroups",
    "elasticloadbalancing:DescribeTargetGroups",
    "elasticloadbalancing:DescribeTargetHealth",
    "elasticloadbalancing:DescribeLoadBalancers",
)


def profile_name_from_arn(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


def transit_group_name(ctx: ActionContext) -> str:
    return f"{ctx.transit_group_prefix}-{ctx.incident_key}"


def inspect_instance(target: Target, ctx: ActionContext) -> Facts:
    """Read everything containment needs to know about the instance. Reads only."""
    ec2 = ctx.client("ec2", target)
    iam = ctx.client("iam", target)
    asg = ctx.client("autoscaling", target)
    elbv2 = ctx.client("elbv2", target)
    elb = ctx.client("elb", target)
    iid = target.resource_id
    facts: Facts = {"captured_at": ctx.now().isoformat(), "instance_id": iid}
    optional_errors: dict[str, Any] = {}

    def describe() -> dict[str, Any]:
        reservations = ec2.describe_instances(InstanceIds=[iid])["Reservations"]
        instances = [i for r in reservations for i in r["Instances"]]
        if not instances:
            raise ClientError(
                {"Error": {"Code": "InvalidInstanceID.NotFound", "Message": f"{iid} not found"}},
                "DescribeInstances",
            )
        return instances[0]

    def attribute(name: str) -> Any:
        key = name[0].upper() + name[1:]
        return ec2.describe_instance_attribute(InstanceId=iid, Attribute=name)[key]["Value"]

    def console() -> str:
        try:
            out = ec2.get_console_output(InstanceId=iid, Latest=True).get("Output") or ""
        except ClientError as exc:
            # `Latest` is for Nitro instances only; elsewhere take the buffered output.
            optional_errors["console_latest"] = error_record(exc)
            try:
                out = ec2.get_console_output(InstanceId=iid).get("Output") or ""
            except ClientError as again:
                optional_errors["console_output"] = error_record(again)
                return ""
        try:
            return base64.b64decode(out).decode("utf-8", "replace")
        except ValueError:
            return out

    def screenshot() -> dict[str, Any] | None:
        # Not available on every instance type (nor in every emulator): evidence, not a must.
        try:
            once = ctx.client("ec2", target, max_attempts=1)
            data = once.get_console_screenshot(InstanceId=iid, WakeUp=False).get("ImageData")
        except Exception as exc:
            optional_errors["screenshot"] = error_record(exc)
            return None
        return {"image_base64": data} if data else None

    def iam_association() -> dict[str, Any] | None:
        found = ec2.describe_iam_instance_profile_associations(
            Filters=[{"Name": "instance-id", "Values": [iid]}]
        )["IamInstanceProfileAssociations"]
        live = [a for a in found if a.get("State") in ("associating", "associated")]
        if not live:
            return None
        assoc = live[0]
        arn = assoc["IamInstanceProfile"]["Arn"]
        name = profile_name_from_arn(arn)
        # Which other instances share the profile's role needs every live instance's profile:
        # scanned while the profile is read, not after it (it needs nothing from it).
        scan = pool.submit(_live_profiles, ec2) if name != ctx.deny_all_profile_name else None
        roles: list[str] = []
        try:
            profile = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
            roles = [r["RoleName"] for r in profile.get("Roles", [])]
        except ClientError as exc:
            if not is_not_found(exc):
                raise
        found_iam = {
            "association_id": assoc["AssociationId"],
            "profile_arn": arn,
            "profile_name": name,
            "roles": roles,
        }
        if roles and scan is not None:
            try:
                found_iam["shared_with"] = _role_sharers(iam, roles, iid, scan.result())
            except Exception as exc:  # the plan says it could not tell, not "nobody"
                found_iam["shared_check_error"] = error_record(exc)
        return found_iam

    def deny_profile() -> dict[str, Any] | None:
        try:
            profile = iam.get_instance_profile(InstanceProfileName=ctx.deny_all_profile_name)
        except ClientError as exc:
            if is_not_found(exc):
                return None
            raise
        p = profile["InstanceProfile"]
        roles = [r["RoleName"] for r in p.get("Roles", [])]
        name = ctx.deny_all_profile_name
        # Complete: its role in it, denied everything. A containment that failed half-way
        # (the revoker could not write the policy) leaves one to finish, not to trust.
        policies = iam.list_role_policies(RoleName=name)["PolicyNames"] if name in roles else []
        complete = bool({DENY_ALL_ROLE_POLICY, "deny-all"} & set(policies))
        return {"arn": p["Arn"], "roles": roles, "complete": complete}

    def autoscaling() -> dict[str, Any] | None:
        found = asg.describe_auto_scaling_instances(InstanceIds=[iid])["AutoScalingInstances"]
        if not found:
            return None
        member = found[0]
        group = asg.describe_auto_scaling_groups(
            AutoScalingGroupNames=[member["AutoScalingGroupName"]]
        )["AutoScalingGroups"][0]
        return {
            "name": member["AutoScalingGroupName"],
            "lifecycle_state": member["LifecycleState"],
            "min": group["MinSize"],
            "max": group["MaxSize"],
            "desired": group["DesiredCapacity"],
        }

    def target_groups() -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = []
        for page in elbv2.get_paginator("describe_target_groups").paginate():
            groups.extend(page["TargetGroups"])
        return groups

    def classic_elbs() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for page in elb.get_paginator("describe_load_balancers").paginate():
            for lb in page["LoadBalancerDescriptions"]:
                ids = {i["InstanceId"] for i in lb.get("Instances", [])}
                if iid in ids:
                    found.append({"name": lb["LoadBalancerName"], "vpc_id": lb.get("VPCId")})
        return found

    with ContextPool(max_workers=12, thread_name_prefix="capture") as pool:
        # Heads of two-call chains first: their second calls can then overlap the rest.
        f_instance = pool.submit(describe)
        others: dict[str, Future[Any]] = {
            "target_groups": pool.submit(target_groups),
            "iam": pool.submit(iam_association),
            "asg": pool.submit(autoscaling),
            "disable_api_termination": pool.submit(attribute, "disableApiTermination"),
            "shutdown_behavior": pool.submit(attribute, "instanceInitiatedShutdownBehavior"),
            "console": pool.submit(console),
            "screenshot": pool.submit(screenshot),
            "deny_profile": pool.submit(deny_profile),
            "classic": pool.submit(classic_elbs),
        }
        instance = f_instance.result()
        vpcs = sorted({n["VpcId"] for n in instance.get("NetworkInterfaces", []) if n.get("VpcId")})
        ips = {
            p["PrivateIpAddress"]
            for n in instance.get("NetworkInterfaces", [])
            for p in n.get("PrivateIpAddresses", [])
        }
        f_groups = pool.submit(_incident_groups, ec2, ctx, vpcs)
        tgs = [g for g in others["target_groups"].result() if not vpcs or g.get("VpcId") in vpcs]
        memberships = parallel_map(lambda g: _tg_membership(elbv2, g, iid, ips), tgs)
        results = {k: f.result() for k, f in others.items()}
        groups = f_groups.result()

    console_text: str = results["console"]
    facts.update(
        {
            "instance": _instance_summary(instance),
            "attributes": {
                "disable_api_termination": bool(results["disable_api_termination"]),
                "shutdown_behavior": results["shutdown_behavior"],
            },
            "enis": _enis(instance),
            "volumes": _volumes(instance),
            "iam": results["iam"],
            "deny_profile": results["deny_profile"],
            "asg": results["asg"],
            "target_groups": [m for m in memberships if m["targets"]],
            "classic_elbs": results["classic"],
            "groups": groups,
            "console_output_tail": console_text[-CONSOLE_TAIL:],
            "console_output_sha256": hashlib.sha256(console_text.encode()).hexdigest(),
            "screenshot": _screenshot_summary(results["screenshot"]),
            "optional_errors": optional_errors,
        }
    )
    # Full console output and screenshot go only to the S3 evidence object.
    facts["_blobs"] = {"console_output": console_text, "screenshot": results["screenshot"]}
    facts["raw_instance"] = jsonable(instance)
    return facts


LIVE_STATES = ["pending", "running", "stopping", "stopped"]


def _live_profiles(ec2: Any) -> list[tuple[str, str | None]]:
    """(instance id, instance profile ARN) of every live instance in the region."""
    pages = ec2.get_paginator("describe_instances").paginate(
        Filters=[{"Name": "instance-state-name", "Values": LIVE_STATES}]
    )
    return [
        (inst["InstanceId"], (inst.get("IamInstanceProfile") or {}).get("Arn"))
        for page in pages
        for reservation in page["Reservations"]
        for inst in reservation["Instances"]
    ]


def _role_sharers(
    iam: Any, roles: list[str], iid: str, live: list[tuple[str, str | None]]
) -> dict[str, list[str]]:
    """Other live instances whose instance profile carries one of `roles`: revoking a role's
    older sessions (aws:TokenIssueTime) cuts their current credentials too."""
    out: dict[str, list[str]] = {}
    for role in roles:
        profiles = {
            p["Arn"]
            for page in iam.get_paginator("list_instance_profiles_for_role").paginate(RoleName=role)
            for p in page["InstanceProfiles"]
        }
        found = sorted(other for other, arn in live if arn in profiles and other != iid)
        if found:
            out[role] = found
    return out


def _tg_membership(elbv2: Any, group: dict[str, Any], iid: str, ips: set[str]) -> dict[str, Any]:
    arn = group["TargetGroupArn"]
    kind = group.get("TargetType", "instance")
    wanted = {iid} if kind == "instance" else ips if kind == "ip" else set()
    targets: list[dict[str, Any]] = []
    if wanted:
        health = elbv2.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
        for desc in health:
            t = desc["Target"]
            if t["Id"] in wanted:
                # Port (and AZ when set) must be echoed back to deregister that exact target.
                targets.append({k: t[k] for k in ("Id", "Port", "AvailabilityZone") if k in t})
    return {"arn": arn, "name": group.get("TargetGroupName"), "type": kind, "targets": targets}


def _incident_groups(ec2: Any, ctx: ActionContext, vpcs: list[str]) -> dict[str, Any]:
    """Isolation group (reused per VPC) and this incident's transit group, if they exist."""
    if not vpcs:
        return {}
    names = [ctx.isolation_group_name, transit_group_name(ctx)]
    found = ec2.describe_security_groups(
        Filters=[
            {"Name": "vpc-id", "Values": vpcs},
            {"Name": "group-name", "Values": names},
        ]
    )["SecurityGroups"]
    out: dict[str, Any] = {vpc: {"isolation": None, "transit": None} for vpc in vpcs}
    for g in found:
        role = "isolation" if g["GroupName"] == ctx.isolation_group_name else "transit"
        out[g["VpcId"]][role] = {
            "id": g["GroupId"],
            "ingress": jsonable(g.get("IpPermissions", [])),
            "egress": jsonable(g.get("IpPermissionsEgress", [])),
            "tags": tag_dict(g.get("Tags")),
        }
    return out


def _instance_summary(i: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": i["InstanceId"],
        "state": i.get("State", {}).get("Name"),
        "type": i.get("InstanceType"),
        "image_id": i.get("ImageId"),
        "launch_time": jsonable(i.get("LaunchTime")),
        "vpc_id": i.get("VpcId"),
        "subnet_id": i.get("SubnetId"),
        "az": i.get("Placement", {}).get("AvailabilityZone"),
        "private_ip": i.get("PrivateIpAddress"),
        "public_ip": i.get("PublicIpAddress"),
        "key_name": i.get("KeyName"),
        "root_device": i.get("RootDeviceName"),
        "tags": tag_dict(i.get("Tags")),
    }


def _enis(i: dict[str, Any]) -> list[dict[str, Any]]:
    enis = []
    for n in sorted(i.get("NetworkInterfaces", []), key=lambda n: n["Attachment"]["DeviceIndex"]):
        enis.append(
            {
                "id": n["NetworkInterfaceId"],
                "vpc_id": n.get("VpcId"),
                "device_index": n["Attachment"]["DeviceIndex"],
                "groups": [g["GroupId"] for g in n.get("Groups", [])],
                "private_ips": [p["PrivateIpAddress"] for p in n.get("PrivateIpAddresses", [])],
                "ipv6": [a["Ipv6Address"] for a in n.get("Ipv6Addresses", [])],
            }
        )
    return enis


def _volumes(i: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "id": b["Ebs"]["VolumeId"],
            "device": b["DeviceName"],
            "delete_on_termination": bool(b["Ebs"].get("DeleteOnTermination")),
        }
        for b in i.get("BlockDeviceMappings", [])
        if "Ebs" in b
    ]


def _screenshot_summary(shot: dict[str, Any] | None) -> dict[str, Any]:
    if not shot:
        return {"available": False}
    data = shot["image_base64"].encode()
    return {"available": True, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def public_facts(facts: Facts) -> Facts:
    """Facts without the large blobs (for step results and the timeline)."""
    return {k: v for k, v in facts.items() if k != "_blobs"}


class CaptureInstance(Action):
    name = "capture"
    summary = "Capture instance state, console output, ENI groups, profile, ASG and LB membership"
    permissions = READ_PERMISSIONS
    mutating = False
    provides_facts = True

    def inspect(self, target: Target, ctx: ActionContext) -> Facts:
        return inspect_instance(target, ctx)

    def calls(
        self,
        target: Target,
        ctx: ActionContext,
        facts: Facts,
        results: dict[str, StepResult] | None = None,
    ) -> list[PlannedCall]:
        iid = {"InstanceId": target.resource_id}
        reads = [
            ("ec2", "DescribeInstances", {"InstanceIds": [target.resource_id]}),
            ("ec2", "DescribeInstanceAttribute", {**iid, "Attribute": "disableApiTermination"}),
            (
                "ec2",
                "DescribeInstanceAttribute",
                {**iid, "Attribute": "instanceInitiatedShutdownBehavior"},
            ),
            ("ec2", "GetConsoleOutput", iid),
            ("ec2", "GetConsoleScreenshot", iid),
            ("ec2", "DescribeIamInstanceProfileAssociations", iid),
            ("iam", "GetInstanceProfile", {"InstanceProfileName": "<attached profile>"}),
            ("iam", "GetInstanceProfile", {"InstanceProfileName": ctx.deny_all_profile_name}),
            ("iam", "ListInstanceProfilesForRole", {"RoleName": "<each role of the profile>"}),
            ("ec2", "DescribeInstances", {"instance-state-name": LIVE_STATES}),
            ("autoscaling", "DescribeAutoScalingInstances", {"InstanceIds": [target.resource_id]}),
            ("autoscaling", "DescribeAutoScalingGroups", {"AutoScalingGroupNames": ["<group>"]}),
            ("elbv2", "DescribeTargetGroups", {}),
            ("elbv2", "DescribeTargetHealth", {"TargetGroupArn": "<each group in the VPC>"}),
            ("elb", "DescribeLoadBalancers", {}),
            ("ec2", "DescribeSecurityGroups", {"group-name": [ctx.isolation_group_name]}),
        ]
        return [PlannedCall(s, op, p, mutating=False) for s, op, p in reads]

    def unavailable(self, facts: Facts) -> dict[str, Any] | None:
        status = facts["instance"]["state"]
        if status in ("shutting-down", "terminated"):
            return {
                "code": "InstanceTerminated",
                "message": f"{facts['instance_id']} is {status}; nothing left to contain",
                "kind": "instance_gone",
            }
        return None

    def apply(self, target: Target, ctx: ActionContext, state: RunState) -> StepResult:
        rec = self.recorder(ctx, state)
        with rec.guard():
            if not state.facts:  # the executor shares this dict with every later step
                state.facts.update(inspect_instance(target, ctx))
            rec.evidence.update(public_facts(state.facts))
            gone = self.unavailable(state.facts)
            if gone:
                rec.error = gone
                rec.left("instance_state", state.facts["instance"]["state"])
        return rec.result()
