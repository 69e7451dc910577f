"""`/incident wipe [INC-N]`: delete an investigation's evidence once the incident is resolved.

The plan lists every item before anything is deleted, and goes through the same approval as
containment. It covers only what the incident created, proven by tags:

- the clean-room stack (tagged `incident-bot:incident=<key>`), with its instance and volumes;
- restored volumes: the incident tag *and* `incident-bot:source-snapshot` (the containment's
  tag step also marks the compromised instance's own volumes with the incident tag, and
  those are not the incident's to delete);
- snapshots the containment took (incident tag);
- VPC flow logs the containment enabled (incident tag), then their log files;
- evidence objects under `<prefix><key>/` whose object tags name the incident, every
  version; flow-log files there only when their name carries one of those flow logs' ids;
- the incident's own KMS key (incident tag, customer managed, never the configured shared
  evidence key): deletion is *scheduled*, 7 to 30 days out, and can be cancelled until then.

Each item is checked again right before it is deleted, and every deletion is a timeline
event. `incident.facts["wipe"]` keeps what was deleted for the incident card.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError
from sqlalchemy import select

from commands.approvals.plans import StepCallback
from commands.approvals.requests import request_containment, running_plan
from commands.errors import UserError
from commands.forensics import CleanRoomEngine, delete_clean_room, existing_stack, stack_name
from commands.incidents import get_incident
from containment.capabilities import Permissions
from containment.context import ActionContext
from containment.errors import error_record, is_not_found
from containment.tags import INCIDENT_TAG, STATUS_TAG, tag_dict
from containment.targets import Target
from storage.db import Database
from storage.facts import WIPE
from storage.models import ContainmentRequest
from storage.timeline import append_event

ENGINE = "wipe"
TARGET_KIND = "evidence"
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
    ),
)
SOURCE_SNAPSHOT_TAG = "incident-bot:source-snapshot"
WIPEABLE = ("resolved", "closed")
LIVE_REQUEST = ("pending", "approved", "running")
STEPS = (
    ("delete_clean_room", "stacks", "Delete the forensic clean-room stack"),
    ("delete_volumes", "volumes", "Delete volumes restored from the incident's snapshots"),
    ("delete_snapshots", "snapshots", "Delete the incident's EBS snapshots"),
    ("delete_flow_logs", "flow_logs", "Delete the VPC flow logs the containment enabled"),
    ("delete_evidence_objects", "objects", "Delete every version of the evidence objects"),
    ("schedule_key_deletion", "kms_keys", "Schedule deletion of the incident's KMS key"),
)


@dataclass
class Scope:
    incident_key: str
    region: str
    account_id: str | None

    def target(self) -> Target:
        return Target(
            kind=TARGET_KIND,  # type: ignore[arg-type]  # not a containment target kind
            resource_id=self.incident_key,
            region=self.region,
            account_id=self.account_id,
        )


# -- inventory (reads only) -----------------------------------------------------------------


def _stacks(ctx: ActionContext, scope: Scope, skipped: list[dict[str, str]]) -> list[dict]:
    cfn = ctx.client("cloudformation", scope.target())
    found = existing_stack(cfn, stack_name(scope.incident_key))
    if found is None:
        return []
    if tag_dict(found.get("Tags")).get(INCIDENT_TAG) != scope.incident_key:
        skipped.append({"what": "stack", "id": found["StackName"], "why": "no incident tag"})
        return []
    return [{"id": found["StackId"], "name": found["StackName"], "status": found["StackStatus"]}]


def _volumes(ec2: Any, key: str, skipped: list[dict[str, str]]) -> list[dict[str, Any]]:
    pages = ec2.get_paginator("describe_volumes").paginate(
        Filters=[{"Name": f"tag:{INCIDENT_TAG}", "Values": [key]}]
    )
    out = []
    for page in pages:
        for v in page["Volumes"]:
            tags = tag_dict(v.get("Tags"))
            if SOURCE_SNAPSHOT_TAG not in tags or STATUS_TAG in tags:
                # The containment's tag step marks the compromised instance's own volumes too.
                skipped.append(
                    {
                        "what": "volume",
                        "id": v["VolumeId"],
                        "why": "not restored by the incident (no source-snapshot tag)",
                    }
                )
                continue
            out.append(
                {
                    "id": v["VolumeId"],
                    "state": v.get("State"),
                    "source_snapshot": tags[SOURCE_SNAPSHOT_TAG],
                    "stack": tags.get("aws:cloudformation:stack-name"),
                }
            )
    return out


def _snapshots(ec2: Any, key: str) -> list[dict[str, Any]]:
    pages = ec2.get_paginator("describe_snapshots").paginate(
        OwnerIds=["self"], Filters=[{"Name": f"tag:{INCIDENT_TAG}", "Values": [key]}]
    )
    return [
        {"id": s["SnapshotId"], "volume_id": s.get("VolumeId"), "size": s.get("VolumeSize")}
        for page in pages
        for s in page["Snapshots"]
    ]


def _flow_logs(ec2: Any, key: str) -> list[dict[str, Any]]:
    pages = ec2.get_paginator("describe_flow_logs").paginate(
        Filters=[{"Name": f"tag:{INCIDENT_TAG}", "Values": [key]}]
    )
    return [
        {
            "id": f["FlowLogId"],
            "resource_id": f.get("ResourceId"),
            "destination": f.get("LogDestination"),
        }
        for page in pages
        for f in page["FlowLogs"]
    ]


def _objects(
    s3: Any,
    bucket: str,
    prefix: str,
    key: str,
    flow_log_ids: Sequence[str],
    skipped: list[dict[str, str]],
) -> list[dict[str, Any]]:
    """Every version (and delete marker) under the incident's prefix that is provably its."""
    root = f"{prefix}{key}/"  # the slash keeps INC-1 from matching INC-10
    flow_root = f"{root}flow-logs/"
    versions: list[dict[str, Any]] = []
    markers: list[dict[str, Any]] = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=root):
        versions.extend(page.get("Versions", []))
        markers.extend(page.get("DeleteMarkers", []))
    out: list[dict[str, Any]] = []
    proven: set[str] = set()
    for v in versions:
        name, version = v["Key"], v.get("VersionId") or "null"
        if name.startswith(flow_root):
            if any(f"_{fl}_" in name.rsplit("/", 1)[-1] for fl in flow_log_ids):
                out.append(
                    {
                        "key": name,
                        "version_id": version,
                        "size": v.get("Size", 0),
                        "why": "flow-log file",
                    }
                )
                proven.add(name)
            else:
                skipped.append(
                    {
                        "what": "object",
                        "id": name,
                        "why": "flow-log file of no flow log this incident created",
                    }
                )
            continue
        params: dict[str, Any] = {"Bucket": bucket, "Key": name}
        if version != "null":
            params["VersionId"] = version
        tags = tag_dict(s3.get_object_tagging(**params).get("TagSet"))
        if tags.get(INCIDENT_TAG) != key:
            skipped.append({"what": "object", "id": name, "why": "no incident tag"})
            continue
        out.append({"key": name, "version_id": version, "size": v.get("Size", 0), "why": "tagged"})
        proven.add(name)
    for m in markers:
        if m["Key"] in proven:
            out.append(
                {"key": m["Key"], "version_id": m["VersionId"], "size": 0, "why": "delete marker"}
            )
    return out


