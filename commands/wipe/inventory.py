"""The wipe's inventory: every item the incident created, proven by its tags, read before
anything is deleted (reads only), and what was found but is not the wipe's to delete."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from botocore.exceptions import ClientError

from commands.forensics import existing_stack, stack_name
from commands.forensics.account import COPY_OF_TAG, GRANT_NAME, cfn_client, room_ec2
from containment.context import ActionContext
from containment.errors import error_code, is_not_found
from containment.tags import INCIDENT_TAG, STATUS_TAG, tag_dict
from containment.targets import Target

TARGET_KIND = "evidence"
SOURCE_SNAPSHOT_TAG = "incident-bot:source-snapshot"


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


def _stacks(ctx: ActionContext, scope: Scope, skipped: list[dict[str, str]]) -> list[dict]:
    cfn = cfn_client(ctx, scope.target())  # the forensic account's, when there is one
    found = existing_stack(cfn, stack_name(scope.incident_key))
    if found is None:
        return []
    if tag_dict(found.get("Tags")).get(INCIDENT_TAG) != scope.incident_key:
        skipped.append({"what": "stack", "id": found["StackName"], "why": "no incident tag"})
        return []
    return [
        {
            "id": found["StackId"],
            "name": found["StackName"],
            "status": found["StackStatus"],
            "account": ctx.forensic_account_id,  # None: the incident's own account
        }
    ]


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


def _forensic_copies(ctx: ActionContext, scope: Scope) -> list[dict[str, Any]]:
    """The copies /forensics made in the forensic account (incident tag and copy-of tag)."""
    if not ctx.forensic_account_id:
        return []  # no forensic account: the clean room used the snapshots themselves
    ec2 = room_ec2(ctx, scope.target())
    pages = ec2.get_paginator("describe_snapshots").paginate(
        OwnerIds=["self"], Filters=[{"Name": f"tag:{INCIDENT_TAG}", "Values": [scope.incident_key]}]
    )
    return [
        {
            "id": s["SnapshotId"],
            "copy_of": tag_dict(s.get("Tags")).get(COPY_OF_TAG),
            "account": ctx.forensic_account_id,
            "size": s.get("VolumeSize"),
        }
        for page in pages
        for s in page["Snapshots"]
        if tag_dict(s.get("Tags")).get(COPY_OF_TAG)
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
    kms: Any, key: str, shared_keys: Mapping[str, str], skipped: list[dict[str, str]]
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
            shared = next((s for s in shared_keys if s in (key_id, meta["Arn"], alias)), None)
            if shared is not None:
                skipped.append({"what": "kms key", "id": key_id, "why": shared_keys[shared]})
                continue
            if meta.get("KeyManager") != "CUSTOMER":
                continue
            if meta.get("KeyState") == "PendingDeletion":
                skipped.append({"what": "kms key", "id": key_id, "why": "already pending deletion"})
                continue
            out.append({"id": key_id, "arn": meta["Arn"], "alias": alias})
    return out


def recorded_grants(session: Any, incident_id: int) -> list[dict[str, str]]:
    """The KMS grants /forensics made for this incident: its share_snapshots steps' recorded
    changes (`grants`: source key ARN -> grant id), each once."""
    from sqlalchemy import select

    from storage.models import ActionStep, ContainmentRequest

    rows = session.scalars(
        select(ActionStep.result)
        .join(ContainmentRequest, ContainmentRequest.id == ActionStep.request_id)
        .where(
            ContainmentRequest.incident_id == incident_id,
            ActionStep.action == "share_snapshots",
            ActionStep.status == "succeeded",
        )
        .order_by(ActionStep.id)
    )
    out: dict[tuple[str, str], dict[str, str]] = {}
    for result in rows:
        if (result or {}).get("dry_run"):
            continue
        for key_arn, grant_id in (
            ((result or {}).get("changes") or {}).get("grants") or {}
        ).items():
            out.setdefault((key_arn, grant_id), {"id": grant_id, "key_arn": key_arn})
    return list(out.values())


def grant_kms(ctx: ActionContext, scope_target: Target, key_arn: str) -> Any:
    """KMS where the grant's key is: the incident's account, the key's own region."""
    parts = key_arn.split(":")
    region = parts[3] if len(parts) > 5 and parts[3] else scope_target.region
    return ctx.client("kms", replace(scope_target, region=region))


def grant_missing(exc: ClientError) -> bool:
    """KMS's answer for a grant (or key) it does not have."""
    return is_not_found(exc) or error_code(exc) == "NotFoundException"


def live_grant(kms: Any, item: Mapping[str, Any]) -> dict[str, Any] | None:
    """The grant as KMS lists it, or None once retired or revoked."""
    try:
        found = kms.list_grants(KeyId=item["key_arn"], GrantId=item["id"]).get("Grants", [])
    except ClientError as exc:
        if grant_missing(exc):
            return None
        raise
    return next((g for g in found if g.get("GrantId") == item["id"]), None)


def _grants(
    ctx: ActionContext,
    scope: Scope,
    recorded: Sequence[Mapping[str, str]],
    skipped: list[dict[str, str]],
) -> list[dict[str, Any]]:
    out = []
    for item in recorded:
        grant = live_grant(grant_kms(ctx, scope.target(), item["key_arn"]), item)
        if grant is None:
            skipped.append(
                {"what": "kms grant", "id": item["id"], "why": "already retired or revoked"}
            )
            continue
        if grant.get("Name") != GRANT_NAME.format(key=scope.incident_key):
            skipped.append(
                {"what": "kms grant", "id": item["id"], "why": "not named by /forensics"}
            )
            continue
        out.append({**item, "grantee": grant.get("GranteePrincipal")})
    return out


def inventory(
    *,
    ctx: ActionContext,
    scope: Scope,
    shared_kms_key: str | None = None,
    grants: Sequence[Mapping[str, str]] = (),
) -> dict[str, Any]:
    """Everything the wipe would delete, and what it found but will leave. Reads only.
    `grants`: the KMS grants /forensics recorded (`recorded_grants`)."""
    skipped: list[dict[str, str]] = []
    ec2 = ctx.client("ec2", scope.target())
    items: dict[str, Any] = {
        "stacks": _stacks(ctx, scope, skipped),
        "volumes": _volumes(ec2, scope.incident_key, skipped),
        "snapshots": _snapshots(ec2, scope.incident_key),
        "forensic_copies": _forensic_copies(ctx, scope),
        "grants": _grants(ctx, scope, grants, skipped),
        "flow_logs": _flow_logs(ec2, scope.incident_key),
        "objects": [],
        "kms_keys": [],
    }
    if ctx.evidence_bucket:
        s3 = ctx.evidence_client("s3", scope.region)
        items["objects"] = _objects(
            s3,
            ctx.evidence_bucket,
            ctx.evidence_prefix,
            scope.incident_key,
            [f["id"] for f in items["flow_logs"]],
            skipped,
        )
    # Configured keys serve every incident: never this wipe's to delete.
    shared: dict[str, str] = {}
    if shared_kms_key:
        shared[shared_kms_key] = "the configured shared evidence key"
    if ctx.forensic_kms_key_id:
        shared[ctx.forensic_kms_key_id] = "the configured forensic copy key"
    items["kms_keys"] = _kms_keys(
        ctx.evidence_client("kms", scope.region), scope.incident_key, shared, skipped
    )
    items["skipped"] = skipped
    return items
