"""Step 8: tag what the containment touched: incident key, status Isolated, time.

Instance, volumes and snapshots get the tags in one CreateTags call. Security groups and
snapshots this containment created already carry the incident tag from creation. Rollback
removes the tags again, except the incident tag on snapshots (they stay, as evidence, and the
wipe feature finds them by that tag).
"""

from __future__ import annotations

from typing import Any

from containment.context import ActionContext
from containment.registry import Action, Facts, PlannedCall, RunState, StepResult
from containment.tags import (
    FINDING_TAG,
    INCIDENT_TAG,
    SNAPSHOTS_TAG,
    STATUS_ISOLATED,
    STATUS_TAG,
    TIME_TAG,
    tag_list,
)
from containment.targets import Target


def _tags(ctx: ActionContext, when: str, snapshots_taken: bool) -> dict[str, str]:
    tags = {INCIDENT_TAG: ctx.incident_key, STATUS_TAG: STATUS_ISOLATED, TIME_TAG: when}
    if ctx.finding_id:
        tags[FINDING_TAG] = ctx.finding_id[:256]
    if snapshots_taken:
        tags[SNAPSHOTS_TAG] = ctx.incident_key
    return tags


def _snapshots_taken(results: dict[str, StepResult] | None) -> bool:
    snap = (results or {}).get("snapshot")
    return snap is None or snap.ok_for_dependents  # None: planning, assume it will be


def _resources(
    facts: Facts, results: dict[str, StepResult] | None
) -> tuple[list[str], list[str], list[str]]:
    """(instance + volumes, snapshots, groups created by this containment)."""
    base = [facts["instance_id"], *[v["id"] for v in facts["volumes"]]]
    results = results or {}
    snap = results.get("snapshot")
    snaps = [s["id"] for s in snap.evidence.get("snapshots", [])] if snap else []
    prepared = results.get("isolation_groups")
    created = prepared.changes.get("created", {}) if prepared else {}
    groups = [gid for gid, info in created.items() if info["role"] == "isolation"]
    return base, snaps, groups


def _already_tagged(ctx: ActionContext, facts: Facts) -> bool:
    tags = facts["instance"]["tags"]
    return tags.get(INCIDENT_TAG) == ctx.incident_key and tags.get(STATUS_TAG) == STATUS_ISOLATED


class Tag(Action):
    name = "tag"
    summary = "Tag instance, volumes, snapshots and groups: incident, status Isolated, time"
    permissions = ("ec2:CreateTags", "ec2:DeleteTags")
    depends_on = ("isolate",)  # the tags say Isolated
    after = ("snapshot",)

    def calls(
        self,
        target: Target,
        ctx: ActionContext,
        facts: Facts,
        results: dict[str, StepResult] | None = None,
    ) -> list[PlannedCall]:
        if _already_tagged(ctx, facts):
            return []
        base, snaps, groups = _resources(facts, results)
        if results is None:
            snaps, groups = ["<new snapshots>"], ["<isolation group, if created>"]
        return [
            PlannedCall(
                "ec2",
                "CreateTags",
                {
                    "Resources": base + snaps + groups,
                    "Tags": tag_list(_tags(ctx, "<now>", _snapshots_taken(results))),
                },
            )
        ]

    def apply(self, target: Target, ctx: ActionContext, state: RunState) -> StepResult:
        facts = state.facts
        if _already_tagged(ctx, facts):
            return self.nothing_to_do(ctx, "already tagged for this incident")
        base, snaps, groups = _resources(facts, state.results)
        when = ctx.now().strftime("%Y-%m-%dT%H:%M:%SZ")
        tags = _tags(ctx, when, _snapshots_taken(state.results))
        rec = self.recorder(ctx, state)
        with rec.guard():
            ctx.client("ec2", target).create_tags(
                Resources=base + snaps + groups, Tags=tag_list(tags)
            )
            previous = {k: v for k, v in state.captured["instance"]["tags"].items() if k in tags}
            rec.change("resources", base + groups)
            rec.change("snapshots", snaps)
            rec.change("keys", sorted(tags))
            rec.change("instance_previous", previous)
            rec.evidence["tags"] = tags
        return rec.result()

    def _rollback_ops(self, target: Target, result: StepResult) -> list[tuple[str, dict[str, Any]]]:
        ch = result.changes
        if not ch.get("keys"):
            return []
        ops: list[tuple[str, dict[str, Any]]] = []
        keys = [{"Key": k} for k in ch["keys"]]
        ops.append(("DeleteTags", {"Resources": ch["resources"], "Tags": keys}))
        if ch.get("snapshots"):
            kept = {INCIDENT_TAG, FINDING_TAG}  # the wipe finds evidence snapshots by these
            ops.append(
                (
                    "DeleteTags",
                    {
                        "Resources": ch["snapshots"],
                        "Tags": [k for k in keys if k["Key"] not in kept],
                    },
                )
            )
        if ch.get("instance_previous"):
            ops.append(
                (
                    "CreateTags",
                    {"Resources": [target.resource_id], "Tags": tag_list(ch["instance_previous"])},
                )
            )
        return ops

    def rollback_calls(
        self, target: Target, ctx: ActionContext, result: StepResult
    ) -> list[PlannedCall]:
        return [PlannedCall("ec2", op, p) for op, p in self._rollback_ops(target, result)]

    def rollback(self, target: Target, ctx: ActionContext, result: StepResult) -> StepResult | None:
        ops = self._rollback_ops(target, result)
        if not ops:
            return None
        rec = self.recorder(ctx)
        ec2 = ctx.client("ec2", target)
        with rec.guard():
            for op, params in ops:  # delete before restoring earlier values
                (ec2.delete_tags if op == "DeleteTags" else ec2.create_tags)(**params)
            rec.change("untagged", result.changes["resources"])
        return rec.result()
