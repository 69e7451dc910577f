"""Step 3: one crash-consistent CreateSnapshots call for every attached volume.

Snapshots are tagged at creation with the incident key and finding id, and stay on rollback.
The tag step then marks the instance (SNAPSHOTS_TAG), so a later run finds it in the
captured tags and does not take a second set; a retry with earlier results does not run a
step that succeeded at all.
"""

from __future__ import annotations

from typing import Any

from containment.context import ActionContext
from containment.registry import Action, Facts, PlannedCall, RunState, StepResult, register
from containment.tags import SNAPSHOTS_TAG, creation_tags, tag_list
from containment.targets import Target


def already_taken(ctx: ActionContext, facts: Facts) -> bool:
    return facts["instance"]["tags"].get(SNAPSHOTS_TAG) == ctx.incident_key


def _params(target: Target, ctx: ActionContext, facts: Facts) -> dict[str, Any] | None:
    if already_taken(ctx, facts) or not facts["volumes"]:
        return None
    spec: dict[str, Any] = {"InstanceId": target.resource_id, "ExcludeBootVolume": False}
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
    permissions = ("ec2:CreateSnapshots", "ec2:CreateTags")
    depends_on = ("capture",)
    after = ("protect",)

    def calls(
        self,
        target: Target,
        ctx: ActionContext,
        facts: Facts,
        results: dict[str, StepResult] | None = None,
    ) -> list[PlannedCall]:
        params = _params(target, ctx, facts)
        return [PlannedCall("ec2", "CreateSnapshots", params)] if params else []

    def apply(self, target: Target, ctx: ActionContext, state: RunState) -> StepResult:
        params = _params(target, ctx, state.facts)
        if params is None:
            note = "no volumes" if not state.facts["volumes"] else "taken by an earlier run"
            return self.nothing_to_do(ctx, note)
        rec = self.recorder(ctx, state)
        with rec.guard():
            out = ctx.client("ec2", target).create_snapshots(**params)
            rec.evidence["snapshots"] = [
                {"id": s["SnapshotId"], "volume_id": s.get("VolumeId")} for s in out["Snapshots"]
            ]
        if rec.error:
            rec.left("snapshots", "none created by this attempt")
        return rec.result()