def _kms_keys(
    kms: Any, key: str, shared_key: str | None, skipped: list[dict[str, str]]
) -> list[dict[str, Any]]:
    aliases: dict[str, str] = {}
    for page in kms.get_paginator("list_aliases").paginate():
        for a in page["Aliases"]:
            if a.get("TargetKeyId"):
                aliases.setdefault(a["TargetKeyId"], a["AliasName"])
    out = []
    for page in kms.get_paginator("list_keys").paginate():
        for k in page["Keys"]:
            key_id = k["KeyId"]
            try:
                tags = kms.list_resource_tags(KeyId=key_id).get("Tags", [])
            except ClientError as exc:
                if is_not_found(exc) or "AccessDenied" in str(exc):
                    continue  # AWS-managed or not ours to read
                raise
            if {t["TagKey"]: t["TagValue"] for t in tags}.get(INCIDENT_TAG) != key:
                continue
            meta = kms.describe_key(KeyId=key_id)["KeyMetadata"]
            alias = aliases.get(key_id)
            if shared_key and shared_key in (key_id, meta["Arn"], alias):
                skipped.append(
                    {"what": "kms key", "id": key_id, "why": "the configured shared evidence key"}
                )
                continue
            if meta.get("KeyManager") != "CUSTOMER":
                continue
            if meta.get("KeyState") == "PendingDeletion":
                skipped.append({"what": "kms key", "id": key_id, "why": "already pending deletion"})
                continue
            out.append({"id": key_id, "arn": meta["Arn"], "alias": alias})
    return out


