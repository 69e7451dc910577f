"""The wipe's Engine: deletes each approved item after checking it is still the incident's."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from botocore.exceptions import ClientError

from commands.aftermath import OneWayEngine
from commands.approvals.plans import StepCallback
from commands.approvals.requests import running_plan
from commands.forensics import CleanRoomEngine, delete_clean_room
from commands.forensics.account import COPY_OF_TAG, GRANT_NAME, account_label, room_ec2
from commands.incidents import get_incident
from commands.wipe.inventory import SOURCE_SNAPSHOT_TAG, grant_kms, grant_missing, live_grant
from commands.wipe.plan import STEPS
from containment.context import ActionContext
from containment.errors import error_code, error_record, is_not_found
from containment.registry import StepResult
from containment.tags import INCIDENT_TAG, tag_dict
from containment.targets import Target
from storage.db import Database
from storage.facts import WIPE
from storage.timeline import append_event


class Gone(Exception):
    """The item no longer exists: nothing to delete. With a message: said on the timeline."""


class NotOurs(Exception):
    """The item lost the tag that proves the incident created it."""


class WipeEngine(OneWayEngine):
    """The approval executor's Engine for wipe requests (and their retries)."""

    def __init__(
        self,
        *,
        database: Database,
        clean_room: CleanRoomEngine | None = None,
        now: Callable[[], dt.datetime] | None = None,
        on_facts: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(on_facts)
        self.database = database
        self.clean_room = clean_room or CleanRoomEngine(database=database)
        self.now = now or database.clock.now

    plan_command = "/incident wipe to plan a wipe"  # deletions cannot be undone: no rollback

    def run(
        self,
        *,
        target: Target,
        ctx: ActionContext,
        action_names: Sequence[str] | None,
        previous: Sequence[StepResult],
        on_step: StepCallback,
    ) -> list[StepResult]:
        plan = self._plan_of(target.resource_id)
        items = plan["items"]
        wanted = set(action_names) if action_names is not None else None
        results: list[StepResult] = []
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
    ) -> StepResult:
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
            except Gone as exc:
                gone.append(label)
                if str(exc):
                    self._record(
                        ctx.incident_key, "wipe.already_gone", str(exc), {"type": kind, "id": label}
                    )
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
        result = StepResult(
            action=action,
            status="failed" if errors else "succeeded",
            note=note,
            evidence={
                "deleted": deleted,
                "already_gone": gone,
                "refused": refused,
                "errors": errors,
            },
            dry_run=ctx.dry_run,
            started_at=started,
            finished_at=self.now().isoformat(),
        )
        if errors:
            first = errors[0]
            result.error = {
                "code": first["code"],
                "message": f"{len(errors)} of {len(items)} failed; first: "
                f"{first['id']}: {first['message']}"[:500],
                "kind": first.get("kind", "error"),
            }
            result.state_left = {"not_deleted": [e["id"] for e in errors]}
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
        if kind == "instances":
            return self._retire(item, target, ctx)
        if kind == "stacks":
            result = delete_clean_room(
                ctx=ctx, target=target, stack_id=item["id"], engine=self.clean_room
            )
            if result.status == "skipped":
                raise Gone()
            if result.status != "succeeded":
                raise RuntimeError((result.error or {}).get("message"))
            where = f" in forensic {account_label(item['account'])}" if item.get("account") else ""
            return f"Deleted clean-room stack {item['name']}{where}"
        if kind == "forensic_copies":
            return _delete_copy(room_ec2(ctx, target), item, key)
        if kind == "grants":
            return _revoke_grant(grant_kms(ctx, target, item["key_arn"]), item, key)
        if kind in ("volumes", "snapshots", "flow_logs"):
            ec2 = ctx.client("ec2", target)
            return _delete_ec2(ec2, kind, item, key)
        if kind == "objects":
            s3 = ctx.evidence_client("s3", target.region)
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
        kms = ctx.evidence_client("kms", target.region)
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
        try:
            out = kms.schedule_key_deletion(KeyId=item["id"], PendingWindowInDays=days)
        except ClientError as exc:
            # Re-sent by botocore after a lost answer: the first one took effect.
            if error_code(exc) != "KMSInvalidStateException":
                raise
            out = kms.describe_key(KeyId=item["id"])["KeyMetadata"]
            if out.get("KeyState") != "PendingDeletion":
                raise
        when = out.get("DeletionDate")
        when_text = when.strftime("%Y-%m-%d %H:%M UTC") if isinstance(when, dt.datetime) else when
        self._save(key, kms_deletion={"key_id": item["id"], "deletion_date": str(when_text)})
        return (
            f"Scheduled deletion of KMS key {item['id']} in {days} days ({when_text}); "
            f"aws kms cancel-key-deletion --key-id {item['id']} undoes it until then"
        )

    def _retire(self, item: Mapping[str, Any], target: Target, ctx: ActionContext) -> str:
        """Check the tag again, turn termination protection off (recorded), terminate."""
        key = ctx.incident_key
        ec2 = ctx.client("ec2", target)
        iid = str(item["id"])
        try:
            found = [
                i
                for r in ec2.describe_instances(InstanceIds=[iid])["Reservations"]
                for i in r["Instances"]
            ]
        except ClientError as exc:
            if is_not_found(exc):
                raise Gone() from None
            raise
        if not found or found[0]["State"]["Name"] == "terminated":
            raise Gone()
        if tag_dict(found[0].get("Tags")).get(INCIDENT_TAG) != key:
            raise NotOurs("its incident tag is gone")
        protected = ec2.describe_instance_attribute(
            InstanceId=iid, Attribute="disableApiTermination"
        )["DisableApiTermination"]["Value"]
        if protected:
            ec2.modify_instance_attribute(InstanceId=iid, DisableApiTermination={"Value": False})
            self._record(
                key,
                "wipe.protection_off",
                f"Turned termination protection off on {iid}, to terminate it",
                {"type": "instances", "id": iid},
            )
        state = ec2.terminate_instances(InstanceIds=[iid])["TerminatingInstances"][0]
        now = state.get("CurrentState", {}).get("Name")
        return f"Terminated the isolated instance {iid} (now {now})"

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
        self.facts_changed(key)

    def _save(self, key: str, **values: Any) -> None:
        with self.database.session() as session:
            WIPE.update(get_incident(session=session, key=key), **values)


