"""The wipe's plan and request: every item the inventory (commands/wipe/inventory.py) found,
as planned calls, before anything is deleted."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from commands.aftermath import live_request, record_request
from commands.approvals.plans import Plan
from commands.errors import UserError
from commands.forensics.account import account_label
from commands.incidents import get_incident
from commands.wipe.inventory import Scope, inventory, recorded_grants
from containment.capabilities import Permissions
from containment.context import ActionContext
from containment.errors import is_not_found
from containment.tags import INCIDENT_TAG, SNAPSHOTS_TAG, tag_dict
from storage.db import Database
from storage.facts import WIPE

ENGINE = "wipe"
PERMISSIONS = Permissions(
    "wipe",
    "wipe",
    (
        "cloudformation:DescribeStacks",
        "cloudformation:DescribeStackEvents",
        "cloudformation:DeleteStack",
        "ec2:DescribeVolumes",
        "ec2:DeleteVolume",
        "ec2:DescribeSnapshots",
        "ec2:DeleteSnapshot",
        "ec2:DescribeFlowLogs",
        "ec2:DeleteFlowLogs",
        "logs:DeleteLogDelivery",
        "s3:ListBucketVersions",
        "s3:GetObjectTagging",
        "s3:GetObjectVersionTagging",
        "s3:DeleteObject",
        "s3:DeleteObjectVersion",
        "kms:ListKeys",
        "kms:ListAliases",
        "kms:ListResourceTags",
        "kms:DescribeKey",
        "kms:ScheduleKeyDeletion",
        # The grants /forensics made on source snapshots' keys: read, then revoked.
        "kms:ListGrants",
        "kms:RevokeGrant",
        # Retiring the isolated instance: protection off, then terminate.
        "ec2:DescribeInstances",
        "ec2:DescribeInstanceAttribute",
        "ec2:ModifyInstanceAttribute",
        "ec2:TerminateInstances",
    ),
)
WIPEABLE = ("resolved", "closed")
STEPS = (
    (
        "terminate_instance",
        "instances",
        "Turn termination protection off and terminate the isolated instance",
    ),
    ("delete_clean_room", "stacks", "Delete the forensic clean-room stack"),
    ("delete_volumes", "volumes", "Delete volumes restored from the incident's snapshots"),
    ("delete_snapshots", "snapshots", "Delete the incident's EBS snapshots"),
    (
        "delete_forensic_copies",
        "forensic_copies",
        "Delete the snapshot copies in the forensic account",
    ),
    (
        "revoke_grants",
        "grants",
        "Revoke the KMS grants that let the forensic account copy the snapshots",
    ),
    ("delete_flow_logs", "flow_logs", "Delete the VPC flow logs the containment enabled"),
    ("delete_evidence_objects", "objects", "Delete every version of the evidence objects"),
    ("schedule_key_deletion", "kms_keys", "Schedule deletion of the incident's KMS key"),
)


def _call(service: str, operation: str, text: str, account: str | None = None) -> dict[str, Any]:
    """One planned call; `account`: the forensic account it acts in, said in the text."""
    where = f"  # in forensic {account_label(account)}" if account else ""
    return {
        "text": f"{service}.{operation}({text}){where}",
        "service": service,
        "operation": operation,
        "mutating": True,
    }


def _item_calls(kind: str, item: Mapping[str, Any], bucket: str | None, days: int) -> dict:
    if kind == "instances":
        return _call("ec2", "TerminateInstances", f"InstanceIds=[{item['id']}]")
    if kind == "stacks":
        return _call(
            "cloudformation", "DeleteStack", f"StackName={item['name']}", item.get("account")
        )
    if kind == "volumes":
        return _call("ec2", "DeleteVolume", f"VolumeId={item['id']}")
    if kind == "snapshots":
        return _call("ec2", "DeleteSnapshot", f"SnapshotId={item['id']}")
    if kind == "forensic_copies":
        return _call("ec2", "DeleteSnapshot", f"SnapshotId={item['id']}", item.get("account"))
    if kind == "grants":
        return _call("kms", "RevokeGrant", f"KeyId={item['key_arn']}, GrantId={item['id']}")
    if kind == "flow_logs":
        return _call("ec2", "DeleteFlowLogs", f"FlowLogIds=[{item['id']}]")
    if kind == "objects":
        return _call(
            "s3",
            "DeleteObject",
            f"Bucket={bucket}, Key={item['key']}, VersionId={item['version_id']}",
        )
    return _call("kms", "ScheduleKeyDeletion", f"KeyId={item['id']}, PendingWindowInDays={days}")


def build_plan(*, items: Mapping[str, Any], bucket: str | None, kms_pending_days: int) -> Plan:
    if not 7 <= kms_pending_days <= 30:
        raise UserError("wipe.kms_pending_days must be between 7 and 30.")
    steps = []
    for action, kind, summary in STEPS:
        found = items.get(kind) or []
        if not found:
            continue
        steps.append(
            {
                "action": action,
                "summary": f"{summary} ({len(found)})",
                "mutating": True,
                "depends_on": [],
                "calls": [
                    *(
                        _call(
                            "ec2",
                            "ModifyInstanceAttribute",
                            f"InstanceId={i['id']}, DisableApiTermination=false",
                        )
                        for i in found
                        if kind == "instances"
                    ),
                    *(_item_calls(kind, i, bucket, kms_pending_days) for i in found),
                ],
            }
        )
    radius: dict[str, Any] = {
        "labelled": {
            "deletes": "only what the incident created (tags checked again before each)",
            "kms key": f"deletion scheduled {kms_pending_days} days out, cancellable until then",
        },
        "attached": [
            f"{len(items.get(kind) or [])} {kind.replace('_', ' ')}"
            for _, kind, _ in STEPS
            if items.get(kind)
        ],
    }
    if items.get("skipped"):
        radius["note"] = "left alone: " + "; ".join(
            f"{s['what']} {s['id']} ({s['why']})" for s in items["skipped"][:10]
        )
    return Plan.from_json(
        {
            "engine": ENGINE,
            "items": dict(items),
            "bucket": bucket,
            "kms_pending_days": kms_pending_days,
            "steps": steps,
            "blast_radius": radius,
        }
    )


# -- retiring the instance -----------------------------------------------------------------


def protected_by_incident(session: Any, incident_id: int, instance_id: str) -> bool:
    """Whether this incident's containment turned the instance's termination protection on
    (its protect step's recorded change), not someone else before it."""
    from sqlalchemy import select

    from storage.models import ActionStep, ContainmentRequest

    rows = session.scalars(
        select(ActionStep.result)
        .join(ContainmentRequest, ContainmentRequest.id == ActionStep.request_id)
        .where(
            ContainmentRequest.incident_id == incident_id,
            ContainmentRequest.target_id == instance_id,
            ActionStep.action == "protect",
            ActionStep.status == "succeeded",
        )
    )
    for result in rows:
        changes = (result or {}).get("changes") or {}
        turned_on = "disable_api_termination" in (changes.get("attributes") or {})
        if turned_on and not (result or {}).get("dry_run"):
            return True
    return False


def retirable_instance(
    *, ctx: ActionContext, scope: Scope, instance_id: str | None, protected: bool
) -> dict[str, Any]:
    """The instance to terminate, or a UserError saying in one sentence why not. Reads only."""
    key = scope.incident_key
    if not instance_id or not instance_id.startswith("i-"):
        raise UserError(f"{key} has no instance to retire: `terminate` is for contained instances.")
    ec2 = ctx.client("ec2", scope.target())
    try:
        found = [
            i
            for r in ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
            for i in r["Instances"]
        ]
    except ClientError as exc:
        if not is_not_found(exc):
            raise
        found = []
    if not found or found[0]["State"]["Name"] in ("shutting-down", "terminated"):
        raise UserError(
            f"{{instance_id}} is already gone: run `/incident wipe {key}` without it.",
            instance_id=instance_id,
        )
    inst = found[0]
    tags = tag_dict(inst.get("Tags"))
    if tags.get(INCIDENT_TAG) != key:
        raise UserError(
            f"{{instance_id}} does not carry the {INCIDENT_TAG}={key} tag, so incident-bot will "
            "not terminate it; terminate it by hand if it is yours.",
            instance_id=instance_id,
        )
    if not protected:
        raise UserError(
            f"{{instance_id}}'s termination protection was not turned on by {key}'s containment, "
            "so incident-bot will not turn it off; terminate it by hand if it is yours.",
            instance_id=instance_id,
        )
    if tags.get(SNAPSHOTS_TAG) != key or not _snapshots_done(ec2, key, inst):
        raise UserError(
            f"{{instance_id}}'s evidence is not safe yet (every volume snapshotted by {key} and "
            "completed): contain it again or wait for the snapshots, then ask again.",
            instance_id=instance_id,
        )
    return {"id": instance_id, "type": inst.get("InstanceType"), "state": inst["State"]["Name"]}


def _snapshots_done(ec2: Any, key: str, inst: Mapping[str, Any]) -> bool:
    volumes = {b["Ebs"]["VolumeId"] for b in inst.get("BlockDeviceMappings", []) if "Ebs" in b}
    snaps = _snapshot_states(ec2, key)
    return all(snaps.get(v) == "completed" for v in volumes)


def _snapshot_states(ec2: Any, key: str) -> dict[str, str]:
    pages = ec2.get_paginator("describe_snapshots").paginate(
        OwnerIds=["self"], Filters=[{"Name": f"tag:{INCIDENT_TAG}", "Values": [key]}]
    )
    out: dict[str, str] = {}
    for page in pages:
        for s in page["Snapshots"]:
            if s.get("State") == "completed" or s.get("VolumeId") not in out:
                out[str(s.get("VolumeId"))] = str(s.get("State"))
    return out


# -- requesting ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Proposed:
    request_id: int
    created: bool
    incident_key: str
    items: int


def propose_wipe(
    *,
    db: Database,
    ctx: ActionContext,
    incident_key: str,
    requested_by: str,
    expire_after: dt.timedelta,
    kms_pending_days: int = 30,
    shared_kms_key: str | None = None,
    default_region: str = "us-east-1",
    dry_run: bool = False,
    terminate: bool = False,
) -> Proposed:
    """Check the incident is resolved, list everything, and record the approval request.

    `terminate`: also retire the isolated instance (refused, in one sentence, unless it is
    tagged and protected by this incident and its snapshots are complete)."""
    with db.read_session() as session:
        incident = get_incident(session=session, key=incident_key)
        if incident.status not in WIPEABLE:
            raise UserError(
                f"{incident.key} is {incident.status}: resolve it first "
                f"(/incident resolve {incident.key} <summary>), then wipe its evidence."
            )
        scope = Scope(incident.key, incident.region or default_region, incident.account_id)
        live = live_request(session, incident.key, "wipe")
        if live is not None:
            return Proposed(live.id, False, incident.key, -1)
        instance_id = incident.resource_id
        protected = bool(instance_id) and protected_by_incident(
            session, incident.id, str(instance_id)
        )
        grants = recorded_grants(session, incident.id)
    retire = (
        [retirable_instance(ctx=ctx, scope=scope, instance_id=instance_id, protected=protected)]
        if terminate
        else []
    )
    items = inventory(ctx=ctx, scope=scope, shared_kms_key=shared_kms_key, grants=grants)
    items["instances"] = retire
    plan = build_plan(items=items, bucket=ctx.evidence_bucket, kms_pending_days=kms_pending_days)
    if not plan.steps:
        raise UserError(f"{scope.incident_key} has nothing left to wipe.")
    recorded = record_request(
        db=db,
        incident_key=incident_key,
        target=scope.target(),
        kind="wipe",
        plan=plan,
        requested_by=requested_by,
        reason="wipe the investigation's evidence",
        expire_after=expire_after,
        dry_run=dry_run,
    )
    count = -1 if recorded.already_live else plan.count_calls()
    return Proposed(recorded.request_id, recorded.created, recorded.incident_key, count)


def wipe_lines(facts: Mapping[str, Any]) -> list[str]:
    """Plain-text lines for the incident card: what the wipe deleted."""
    wipe = WIPE.get(facts)
    deleted = wipe.get("deleted") or []
    if not deleted and not wipe.get("failed"):
        return []
    counts: dict[str, int] = {}
    for d in deleted:
        counts[d["type"]] = counts.get(d["type"], 0) + 1
    lines = [
        "wiped: "
        + (", ".join(f"{n} {t.replace('_', ' ')}" for t, n in counts.items()) or "nothing yet")
    ]
    kms = wipe.get("kms_deletion")
    if kms:
        lines.append(f"KMS key {kms['key_id']} deleted on {kms['deletion_date']} (cancellable)")
    if wipe.get("failed"):
        lines.append(f"{len(wipe['failed'])} item(s) could not be deleted: see the timeline")
    return lines


def plan_text(incident_key: str, plan: Plan | Mapping[str, Any]) -> str:
    """Every item of a wipe plan as Markdown (attached to the approval card's thread, so the
    full list is there even when the card has to shorten it)."""
    lines = [f"# Evidence wipe plan for {incident_key}", ""]
    typed = plan if isinstance(plan, Plan) else Plan.from_json(plan)
    for step in typed.steps:
        lines.append(f"## {step.action}: {step.summary}")
        lines.extend(f"- `{c.text}`" for c in step.calls)
        lines.append("")
    skipped = (typed.extra.get("items") or {}).get("skipped") or []
    if skipped:
        lines.append("## Left alone")
        lines.extend(f"- {s['what']} {s['id']}: {s['why']}" for s in skipped)
    return "\n".join(lines) + "\n"
