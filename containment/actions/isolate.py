"""Step 6: isolate each ENI: first the all-open transit group, then the isolation group.

ModifyInstanceAttribute(Groups=...) fails on instances with several ENIs, so each ENI is
changed on its own (all ENIs at once). The transit hop turns tracked flows untracked; the
isolation group then drops them. A second step deletes the transit groups afterwards.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from containment.concurrency import parallel_map
from containment.context import ActionContext
from containment.errors import is_not_found
from containment.registry import Action, Facts, PlannedCall, RunState, StepResult
from containment.targets import Target


def group_ids(facts: Facts, results: dict[str, StepResult] | None) -> dict[str, dict[str, str]]:
    """Per VPC: {"isolation": id, "transit": id}; placeholders when not created yet (plans)."""
    prepared = (results or {}).get("isolation_groups")
    made = prepared.evidence.get("groups", {}) if prepared else {}
    out: dict[str, dict[str, str]] = {}
    for vpc, found in facts["groups"].items():
        known = made.get(vpc, {})
        out[vpc] = {
            role: known.get(role) or (found.get(role) or {}).get("id") or f"<{role} group>"
            for role in ("isolation", "transit")
        }
    return out


def _hops(eni: dict[str, Any], groups: dict[str, str]) -> list[list[str]]:
    iso, transit = groups["isolation"], groups["transit"]
    if eni["groups"] == [iso]:
        return []
    if eni["groups"] == [transit]:
        return [[iso]]
    return [[transit], [iso]]


class Isolate(Action):
    name = "isolate"
    summary = "Per ENI: all-open transit group, then the isolation group"
    permissions = ("ec2:ModifyNetworkInterfaceAttribute",)
    depends_on = ("capture", "isolation_groups")
    # After the ASG and LB steps (so the group does not replace an instance failing health
    # checks, and the LBs stop sending traffic first), but a failure there must not stop
    # isolation. The optional volatile capture goes first: isolation would cut SSM off.
    after = ("protect", "asg", "lb", "volatile_capture")

    def calls(
        self,
        target: Target,
        ctx: ActionContext,
        facts: Facts,
        results: dict[str, StepResult] | None = None,
    ) -> list[PlannedCall]:
        groups = group_ids(facts, results)
        return [
            PlannedCall(
                "ec2",
                "ModifyNetworkInterfaceAttribute",
                {"NetworkInterfaceId": eni["id"], "Groups": hop},
            )
            for eni in facts["enis"]
            for hop in _hops(eni, groups[eni["vpc_id"]])
        ]

    def apply(self, target: Target, ctx: ActionContext, state: RunState) -> StepResult:
        groups = group_ids(state.facts, state.results)
        original = {e["id"]: e["groups"] for e in state.captured.get("enis", [])}
        todo = [(e, _hops(e, groups[e["vpc_id"]])) for e in state.facts["enis"]]
        if not any(h for _, h in todo):
            return self.nothing_to_do(ctx, "every ENI is already in the isolation group")
        rec = self.recorder(ctx, state)
        ec2 = ctx.client("ec2", target)
        where: dict[str, str] = {}

        def move(item: tuple[dict[str, Any], list[list[str]]]) -> None:
            eni, hops = item
            where[eni["id"]] = "original" if len(hops) == 2 else "transit" if hops else "isolated"
            for hop in hops:
                ec2.modify_network_interface_attribute(NetworkInterfaceId=eni["id"], Groups=hop)
                rec.change_item("enis", eni["id"], original.get(eni["id"], eni["groups"]))
                where[eni["id"]] = (
                    "isolated" if hop == [groups[eni["vpc_id"]]["isolation"]] else "transit"
                )

        with rec.guard():
            parallel_map(move, todo)
        rec.evidence["enis"] = {
            e["id"]: [groups[e["vpc_id"]]["isolation"]]
            for e in state.facts["enis"]
            if where.get(e["id"], "isolated") == "isolated"
        }
        if rec.error:
            rec.left("enis", where)
        return rec.result()

    def rollback_calls(
        self, target: Target, ctx: ActionContext, result: StepResult
    ) -> list[PlannedCall]:
        return [
            PlannedCall(
                "ec2", "ModifyNetworkInterfaceAttribute", {"NetworkInterfaceId": eni, "Groups": gs}
            )
            for eni, gs in result.changes.get("enis", {}).items()
        ]

    def rollback(self, target: Target, ctx: ActionContext, result: StepResult) -> StepResult | None:
        enis = result.changes.get("enis", {})
        if not enis:
            return None
        rec = self.recorder(ctx)
        ec2 = ctx.client("ec2", target)
        missing: list[str] = []

        def restore(item: tuple[str, list[str]]) -> None:
            eni, gs = item
            try:
                ec2.modify_network_interface_attribute(NetworkInterfaceId=eni, Groups=gs)
            except ClientError as exc:
                if is_not_found(exc):
                    missing.append(eni)
                    return
                raise
            rec.change_item("enis", eni, gs)

        with rec.guard():
            parallel_map(restore, list(enis.items()))
        if missing:
            rec.evidence["missing_enis"] = missing
        return rec.result()


class DropTransitGroup(Action):
    name = "drop_transit"
    summary = "Delete this incident's all-open transit groups once every ENI has left them"
    permissions = ("ec2:DeleteSecurityGroup",)
    depends_on = ("isolate",)

    def _ids(self, facts: Facts, results: dict[str, StepResult] | None) -> list[str]:
        groups = group_ids(facts, results)
        if (results or {}).get("isolation_groups") is not None:
            return [g["transit"] for g in groups.values() if not g["transit"].startswith("<")]
        # Planning: groups that exist, or will be created because some ENI must move.
        return [
            g["transit"]
            for vpc, g in groups.items()
            if not g["transit"].startswith("<")
            or any(_hops(e, g) for e in facts["enis"] if e["vpc_id"] == vpc)
        ]

    def calls(
        self,
        target: Target,
        ctx: ActionContext,
        facts: Facts,
        results: dict[str, StepResult] | None = None,
    ) -> list[PlannedCall]:
        return [
            PlannedCall("ec2", "DeleteSecurityGroup", {"GroupId": g})
            for g in self._ids(facts, results)
        ]

    def apply(self, target: Target, ctx: ActionContext, state: RunState) -> StepResult:
        ids = self._ids(state.facts, state.results)
        if not ids:
            return self.nothing_to_do(ctx, "no transit group left")
        rec = self.recorder(ctx, state)
        ec2 = ctx.client("ec2", target)

        def delete(gid: str) -> None:
            try:
                ec2.delete_security_group(GroupId=gid)
            except ClientError as exc:
                if not is_not_found(exc):
                    raise
            rec.evidence.setdefault("deleted", []).append(gid)

        with rec.guard():
            parallel_map(delete, ids)
        if rec.error and rec.error.get("code") == "DependencyViolation":
            rec.left("transit_groups", "still attached somewhere; delete after checking")
        return rec.result()