def inventory(
    *, ctx: ActionContext, scope: Scope, shared_kms_key: str | None = None
) -> dict[str, Any]:
    """Everything the wipe would delete, and what it found but will leave. Reads only."""
    skipped: list[dict[str, str]] = []
    ec2 = ctx.client("ec2", scope.target())
    items: dict[str, Any] = {
        "stacks": _stacks(ctx, scope, skipped),
        "volumes": _volumes(ec2, scope.incident_key, skipped),
        "snapshots": _snapshots(ec2, scope.incident_key),
        "flow_logs": _flow_logs(ec2, scope.incident_key),
        "objects": [],
        "kms_keys": [],
    }
    if ctx.evidence_bucket:
        s3 = ctx.home_client("s3", scope.region)
        items["objects"] = _objects(
            s3,
            ctx.evidence_bucket,
            ctx.evidence_prefix,
            scope.incident_key,
            [f["id"] for f in items["flow_logs"]],
            skipped,
        )
    items["kms_keys"] = _kms_keys(
        ctx.home_client("kms", scope.region), scope.incident_key, shared_kms_key, skipped
    )
    items["skipped"] = skipped
    return items


def _call(service: str, operation: str, text: str) -> dict[str, Any]:
    return {
        "text": f"{service}.{operation}({text})",
        "service": service,
        "operation": operation,
        "mutating": True,
    }


def _item_calls(kind: str, item: Mapping[str, Any], bucket: str | None, days: int) -> dict:
    if kind == "stacks":
        return _call("cloudformation", "DeleteStack", f"StackName={item['name']}")
    if kind == "volumes":
        return _call("ec2", "DeleteVolume", f"VolumeId={item['id']}")
    if kind == "snapshots":
        return _call("ec2", "DeleteSnapshot", f"SnapshotId={item['id']}")
    if kind == "flow_logs":
        return _call("ec2", "DeleteFlowLogs", f"FlowLogIds=[{item['id']}]")
    if kind == "objects":
        return _call(
            "s3",
            "DeleteObject",
            f"Bucket={bucket}, Key={item['key']}, VersionId={item['version_id']}",
        )
    return _call("kms", "ScheduleKeyDeletion", f"KeyId={item['id']}, PendingWindowInDays={days}")


def build_plan(
    *, items: Mapping[str, Any], bucket: str | None, kms_pending_days: int
) -> dict[str, Any]:
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
                "calls": [_item_calls(kind, i, bucket, kms_pending_days) for i in found],
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
    return {
        "engine": ENGINE,
        "items": dict(items),
        "bucket": bucket,
        "kms_pending_days": kms_pending_days,
        "steps": steps,
        "blast_radius": radius,
    }


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
) -> Proposed:
    """Check the incident is resolved, list everything, and record the approval request."""
    with db.read_session() as session:
        incident = get_incident(session=session, key=incident_key)
        if incident.status not in WIPEABLE:
            raise UserError(
                f"{incident.key} is {incident.status}: resolve it first "
                f"(/incident resolve {incident.key} <summary>), then wipe its evidence."
            )
        scope = Scope(incident.key, incident.region or default_region, incident.account_id)
        live = _live(session, incident.key)
        if live is not None:
            return Proposed(live.id, False, incident.key, -1)
    items = inventory(ctx=ctx, scope=scope, shared_kms_key=shared_kms_key)
    plan = build_plan(items=items, bucket=ctx.evidence_bucket, kms_pending_days=kms_pending_days)
    if not plan["steps"]:
        raise UserError(f"{scope.incident_key} has nothing left to wipe.")
    with db.session() as session:
        incident = get_incident(session=session, key=incident_key, for_update=True)
        live = _live(session, incident.key)
        if live is not None:
            return Proposed(live.id, False, incident.key, -1)
        created = request_containment(
            session=session,
            incident=incident,
            target=scope.target(),
            plan=plan,
            requested_by=requested_by,
            reason="wipe the investigation's evidence",
            expire_after=expire_after,
            dry_run=dry_run,
            kind="wipe",
        )
        count = sum(len(s["calls"]) for s in plan["steps"])
        return Proposed(created.request.id, created.created, incident.key, count)


