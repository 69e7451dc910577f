"""The drill's checks in AWS: what containment should have left in the sandbox, per kind.

A mixin of `bot.drill.runner.Drill` (it uses the drill's `scenario`, `check` and `say`).
"""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError

from commands.drills.sandbox import Sandbox
from commands.drills.scenarios import host_of
from containment.clients import aws_client


class AwsChecks:
    scenario: Any
    check: Any
    say: Any

    # -- AWS checks --------------------------------------------------------------------------

    def _verify_aws(self, sb: Sandbox, key: str) -> None:
        kind = self.scenario.target_kind
        if kind == "access_key":
            self._verify_access_key(sb)
        elif kind == "role":
            self._verify_role(sb)
        elif kind == "bucket":
            self._verify_bucket(sb)
        elif kind == "function":
            self._verify_function(sb)
        else:
            self._verify_instance(sb, key)

    def _verify_access_key(self, sb: Sandbox) -> None:
        iam = aws_client("iam", sb.region)
        keys = iam.list_access_keys(UserName=sb.user_name)["AccessKeyMetadata"]
        status = next((k["Status"] for k in keys if k["AccessKeyId"] == sb.access_key_id), "?")
        self.check("access key deactivated", status == "Inactive", f"{sb.access_key_id} {status}")
        policies = iam.list_user_policies(UserName=sb.user_name)["PolicyNames"]
        self.check("old sessions revoked", bool(policies), f"user policies: {policies}")

    def _verify_role(self, sb: Sandbox) -> None:
        iam = aws_client("iam", sb.region)
        revoking = []
        for name in iam.list_role_policies(RoleName=sb.app_role_name)["PolicyNames"]:
            doc = iam.get_role_policy(RoleName=sb.app_role_name, PolicyName=name)["PolicyDocument"]
            text = doc if isinstance(doc, str) else json.dumps(doc)
            if "aws:TokenIssueTime" in text:
                revoking.append(name)
        self.check(
            "role sessions revoked",
            bool(revoking),
            f"{sb.app_role_name} denies sessions issued before now ({', '.join(revoking)})"
            if revoking
            else f"no aws:TokenIssueTime deny on {sb.app_role_name}",
        )

    def _verify_bucket(self, sb: Sandbox) -> None:
        s3 = aws_client("s3", sb.region)
        try:
            block = s3.get_public_access_block(Bucket=sb.bucket_name)[
                "PublicAccessBlockConfiguration"
            ]
        except ClientError:
            block = {}
        blocked = bool(block) and all(block.values())
        self.check(
            "public access blocked",
            blocked,
            f"{sb.bucket_name}: all four Block Public Access settings on"
            if blocked
            else f"{sb.bucket_name}: public access block {block or 'absent'}",
        )
        policy = json.loads(s3.get_bucket_policy(Bucket=sb.bucket_name)["Policy"])
        user_arn = f"arn:aws:iam::{sb.account_id}:user/{sb.user_name}"
        denies = [
            st for st in policy["Statement"] if st.get("Effect") == "Deny" and user_arn in str(st)
        ]
        self.check(
            "caller denied on the bucket",
            bool(denies),
            f"bucket policy denies {sb.user_name}"
            if denies
            else "no deny for the finding's caller",
        )

    def _verify_function(self, sb: Sandbox) -> None:
        lam = aws_client("lambda", sb.region)
        reserved = lam.get_function_concurrency(FunctionName=sb.function_name).get(
            "ReservedConcurrentExecutions"
        )
        self.check(
            "function throttled",
            reserved == 0,
            f"{sb.function_name} reserved concurrency {reserved}",
        )
        try:
            statements = json.loads(lam.get_policy(FunctionName=sb.function_name)["Policy"])[
                "Statement"
            ]
        except ClientError:
            statements = []
        public = [st.get("Sid") for st in statements if "*" in str(st.get("Principal"))]
        self.check(
            "public invoke removed",
            not public,
            f"{len(statements)} statement(s) left, none public"
            if not public
            else f"still public: {', '.join(map(str, public))}",
        )

    def _verify_instance(self, sb: Sandbox, key: str) -> None:
        instance_id, volume_ids, eni_ids, group_id, _ = host_of(sb, self.scenario.host)
        ec2 = aws_client("ec2", sb.region)
        snaps = ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]
        ours = [
            s
            for s in snaps
            if s.get("VolumeId") in volume_ids
            and any(t.get("Value") == key for t in s.get("Tags", []))
        ]
        self.check(
            "snapshots taken",
            {s["VolumeId"] for s in ours} == set(volume_ids),
            f"{len(ours)} of {len(volume_ids)} volumes snapshotted and tagged {key}",
        )
        enis = ec2.describe_network_interfaces(NetworkInterfaceIds=eni_ids)["NetworkInterfaces"]
        groups = {e["NetworkInterfaceId"]: [g["GroupId"] for g in e["Groups"]] for e in enis}
        isolated = all(group_id not in g and len(g) == 1 for g in groups.values())
        self.check("network isolated", isolated, f"ENI groups now {groups}")
        if self.scenario.host != "web":
            return  # the batch host is in no Auto Scaling group and behind no load balancer
        asg = aws_client("autoscaling", sb.region)
        member = asg.describe_auto_scaling_instances(InstanceIds=[instance_id])[
            "AutoScalingInstances"
        ]
        state = member[0]["LifecycleState"] if member else "detached"
        self.check("out of Auto Scaling", state in ("Standby", "detached"), f"instance {state}")
        elbv2 = aws_client("elbv2", sb.region)
        targets = elbv2.describe_target_health(TargetGroupArn=sb.target_group_arn)[
            "TargetHealthDescriptions"
        ]
        self.check(
            "out of the load balancer",
            all(t["Target"]["Id"] != instance_id for t in targets),
            f"{len(targets)} target(s) left in checkout-web",
        )
