"""The forensic account: share the incident's snapshots with it and copy them under its key.

With `forensics.account_id` set, the clean room is built in the forensic account from copies
the forensic account owns, so whoever holds the compromised account cannot touch the disks
under examination. Sharing (ModifySnapshotAttribute createVolumePermission) acts in the
incident's account; for a snapshot encrypted under a customer-managed key, a KMS grant lets
the forensic role use that key for the copy (a key policy that names the forensic account
does the same; the AWS-managed aws/ebs key cannot be shared at all, so such snapshots are
refused at planning). The copies are made in the forensic account under its own key, tagged
with their source, and recorded on the timeline and in the evidence manifest (chain of
custody: source snapshot id, volume id and start time, and the copy's id).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from botocore.exceptions import ClientError

from commands.errors import UserError
from containment import custody
from containment.context import ActionContext
from containment.errors import error_code
from containment.tags import INCIDENT_TAG, tag_list
from containment.targets import Target

COPY_OF_TAG = "incident-bot:copy-of"  # on a forensic copy: the source snapshot's id
# What the forensic role may do with the source snapshot's key, for the copy.
GRANT_OPERATIONS = ("Decrypt", "DescribeKey", "CreateGrant", "ReEncryptFrom")
GRANT_NAME = "incident-bot-{key}-forensic-copy"  # the wipe revokes grants by this name only
PERMISSIONS = (
    "ec2:ModifySnapshotAttribute",
    "ec2:CopySnapshot",
    "kms:CreateGrant",
    *custody.PERMISSIONS,
    "s3:PutObject",
)


def cfn_client(ctx: ActionContext, target: Target) -> Any:
    """CloudFormation where the clean room lives: the forensic account when there is one."""
    if ctx.forensic_account_id:
        return ctx.forensic_client("cloudformation", target.region)
    return ctx.client("cloudformation", target)


def room_ec2(ctx: ActionContext, target: Target) -> Any:
    if ctx.forensic_account_id:
        return ctx.forensic_client("ec2", target.region)
    return ctx.client("ec2", target)


def account_label(account_id: str | None) -> str:
    return f"account {account_id}" if account_id else "the bot's own account"


def role_arn(ctx: ActionContext, region: str) -> str:
    name, _ = ctx.forensic_role()
    partition = "aws-cn" if region.startswith("cn-") else "aws"
    if region.startswith("us-gov-"):
        partition = "aws-us-gov"
    return f"arn:{partition}:iam::{ctx.forensic_account_id}:role/{name}"


def sharing_keys(kms: Any, snapshots: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Snapshot id -> the customer-managed key to grant on; refuses the AWS-managed key."""
    out: dict[str, str] = {}
    for snap in snapshots:
        key = snap.get("kms_key_id")
        if not snap.get("encrypted") or not key:
            continue
        meta = kms.describe_key(KeyId=key)["KeyMetadata"]
        if meta.get("KeyManager") == "AWS":
            raise UserError(
                f"Snapshot {snap['id']} is encrypted with the AWS-managed EBS key, which cannot "
                "be shared with the forensic account: copy it under a customer-managed key first."
            )
        out[str(snap["id"])] = str(meta["Arn"])
    return out


def share(
    *,
    ec2: Any,
    kms: Any,
    ctx: ActionContext,
    region: str,
    snapshots: Sequence[Mapping[str, Any]],
    keys: Mapping[str, str],
) -> dict[str, Any]:
    """Let the forensic account create volumes from (and copy) each snapshot."""
    shared: list[str] = []
    grants: dict[str, str] = {}
    grantee = role_arn(ctx, region) if keys else ""
    for snap in snapshots:
        ec2.modify_snapshot_attribute(
            SnapshotId=snap["id"],
            Attribute="createVolumePermission",
            OperationType="add",
            UserIds=[ctx.forensic_account_id],
        )
        shared.append(str(snap["id"]))
        key = keys.get(str(snap["id"]))
        if key and key not in grants:
            grants[key] = kms.create_grant(
                KeyId=key,
                GranteePrincipal=grantee,
                Operations=list(GRANT_OPERATIONS),
                Name=GRANT_NAME.format(key=ctx.incident_key),
            )["GrantId"]
    return {"shared_with": ctx.forensic_account_id, "snapshots": shared, "grants": grants}