def _live(session: Any, key: str) -> ContainmentRequest | None:
    return session.scalars(
        select(ContainmentRequest)
        .where(
            ContainmentRequest.target_id == key,
            ContainmentRequest.kind == "wipe",
            ContainmentRequest.status.in_(LIVE_REQUEST),
        )
        .order_by(ContainmentRequest.id.desc())
    ).first()


# -- running -------------------------------------------------------------------------------


class Gone(Exception):
    """The item no longer exists: nothing to delete."""


class NotOurs(Exception):
    """The item lost the tag that proves the incident created it."""


class WipeEngine:
    """The approval executor's Engine for wipe requests (and their retries)."""

    def __init__(
        self,
        *,
        database: Database,
        clean_room: CleanRoomEngine | None = None,
        now: Callable[[], dt.datetime] | None = None,
        on_facts: Callable[[str], None] | None = None,
    ) -> None:
        self.database = database
        self.clean_room = clean_room or CleanRoomEngine(database=database)
        self.now = now or database.clock.now
        self.on_facts = on_facts

    def plan(self, *, target: Target, ctx: ActionContext) -> dict[str, Any]:
        raise UserError("Use /incident wipe to plan a wipe.")

    def plan_rollback(
        self, *, target: Target, ctx: ActionContext, previous: Sequence[Mapping[str, Any]]
    ) -> dict[str, Any]:
        return {"steps": [], "blast_radius": {}}  # deletions cannot be undone

    def rollback(self, **_: Any) -> list[dict[str, Any]]:
        return []

    def run(
        self,
        *,
        target: Target,
        ctx: ActionContext,
        action_names: Sequence[str] | None,
        previous: Sequence[Mapping[str, Any]],
        on_step: StepCallback,
    ) -> list[dict[str, Any]]:
        plan = self._plan_of(target.resource_id)
        items = plan["items"]
        wanted = set(action_names) if action_names is not None else None
        results = []
        for action, kind, _ in STEPS:
            if not items.get(kind) or (wanted is not None and action not in wanted):
                continue
            on_step(action, "started", None)
            result = self._step(action, kind, items[kind], target, ctx, plan)
            on_step(action, "finished", result)
            results.append(result)
        return results

    def _plan_of(self, key: str) -> dict[str, Any]:
        return running_plan(
            database=self.database, target_id=key, kinds=("wipe", "retry"), what="wipe"
        )

    def _step(
        self,
        action: str,
        kind: str,
        items: list[dict[str, Any]],
        target: Target,
        ctx: ActionContext,
        plan: Mapping[str, Any],
    ) -> dict[str, Any]:
        started = self.now().isoformat()
        deleted: list[str] = []
        gone: list[str] = []
        refused: list[dict[str, str]] = []
        errors: list[dict[str, Any]] = []
        for item in items:
            label = item.get("key") or item.get("name") or item["id"]
            if ctx.dry_run:
                deleted.append(label)
                continue
            try:
                detail = self._delete(kind, item, target, ctx, plan)
            except Gone:
                gone.append(label)
                continue
            except NotOurs as exc:
                refused.append({"id": label, "why": str(exc)})
                self._record(
                    ctx.incident_key,
                    "wipe.refused",
                    f"Left {kind} {label}: {exc}",
                    {"type": kind, "id": label},
                )
                continue
            except Exception as exc:
                err = error_record(exc)
                errors.append({"id": label, **err})
                self._record(
                    ctx.incident_key,
                    "wipe.failed",
                    f"Could not delete {kind} {label}: {err['code']}: {err['message']}",
                    {"type": kind, "id": label, "error": err},
                )
                continue
            deleted.append(label)
            self._record(
                ctx.incident_key,
                "wipe.deleted",
                detail,
                {"type": kind, "id": label},
                deleted=(kind, label),
            )
        verb = "would delete" if ctx.dry_run else "deleted"
        note = f"{verb} {len(deleted)}"
        if deleted:
            note += ": " + ", ".join(deleted[:5]) + (" …" if len(deleted) > 5 else "")
        if gone:
            note += f"; {len(gone)} already gone"
        if refused:
            note += f"; {len(refused)} left (tag missing)"
        result: dict[str, Any] = {
            "action": action,
            "status": "failed" if errors else "succeeded",
            "note": note,
            "evidence": {
                "deleted": deleted,
                "already_gone": gone,
                "refused": refused,
                "errors": errors,
            },
            "changes": {},
            "dry_run": ctx.dry_run,
            "started_at": started,
            "finished_at": self.now().isoformat(),
        }
        if errors:
            first = errors[0]
            result["error"] = {
                "code": first["code"],
                "message": f"{len(errors)} of {len(items)} failed; first: "
                f"{first['id']}: {first['message']}"[:500],
                "kind": first.get("kind", "error"),
            }
            result["state_left"] = {"not_deleted": [e["id"] for e in errors]}
        return result

    def _delete(
        self,
        kind: str,
        item: Mapping[str, Any],
        target: Target,
        ctx: ActionContext,
        plan: Mapping[str, Any],
    ) -> str:
        """Check the item is still the incident's, delete it, return the timeline summary."""
        key = ctx.incident_key
        if kind == "stacks":
            result = delete_clean_room(
                ctx=ctx, target=target, stack_id=item["id"], engine=self.clean_room
            )
            if result["status"] == "skipped":
                raise Gone()
            if result["status"] != "succeeded":
                raise RuntimeError(result["error"]["message"])
            return f"Deleted clean-room stack {item['name']}"
        if kind in ("volumes", "snapshots", "flow_logs"):
            ec2 = ctx.client("ec2", target)
            return _delete_ec2(ec2, kind, item, key)
        if kind == "objects":
            s3 = ctx.home_client("s3", target.region)
            bucket = plan["bucket"]
            params = {"Bucket": bucket, "Key": item["key"]}
            if item["version_id"] != "null":  # an unversioned bucket's only version
                params["VersionId"] = item["version_id"]
            if item["why"] == "tagged":
                try:
                    tags = tag_dict(s3.get_object_tagging(**params).get("TagSet"))
                except ClientError as exc:
                    if is_not_found(exc) or "NoSuchVersion" in str(exc):
                        raise Gone() from None
                    raise
                if tags.get(INCIDENT_TAG) != key:
                    raise NotOurs("its incident tag is gone")
            s3.delete_object(**params)
            return f"Deleted s3://{bucket}/{item['key']} (version {item['version_id']})"
        kms = ctx.home_client("kms", target.region)
        tags = {
            t["TagKey"]: t["TagValue"]
            for t in kms.list_resource_tags(KeyId=item["id"]).get("Tags", [])
        }
        if tags.get(INCIDENT_TAG) != key:
            raise NotOurs("its incident tag is gone")
        meta = kms.describe_key(KeyId=item["id"])["KeyMetadata"]
        if meta.get("KeyState") == "PendingDeletion":
            raise Gone()
        days = int(plan["kms_pending_days"])
        out = kms.schedule_key_deletion(KeyId=item["id"], PendingWindowInDays=days)
        when = out.get("DeletionDate")
        when_text = when.strftime("%Y-%m-%d %H:%M UTC") if isinstance(when, dt.datetime) else when
        self._save(key, kms_deletion={"key_id": item["id"], "deletion_date": str(when_text)})
        return (
            f"Scheduled deletion of KMS key {item['id']} in {days} days ({when_text}); "
            f"aws kms cancel-key-deletion --key-id {item['id']} undoes it until then"
        )

    def _record(
        self,
        key: str,
        kind: str,
        summary: str,
        details: dict[str, Any],
        deleted: tuple[str, str] | None = None,
    ) -> None:
        with self.database.session() as session:
            incident = get_incident(session=session, key=key)
            append_event(
                session=session,
                incident=incident,
                actor="system",
                kind=kind,
                summary=summary,
                details=details,
            )
            wipe = WIPE.get(incident)
            if deleted:
                wipe["deleted"] = [
                    *wipe.get("deleted", []),
                    {"type": deleted[0], "id": deleted[1], "at": self.now().isoformat()},
                ]
            elif kind == "wipe.failed":
                wipe["failed"] = [*wipe.get("failed", []), details]
            WIPE.set(incident, wipe)
        self._facts_changed(key)

    def _save(self, key: str, **values: Any) -> None:
        with self.database.session() as session:
            WIPE.update(get_incident(session=session, key=key), **values)

    def _facts_changed(self, key: str) -> None:
        if self.on_facts is not None:
            try:
                self.on_facts(key)
            except Exception:  # the card is secondary to the deletion record
                return


