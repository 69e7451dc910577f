"""Step 4: take the instance out of its Auto Scaling group's hands.

Termination protection does not stop Auto Scaling, and an isolated instance fails its health
checks, so the group would terminate and replace it. Standby (desired capacity decremented)
keeps the membership for rollback; instances not InService are detached instead.
"""

from __future__ import annotations

from typing import Any

from containment.context import ActionContext
from containment.idempotency import create_once
from containment.registry import Action, Facts, PlannedCall, RunState, StepResult
from containment.targets import Target

_STANDBY = ("Standby", "EnteringStandby")
_DETACHING = ("Detaching", "Detached")


def _plan(target: Target, facts: Facts) -> tuple[str, dict[str, Any], bool] | None:
    group = facts.get("asg")
    if not group:
        return None
    state = group["lifecycle_state"]
    # Already out of the group's hands, or being terminated (nothing here can stop that).
    if state.startswith(("Standby", "EnteringStandby", "Detach", "Terminat")):
        return None
    # Decrementing below MinSize is refused; then a replacement is launched (and recorded).
    decrement = group["desired"] - 1 >= group["min"]
    params = {
        "InstanceIds": [target.resource_id],
        "AutoScalingGroupName": group["name"],
        "ShouldDecrementDesiredCapacity": decrement,
    }
    op = "EnterStandby" if group["lifecycle_state"] == "InService" else "DetachInstances"
    return op, params, decrement


class AutoScaling(Action):
    name = "asg"
    summary = "Auto Scaling: enter standby (or detach) so the group leaves the instance alone"
    permissions = (
        "autoscaling:EnterStandby",
        "autoscaling:DetachInstances",
        "autoscaling:ExitStandby",
        "autoscaling:AttachInstances",
        "autoscaling:DescribeAutoScalingInstances",
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
        plan = _plan(target, facts)
        return [PlannedCall("autoscaling", plan[0], plan[1])] if plan else []

    def apply(self, target: Target, ctx: ActionContext, state: RunState) -> StepResult:
        plan = _plan(target, state.facts)
        if plan is None:
            group = state.facts.get("asg")
            note = f"already {group['lifecycle_state']}" if group else "not in an ASG"
            return self.nothing_to_do(ctx, note)
        op, params, decrement = plan
        rec = self.recorder(ctx, state)
        with rec.guard():
            client = ctx.client("autoscaling", target)
            once = ctx.client("autoscaling", target, max_attempts=1)

            def done_meanwhile() -> dict[str, Any] | None:
                """The lost attempt's effect: standby entered, or the instance detached."""
                found = client.describe_auto_scaling_instances(InstanceIds=[target.resource_id])
                states = [i["LifecycleState"] for i in found["AutoScalingInstances"]]
                if op == "EnterStandby" and states and states[0] in _STANDBY:
                    return {"Activities": []}
                if op == "DetachInstances" and (not states or states[0] in _DETACHING):
                    return {"Activities": []}
                return None

            # Sent twice, each would decrement the desired capacity again (or fail because
            # the instance is no longer InService): after a lost answer, look first.
            out = create_once(
                ctx,
                service="autoscaling",
                operation=op,
                create=lambda: (
                    once.enter_standby(**params)
                    if op == "EnterStandby"
                    else once.detach_instances(**params)
                ),
                find=done_meanwhile,
            )
            rec.change(
                "group",
                {
                    "name": params["AutoScalingGroupName"],
                    "mode": "standby" if op == "EnterStandby" else "detached",
                    "decremented": decrement,
                },
            )
            rec.evidence["activities"] = [a.get("Description") for a in out.get("Activities", [])]
        note = None if decrement else "desired capacity kept: the group launches a replacement"
        return rec.result(note=note)

    def rollback_calls(
        self, target: Target, ctx: ActionContext, result: StepResult
    ) -> list[PlannedCall]:
        group = result.changes.get("group")
        if not group:
            return []
        params = {"InstanceIds": [target.resource_id], "AutoScalingGroupName": group["name"]}
        op = "ExitStandby" if group["mode"] == "standby" else "AttachInstances"
        return [PlannedCall("autoscaling", op, params)]

    def rollback(self, target: Target, ctx: ActionContext, result: StepResult) -> StepResult | None:
        group = result.changes.get("group")
        if not group:
            return None
        rec = self.recorder(ctx)
        rec.changes = {}
        with rec.guard():
            client = ctx.client("autoscaling", target)
            now = client.describe_auto_scaling_instances(InstanceIds=[target.resource_id])
            found = now["AutoScalingInstances"]
            state = found[0]["LifecycleState"] if found else "Detached"
            if group["mode"] == "standby" and state == "Standby":
                client.exit_standby(
                    InstanceIds=[target.resource_id], AutoScalingGroupName=group["name"]
                )
                rec.change("restored", "InService")
            elif group["mode"] == "detached" and not found:
                client.attach_instances(
                    InstanceIds=[target.resource_id], AutoScalingGroupName=group["name"]
                )
                rec.change("restored", "attached")
            else:
                return self.nothing_to_do(ctx, f"instance is {state}; left as is")
        return rec.result()
