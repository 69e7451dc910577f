"""Optional step: VPC Flow Logs on the instance's ENIs, delivered to the evidence bucket.

Only when no active flow log already covers the traffic (one on the ENI, its subnet or its
VPC): a second log would duplicate evidence and cost. Logs go under the incident's prefix in
the evidence bucket, so the wipe finds them, and the flow logs carry the incident tag, so the
wipe may delete them. They stay on rollback: they are evidence, like the snapshots.

CreateFlowLogs reports per-resource failures in `Unsuccessful` with HTTP 200 (a missing
bucket, a bucket policy that refuses delivery): those are failures of this step, not success.
"""

from __future__ import annotations

from typing import Any

from containment.context import ActionContext
from containment.idempotency import client_token, create_once
from containment.registry import Action, Facts, PlannedCall, RunState, StepResult
from containment.tags import creation_tags, tag_list
from containment.targets import Target


def destination(ctx: ActionContext, partition: str = "aws") -> str | None:
    if not ctx.evidence_bucket:
        return None
    prefix = f"{ctx.evidence_prefix}{ctx.incident_key}/flow-logs/"
    return f"arn:{partition}:s3:::{ctx.evidence_bucket}/{prefix}"


def _scope(target: Target, facts: Facts) -> tuple[list[str], list[str]]:
    """(the instance's ENI ids, every resource id whose flow log would cover them)."""
    enis = [e["id"] for e in facts.get("enis", [])]
    covering = list(enis)
    covering += sorted({e["vpc_id"] for e in facts.get("enis", []) if e.get("vpc_id")})
    subnet = (facts.get("instance") or {}).get("subnet_id")
    if subnet:
        covering.append(subnet)
    return enis, covering


def active_flow_logs(ec2: Any, resource_ids: list[str]) -> list[dict[str, Any]]:
    if not resource_ids:
        return []
    pages = ec2.get_paginator("describe_flow_logs").paginate(
        Filters=[{"Name": "resource-id", "Values": resource_ids}]
    )
    return [
        {
            "id": f["FlowLogId"],
            "resource_id": f["ResourceId"],
            "destination": f.get("LogDestination"),
        }
        for page in pages
        for f in page["FlowLogs"]
        if f.get("FlowLogStatus", "ACTIVE") == "ACTIVE"
    ]


def _uncovered(target: Target, ctx: ActionContext, facts: Facts) -> tuple[list[str], list[dict]]:
    enis, covering = _scope(target, facts)
    existing = active_flow_logs(ctx.client("ec2", target), covering)
    covered = {f["resource_id"] for f in existing}
    if covered - set(enis):  # the subnet or VPC is logged: every ENI in it is
        return [], existing
    return [e for e in enis if e not in covered], existing


def create_params(ctx: ActionContext, enis: list[str]) -> dict[str, Any]:
    tags = creation_tags(incident_key=ctx.incident_key, finding_id=ctx.finding_id)
    return {
        "ResourceIds": enis,
        "ResourceType": "NetworkInterface",
        "TrafficType": "ALL",
        "LogDestinationType": "s3",
        "LogDestination": destination(ctx),
        "MaxAggregationInterval": 60,  # 1-minute records: finer timing for the investigation
        "TagSpecifications": [{"ResourceType": "vpc-flow-log", "Tags": tag_list(tags)}],
        # The same token for the same incident and ENIs: AWS answers a repeat with the logs
        # it already made instead of making more.
        "ClientToken": client_token(ctx, "flow-logs", *sorted(enis)),
    }


class EnableFlowLogs(Action):
    name = "flow_logs"
    summary = "Enable VPC Flow Logs on the instance's ENIs to the evidence bucket"
    optional = True
    permissions = (
        "ec2:DescribeFlowLogs",
        "ec2:CreateFlowLogs",
        "ec2:CreateTags",
        # S3 delivery is set up by CloudWatch Logs' delivery service on the caller's behalf.
        "logs:CreateLogDelivery",
        "logs:DeleteLogDelivery",
    )
    depends_on = ("capture",)

    def calls(
        self,
        target: Target,
        ctx: ActionContext,
        facts: Facts,
        results: dict[str, StepResult] | None = None,
    ) -> list[PlannedCall]:
        _, covering = _scope(target, facts)
        reads = [PlannedCall("ec2", "DescribeFlowLogs", {"resource-id": covering}, mutating=False)]
        if not ctx.evidence_bucket:
            return reads
        enis, existing = _uncovered(target, ctx, facts)
        if not enis:
            note = "nothing to create: already logged by " + (
                ", ".join(f["id"] for f in existing) or "nothing (no ENIs)"
            )
            return [
                PlannedCall(
                    "ec2", "DescribeFlowLogs", {"resource-id": covering}, mutating=False, note=note
                )
            ]
        params = create_params(ctx, enis)
        shown = {k: params[k] for k in ("ResourceIds", "TrafficType", "LogDestination")}
        return [*reads, PlannedCall("ec2", "CreateFlowLogs", shown)]

    def apply(self, target: Target, ctx: ActionContext, state: RunState) -> StepResult:
        if not ctx.evidence_bucket:
            return self.nothing_to_do(ctx, "no evidence bucket configured for flow logs")
        rec = self.recorder(ctx, state)
        with rec.guard():
            enis, existing = _uncovered(target, ctx, state.facts)
            rec.evidence["existing"] = existing
            if not enis:
                note = "flow logs already active: " + ", ".join(f["id"] for f in existing)
                skipped = self.nothing_to_do(ctx, note if existing else "no network interfaces")
                skipped.evidence = rec.evidence
                return skipped
            once = ctx.client("ec2", target, max_attempts=1)

            def made_meanwhile() -> dict[str, Any] | None:
                ours = [
                    f["id"]
                    for f in active_flow_logs(ctx.client("ec2", target), enis)
                    if f["destination"]
                    and f["destination"].rstrip("/") == ((destination(ctx) or "").rstrip("/"))
                ]
                return {"FlowLogIds": ours} if ours else None

            out = create_once(
                ctx,
                service="ec2",
                operation="CreateFlowLogs",
                create=lambda: once.create_flow_logs(**create_params(ctx, enis)),
                find=made_meanwhile,
            )
            created = list(out.get("FlowLogIds", []))
            rec.evidence["created"] = created
            rec.evidence["destination"] = destination(ctx)
            if created:
                rec.change("flow_log_ids", created)
            failed = out.get("Unsuccessful") or []
            if failed:
                first = failed[0].get("Error", {})
                rec.error = {
                    "code": str(first.get("Code") or "Unsuccessful"),
                    "message": "; ".join(
                        f"{f.get('ResourceId')}: {f.get('Error', {}).get('Message', '')}"
                        for f in failed
                    )[:500],
                    "kind": "error",
                    "operation": "CreateFlowLogs",
                }
                rec.left("enis_without_flow_logs", [f.get("ResourceId") for f in failed])
        return rec.result()