def _delete_ec2(ec2: Any, kind: str, item: Mapping[str, Any], key: str) -> str:
    try:
        if kind == "volumes":
            vols = ec2.describe_volumes(VolumeIds=[item["id"]])["Volumes"]
            if not vols:
                raise Gone()
            tags = tag_dict(vols[0].get("Tags"))
            if tags.get(INCIDENT_TAG) != key or SOURCE_SNAPSHOT_TAG not in tags:
                raise NotOurs("it no longer carries the tags of a restored volume")
            ec2.delete_volume(VolumeId=item["id"])
            return f"Deleted restored volume {item['id']} (from {item.get('source_snapshot')})"
        if kind == "snapshots":
            snaps = ec2.describe_snapshots(SnapshotIds=[item["id"]])["Snapshots"]
            if not snaps:
                raise Gone()
            if tag_dict(snaps[0].get("Tags")).get(INCIDENT_TAG) != key:
                raise NotOurs("its incident tag is gone")
            ec2.delete_snapshot(SnapshotId=item["id"])
            return f"Deleted snapshot {item['id']} (of {item.get('volume_id')})"
        logs = ec2.describe_flow_logs(FlowLogIds=[item["id"]])["FlowLogs"]
        if not logs:
            raise Gone()
        if tag_dict(logs[0].get("Tags")).get(INCIDENT_TAG) != key:
            raise NotOurs("its incident tag is gone")
        out = ec2.delete_flow_logs(FlowLogIds=[item["id"]])
        if out.get("Unsuccessful"):
            err = out["Unsuccessful"][0].get("Error", {})
            raise RuntimeError(f"{err.get('Code')}: {err.get('Message')}")
        return f"Deleted flow log {item['id']} (on {item.get('resource_id')})"
    except ClientError as exc:
        if is_not_found(exc):
            raise Gone() from None
        raise


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


def plan_text(incident_key: str, plan: Mapping[str, Any]) -> str:
    """Every item of a wipe plan as Markdown (attached to the approval card's thread, so the
    full list is there even when the card has to shorten it)."""
    lines = [f"# Evidence wipe plan for {incident_key}", ""]
    for step in plan.get("steps", []):
        lines.append(f"## {step['action']}: {step['summary']}")
        lines.extend(f"- `{c['text']}`" for c in step["calls"])
        lines.append("")
    skipped = (plan.get("items") or {}).get("skipped") or []
    if skipped:
        lines.append("## Left alone")
        lines.extend(f"- {s['what']} {s['id']}: {s['why']}" for s in skipped)
    return "\n".join(lines) + "\n"