def _delete_copy(ec2: Any, item: Mapping[str, Any], key: str) -> str:
    """A forensic copy: still tagged as this incident's copy, then deleted (in its account)."""
    try:
        snaps = ec2.describe_snapshots(SnapshotIds=[item["id"]])["Snapshots"]
        if not snaps:
            raise Gone()
        tags = tag_dict(snaps[0].get("Tags"))
        if tags.get(INCIDENT_TAG) != key or not tags.get(COPY_OF_TAG):
            raise NotOurs("it no longer carries the tags of this incident's forensic copy")
        ec2.delete_snapshot(SnapshotId=item["id"])
    except ClientError as exc:
        if is_not_found(exc):
            raise Gone() from None
        raise
    return (
        f"Deleted forensic copy {item['id']} (of {item.get('copy_of')}) in forensic "
        f"{account_label(item.get('account'))}"
    )


def _revoke_grant(kms: Any, item: Mapping[str, Any], key: str) -> str:
    """A grant /forensics made on a source snapshot's key: still there and still named for
    this incident, then revoked (in the incident's account, which owns the key)."""
    where = f"{item['id']} on key {item['key_arn']}"
    gone = f"KMS grant {where} was already retired or revoked: nothing to revoke"
    grant = live_grant(kms, item)
    if grant is None:
        raise Gone(gone)
    if grant.get("Name") != GRANT_NAME.format(key=key):
        raise NotOurs("it is no longer named as this incident's forensic-copy grant")
    try:
        kms.revoke_grant(KeyId=item["key_arn"], GrantId=item["id"])
    except ClientError as exc:
        if grant_missing(exc):  # retired between the check and the revoke
            raise Gone(gone) from None
        raise
    return (
        f"Revoked KMS grant {where}: {item.get('grantee') or 'the forensic role'} can no "
        "longer use the key"
    )


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
