"""Step 3: one crash-consistent CreateSnapshots call for every attached volume.

Snapshots are tagged at creation with the incident key and finding id, and stay on rollback.
The tag step then marks the instance (SNAPSHOTS_TAG), so a later run finds it in the
captured tags and does not take a second set; a retry with earlier results does not run a
step that succeeded at all. CreateSnapshots takes no ClientToken: a create whose answer was
lost is not re-sent by botocore; the incident's tagged snapshots are looked for first
(containment/idempotency.py), also before a retried step creates anything.
"""

from __future__ import annotations

from typing import Any

from containment.context import ActionContext
from containment.idempotency import create_once
from containment.registry import Action, Facts, PlannedCall, RunState, StepResult
from containment.tags import INCIDENT_TAG, SNAPSHOTS_TAG, creation_tags, tag_list
from containment.targets import Target


def already_taken(ctx: ActionContext, facts: Facts) -> bool:
    return facts["instance"]["tags"].get(SNAPSHOTS_TAG) == ctx.incident_key


def existing_snapshots(target: Target, ctx: ActionContext, facts: Facts) -> dict[str, Any] | None:
    """This incident's snapshots of the instance's volumes, shaped like CreateSnapshots' answer."""
    volumes = [v["id"] for v in facts["volumes"]]
    found = (
        ctx.client("ec2", target)
        .describe_snapshots(
            OwnerIds=["self"],
            Filters=[
                {"Name": f"tag:{INCIDENT_TAG}", "Values": [ctx.incident_key]},
                {"Name": "volume-id", "Values": volumes},
            ],
        )
        .get("Snapshots", [])
    )
    if not found:
        return None
    return {"Snapshots": found}


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


class Snapshot(Action):
    name = "snapshot"
    summary = "Crash-consistent snapshots of every attached volume"
    permissions = ("ec2:CreateSnapshots", "ec2:CreateTags", "ec2:DescribeSnapshots")
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
            out = existing_snapshots(target, ctx, state.facts)
            if out is not None:
                rec.evidence["already_taken"] = True
            else:
                once = ctx.client("ec2", target, max_attempts=1)
                out = create_once(
                    ctx,
                    service="ec2",
                    operation="CreateSnapshots",
                    create=lambda: once.create_snapshots(**params),
                    find=lambda: existing_snapshots(target, ctx, state.facts),
                )
            rec.evidence["snapshots"] = [
                {"id": s["SnapshotId"], "volume_id": s.get("VolumeId")} for s in out["Snapshots"]
            ]
        if rec.error:
            rec.left("snapshots", "none created by this attempt")
        return rec.result()
