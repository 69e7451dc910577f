"""Step 2: keep the instance and its disks from disappearing while we work.

Termination protection on, shutdown behaviour `stop`, DeleteOnTermination false on every
attached volume. Three independent ModifyInstanceAttribute calls, made at once. Not rolled
back: protection of the evidence outlives the containment (the wipe feature removes it).
"""

from __future__ import annotations

from typing import Any

from containment.concurrency import parallel
from containment.context import ActionContext
from containment.registry import Action, Facts, PlannedCall, RunState, StepResult
from containment.targets import Target


def _needed(target: Target, facts: Facts) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(change key, ModifyInstanceAttribute params, value before) for what is not yet set."""
    iid = target.resource_id
    out: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    attrs = facts["attributes"]
    if not attrs["disable_api_termination"]:
        out.append(
            (
                "disable_api_termination",
                {"InstanceId": iid, "DisableApiTermination": {"Value": True}},
                {"before": False},
            )
        )
    if attrs["shutdown_behavior"] != "stop":
        out.append(
            (
                "shutdown_behavior",
                # Attribute/Value form: moto 5.2 ignores InstanceInitiatedShutdownBehavior.Value.
                {
                    "InstanceId": iid,
                    "Attribute": "instanceInitiatedShutdownBehavior",
                    "Value": "stop",
                },
                {"before": attrs["shutdown_behavior"]},
            )
        )
    deleting = [v for v in facts["volumes"] if v["delete_on_termination"]]
    if deleting:
        out.append(
            (
                "delete_on_termination",
                {
                    "InstanceId": iid,
                    "BlockDeviceMappings": [
                        {"DeviceName": v["device"], "Ebs": {"DeleteOnTermination": False}}
                        for v in deleting
                    ],
                },
                {"before": {v["id"]: True for v in deleting}},
            )
        )
    return out


class Protect(Action):
    name = "protect"
    summary = "Termination protection on, shutdown stops, volumes survive termination"
    permissions = ("ec2:ModifyInstanceAttribute",)
    depends_on = ("capture",)

    def calls(
        self,
        target: Target,
        ctx: ActionContext,
        facts: Facts,
        results: dict[str, StepResult] | None = None,
    ) -> list[PlannedCall]:
        todo = _needed(target, facts)
        return [PlannedCall("ec2", "ModifyInstanceAttribute", p) for _, p, _ in todo]

    def apply(self, target: Target, ctx: ActionContext, state: RunState) -> StepResult:
        rec = self.recorder(ctx, state)
        todo = _needed(target, state.facts)
        if not todo:
            return self.nothing_to_do(ctx, "already protected")
        ec2 = ctx.client("ec2", target)

        def one(key: str, params: dict[str, Any], before: dict[str, Any]) -> None:
            ec2.modify_instance_attribute(**params)
            rec.change_item("attributes", key, before)

        with rec.guard():
            parallel(*[(lambda t=t: one(*t)) for t in todo])
        if rec.error:
            done = set(rec.changes.get("attributes", {}))
            rec.left("not_set", [k for k, _, _ in todo if k not in done])
        return rec.result()
