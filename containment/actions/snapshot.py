"""Step 3: one crash-consistent CreateSnapshots call for every attached volume.

Snapshots are tagged at creation with the incident key and finding id, and stay on rollback.
"""

from __future__ import annotations

from typing import Any

from containment.context import ActionContext
from containment.registry import Action, Facts, PlannedCall, RunState, StepResult, register
from containment.tags import INCIDENT_TAG, creation_tags, tag_list
from containment.targets import Target


def existing_snapshots(target: Target, ctx: ActionContext, facts: Facts) -> list[dict[str, Any]]:
    """This incident's snapshots of the instance's volumes (a re-run must not take more)."""
    volumes = [v["id"] for v in facts["volumes"]]
    if not volumes:
        return []
    snaps = ctx.client("ec2", target).describe_snapshots(
        Filters=[
            {"Name": f"tag:{INCIDENT_TAG}", "Values": [ctx.incident_key]},
            {"Name": "volume-id", "Values": volumes},
        ],
    )["Snapshots"]
    return [{"id": s["SnapshotId"], "volume_id": s.get("VolumeId")} for s in snaps]


def _params(
    target: Target, ctx: ActionContext, facts: Facts, existing: list[dict[str, Any]]
) -> dict[str, Any] | None:
    done = {s["volume_id"] for s in existing}
    volumes = facts["volumes"]
    missing = [v for v in volumes if v["id"] not in done]
    if not missing:
        return None
    root = facts["instance"].get("root_device")
    spec: dict[str, Any] = {"InstanceId": target.resource_id}
    root_done = any(v["device"] == root and v["id"] in done for v in volumes)
    if root_done:
        spec["ExcludeBootVolume"] = True
    excluded = [v["id"] for v in volumes if v["id"] in done and v["device"] != root]
    if excluded:
        spec["ExcludeDataVolumeIds"] = excluded
    desc = f"incident-bot {ctx.incident_key}"
    if ctx.finding_id:
        desc += f" finding {ctx.finding_id}"
    tags = creation_tags(incident_key=ctx.incident_key, finding_id=ctx.finding_id)
    # TagSpecifications, not CopyTagsFromSource: the API refuses both together.
    return {
        "InstanceSpecification": spec,
        "Description": desc[:255],
        "TagSpecifications": [{"ResourceType": "snapshot", "Tags": tag_list(tags)}],
    }


@register
class Snapshot(Action):
    name = "snapshot"
    summary = "Crash-consistent snapshots of every attached volume"
    permissions = ("ec2:DescribeSnapshots", "ec2:CreateSnapshots", "ec2:CreateTags")
    depends_on = ("capture",)
    after = ("protect",)

    def calls(
        self,
        target: Target,
        ctx: ActionContext,
        facts: Facts,
        results: dict[str, StepResult] | None = None,
    ) -> list[PlannedCall]:
        existing = existing_snapshots(target, ctx, facts)
        read = PlannedCall("ec2", "DescribeSnapshots", {f"tag:{INCIDENT_TAG}": ctx.incident_key},
                           mutating=False)
        params = _params(target, ctx, facts, existing)
        return [read, PlannedCall("ec2", "CreateSnapshots", params)] if params else [read]

    def apply(self, target: Target, ctx: ActionContext, state: RunState) -> StepResult:
        rec = self.recorder(ctx, state)
        existing: list[dict[str, Any]] = []
        with rec.guard():
            existing = existing_snapshots(target, ctx, state.facts)
            params = _params(target, ctx, state.facts, existing)
            if params is None:
                result = self.nothing_to_do(ctx, "every volume already has an incident snapshot")
                result.evidence = {"snapshots": existing}
                return result
            out = ctx.client("ec2", target).create_snapshots(**params)
            made = [
                {"id": s["SnapshotId"], "volume_id": s.get("VolumeId")} for s in out["Snapshots"]
            ]
            rec.evidence["created"] = made
            rec.evidence["snapshots"] = existing + made
        if rec.error:
            rec.evidence["snapshots"] = existing
            rec.left("snapshots", "none created by this attempt")
        return rec.result()
