"""Step 5: deregister from every ELBv2 target group and every classic load balancer.

Targets are deregistered exactly as registered (Id, Port, AvailabilityZone), which also
covers IP-type groups (private IPs of the instance's ENIs). One call per group, all at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from containment.concurrency import parallel
from containment.context import ActionContext
from containment.errors import error_code
from containment.registry import Action, Facts, PlannedCall, RunState, StepResult
from containment.targets import Target


def _still_registered(elbv2: Any, group: dict[str, Any]) -> bool:
    health = elbv2.describe_target_health(TargetGroupArn=group["arn"])
    present = {d["Target"]["Id"] for d in health["TargetHealthDescriptions"]}
    return any(t["Id"] in present for t in group["targets"])


class LoadBalancers(Action):
    name = "lb"
    summary = "Deregister from ELBv2 target groups and classic load balancers"
    permissions = (
        "elasticloadbalancing:DeregisterTargets",
        "elasticloadbalancing:DeregisterInstancesFromLoadBalancer",
        "elasticloadbalancing:RegisterTargets",
        "elasticloadbalancing:RegisterInstancesWithLoadBalancer",
    )
    depends_on = ("capture",)
    after = ("protect",)

    def calls(
        self,
        target: Target,
        ctx: ActionContext,
        facts: Facts,
        results: dict[str, StepResult] | None = None,
    ) -> list[PlannedCall]:
        out = [
            PlannedCall(
                "elbv2", "DeregisterTargets", {"TargetGroupArn": g["arn"], "Targets": g["targets"]}
            )
            for g in facts["target_groups"]
        ]
        out += [
            PlannedCall(
                "elb",
                "DeregisterInstancesFromLoadBalancer",
                {"LoadBalancerName": lb["name"], "Instances": [{"InstanceId": target.resource_id}]},
            )
            for lb in facts["classic_elbs"]
        ]
        return out

    def apply(self, target: Target, ctx: ActionContext, state: RunState) -> StepResult:
        facts = state.facts
        if not facts["target_groups"] and not facts["classic_elbs"]:
            return self.nothing_to_do(ctx, "not registered with any load balancer")
        rec = self.recorder(ctx, state)
        elbv2 = ctx.client("elbv2", target)
        elb = ctx.client("elb", target)
        iid = target.resource_id
        jobs: list[Callable[[], None]] = []
        for g in facts["target_groups"]:

            def tg(g: dict = g) -> None:
                try:
                    elbv2.deregister_targets(TargetGroupArn=g["arn"], Targets=g["targets"])
                except ClientError as exc:
                    # A re-sent call whose first answer was lost finds the targets gone.
                    if error_code(exc) != "InvalidTarget" or _still_registered(elbv2, g):
                        raise
                rec.change_item("target_groups", g["arn"], g["targets"])

            jobs.append(tg)
        for lb in facts["classic_elbs"]:

            def classic(name: str = lb["name"]) -> None:
                elb.deregister_instances_from_load_balancer(
                    LoadBalancerName=name, Instances=[{"InstanceId": iid}]
                )
                rec.change_item("classic_elbs", name, [iid])

            jobs.append(classic)
        with rec.guard():
            parallel(*jobs)
        if rec.error:
            rec.left(
                "still_registered",
                [
                    g["arn"]
                    for g in facts["target_groups"]
                    if g["arn"] not in rec.changes.get("target_groups", {})
                ]
                + [
                    lb["name"]
                    for lb in facts["classic_elbs"]
                    if lb["name"] not in rec.changes.get("classic_elbs", {})
                ],
            )
        return rec.result()

    def rollback_calls(
        self, target: Target, ctx: ActionContext, result: StepResult
    ) -> list[PlannedCall]:
        out = [
            PlannedCall("elbv2", "RegisterTargets", {"TargetGroupArn": arn, "Targets": targets})
            for arn, targets in result.changes.get("target_groups", {}).items()
        ]
        out += [
            PlannedCall(
                "elb",
                "RegisterInstancesWithLoadBalancer",
                {"LoadBalancerName": name, "Instances": [{"InstanceId": i} for i in ids]},
            )
            for name, ids in result.changes.get("classic_elbs", {}).items()
        ]
        return out

    def rollback(self, target: Target, ctx: ActionContext, result: StepResult) -> StepResult | None:
        groups = result.changes.get("target_groups", {})
        classics = result.changes.get("classic_elbs", {})
        if not groups and not classics:
            return None
        rec = self.recorder(ctx)
        elbv2 = ctx.client("elbv2", target)
        elb = ctx.client("elb", target)
        jobs: list[Callable[[], None]] = []
        for arn, targets in groups.items():

            def tg(arn: str = arn, targets: list = targets) -> None:
                elbv2.register_targets(TargetGroupArn=arn, Targets=targets)
                rec.change_item("target_groups", arn, targets)

            jobs.append(tg)
        for name, ids in classics.items():

            def classic(name: str = name, ids: list = ids) -> None:
                elb.register_instances_with_load_balancer(
                    LoadBalancerName=name, Instances=[{"InstanceId": i} for i in ids]
                )
                rec.change_item("classic_elbs", name, ids)

            jobs.append(classic)
        with rec.guard():
            parallel(*jobs)
        return rec.result()