def _existing_copies(ec2: Any, incident_key: str) -> dict[str, dict[str, Any]]:
    found = ec2.describe_snapshots(
        OwnerIds=["self"], Filters=[{"Name": f"tag:{INCIDENT_TAG}", "Values": [incident_key]}]
    )["Snapshots"]
    out = {}
    for s in found:
        source = {t["Key"]: t["Value"] for t in s.get("Tags", [])}.get(COPY_OF_TAG)
        if source:
            out[source] = s
    return out


def copy(
    *,
    ec2: Any,
    ctx: ActionContext,
    region: str,
    snapshots: Sequence[Mapping[str, Any]],
    source_account: str | None,
) -> list[dict[str, Any]]:
    """Copy each snapshot into the forensic account under its key (once: a retry finds the
    copies by their copy-of tag). Returns the chain-of-custody entries."""
    existing = _existing_copies(ec2, ctx.incident_key)
    entries = []
    for snap in snapshots:
        found = existing.get(str(snap["id"]))
        if found is not None:
            copy_id = found["SnapshotId"]
        else:
            params: dict[str, Any] = {
                "SourceSnapshotId": snap["id"],
                "SourceRegion": region,
                "Encrypted": True,
                "Description": f"incident-bot {ctx.incident_key} copy of {snap['id']}"[:255],
                "TagSpecifications": [
                    {
                        "ResourceType": "snapshot",
                        "Tags": tag_list(
                            {INCIDENT_TAG: ctx.incident_key, COPY_OF_TAG: str(snap["id"])}
                        ),
                    }
                ],
            }
            if ctx.forensic_kms_key_id:
                params["KmsKeyId"] = ctx.forensic_kms_key_id
            copy_id = ec2.copy_snapshot(**params)["SnapshotId"]
        entries.append(
            {
                "snapshot_id": snap["id"],
                "volume_id": snap.get("volume_id"),
                "start_time": snap.get("start_time"),
                "source_account": source_account,
                "copy_id": copy_id,
                "copy_account": ctx.forensic_account_id,
                "copy_kms_key_id": ctx.forensic_kms_key_id or "the account's default EBS key",
                "size": snap.get("size"),
                "copied_at": ctx.now().isoformat(),
            }
        )
    return entries


def wait_completed(
    ec2: Any,
    ids: Sequence[str],
    *,
    timeout: dt.timedelta,
    poll: float,
    sleep: Callable[[float], None],
) -> None:
    deadline = time.monotonic() + timeout.total_seconds()
    while True:
        snaps = ec2.describe_snapshots(SnapshotIds=list(ids))["Snapshots"]
        states = {s["SnapshotId"]: s.get("State") for s in snaps}
        failed = [i for i, s in states.items() if s == "error"]
        if failed:
            raise RuntimeError(f"snapshot copy {failed[0]} failed (state error)")
        if all(states.get(i) == "completed" for i in ids):
            return
        if time.monotonic() >= deadline:
            raise TimeoutError(f"snapshot copies still pending after {timeout}")
        sleep(poll)


def record_copies(ctx: ActionContext, region: str, entries: list[dict[str, Any]]) -> str | None:
    """Add the copies to the incident's evidence manifest; its key, or None without a bucket."""
    if not ctx.evidence_bucket:
        return None
    s3 = ctx.evidence_client("s3", region)
    try:
        return custody.add_to_manifest(
            s3=s3,
            bucket=ctx.evidence_bucket,
            ctx=ctx,
            snapshots=entries,
            kms_key_id=ctx.evidence_kms_key_id,
        )
    except ClientError as exc:
        raise RuntimeError(
            f"copies made, but the manifest in {ctx.evidence_bucket} could not be written "
            f"({error_code(exc)})"
        ) from exc
