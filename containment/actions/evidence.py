"""Store the captured evidence as one S3 object encrypted with SSE-KMS.

Runs beside the containment steps rather than before them: the capture is already held in
memory and in the capture step's result, so uploading it need not delay isolation.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from botocore.exceptions import ClientError

from containment import custody
from containment.context import ActionContext
from containment.errors import error_code
from containment.idempotency import create_once
from containment.registry import Action, Facts, PlannedCall, RunState, StepResult
from containment.tags import INCIDENT_TAG, creation_tags
from containment.targets import Target

# The incident's own key in a plan's `sdk` parameters, until CreateKey has answered.
INCIDENT_KEY_ID = "<incident key id>"
INCIDENT_KEY_ARN = "<incident key arn>"


def evidence_key(target: Target, ctx: ActionContext, facts: Facts) -> str:
    stamp = str(facts.get("captured_at", "unknown")).replace(":", "").replace("-", "")
    stamp = stamp.split(".")[0].split("+")[0]
    where = f"{ctx.evidence_prefix}{ctx.incident_key}/{target.kind}/{target.resource_id}"
    return f"{where}/capture-{stamp}Z.json"


def incident_key_alias(ctx: ActionContext) -> str:
    return f"alias/incident-bot/{ctx.incident_key}"


def per_incident_key(ctx: ActionContext, region: str) -> str:
    """The incident's own evidence key (found by alias, else created and tagged); its ARN."""
    kms = ctx.evidence_client("kms", region)
    alias = incident_key_alias(ctx)
    try:
        return kms.describe_key(KeyId=alias)["KeyMetadata"]["Arn"]
    except ClientError as exc:
        if error_code(exc) != "NotFoundException":
            raise
    tags = creation_tags(incident_key=ctx.incident_key, finding_id=ctx.finding_id)
    once = ctx.evidence_client("kms", region, max_attempts=1)
    # A retry after a crash between CreateKey and CreateAlias: the key exists, unaliased.
    found = _unaliased_key(kms, ctx) if ctx.resuming else None
    meta = found or create_once(
        ctx,
        service="kms",
        operation="CreateKey",
        create=lambda: once.create_key(
            Description=_key_description(ctx),
            KeyUsage="ENCRYPT_DECRYPT",
            Tags=[{"TagKey": k, "TagValue": v} for k, v in tags.items()],
        )["KeyMetadata"],
        find=lambda: _unaliased_key(kms, ctx),
    )
    try:
        kms.create_alias(AliasName=alias, TargetKeyId=meta["KeyId"])
    except ClientError as exc:
        if error_code(exc) != "AlreadyExistsException":
            raise
        current = kms.describe_key(KeyId=alias)["KeyMetadata"]
        if current["KeyId"] == meta["KeyId"]:  # our own alias, its answer lost and re-sent
            return str(current["Arn"])
        # A concurrent run made the alias first: use its key; ours is scheduled away unused.
        kms.schedule_key_deletion(KeyId=meta["KeyId"], PendingWindowInDays=7)
        return str(current["Arn"])
    return str(meta["Arn"])


def _key_description(ctx: ActionContext) -> str:
    return f"incident-bot evidence of {ctx.incident_key}; deleting it shreds them"


def _unaliased_key(kms: Any, ctx: ActionContext) -> dict[str, Any] | None:
    """A key this incident made whose CreateKey answer was lost. KMS cannot filter keys by
    tag, so this lists them: only after a lost answer or on a retry, never on the usual path."""
    for page in kms.get_paginator("list_keys").paginate():
        for key in page["Keys"]:
            try:
                tags = kms.list_resource_tags(KeyId=key["KeyId"]).get("Tags", [])
            except ClientError as exc:
                if error_code(exc) in ("AccessDeniedException", "NotFoundException"):
                    continue  # keys of others the bot may not read
                raise
            if {"TagKey": INCIDENT_TAG, "TagValue": ctx.incident_key} not in tags:
                continue
            meta = kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]
            if meta.get("KeyState") == "Enabled" and meta.get("Description") == _key_description(
                ctx
            ):
                return dict(meta)
    return None


def put_params(
    target: Target, ctx: ActionContext, facts: Facts, *, key_id: str | None = None
) -> dict[str, Any]:
    params: dict[str, Any] = {
        "Bucket": ctx.evidence_bucket,
        "Key": evidence_key(target, ctx, facts),
        "ServerSideEncryption": "aws:kms",
        "ContentType": "application/json",
        # Never overwrite evidence: a second run finds the object and changes nothing.
        "IfNoneMatch": "*",
        "Tagging": "&".join(
            f"{k}={v}"
            for k, v in creation_tags(
                incident_key=ctx.incident_key, finding_id=ctx.finding_id
            ).items()
        ),
    }
    if key_id or ctx.evidence_kms_key_id:
        params["SSEKMSKeyId"] = key_id or ctx.evidence_kms_key_id
    return params


def manifest_sdk(put: dict[str, Any], ctx: ActionContext) -> dict[str, Any]:
    """The manifest write a Step Functions export sends (commands/asl.py): the one object it
    stored, its SHA-256 computed by the machine from the capture (`<capture sha256>`). Never
    over the bot's own manifest (If-None-Match); the export goes on if one is there."""
    entry = {"key": put["Key"], "sha256": custody.CAPTURE_SHA256, "source": "step-functions"}
    body = {"incident": ctx.incident_key, "objects": [entry], "snapshots": []}
    return {
        "Bucket": put["Bucket"],
        "Key": custody.manifest_key(ctx.evidence_prefix, ctx.incident_key),
        "Body": json.dumps(body, sort_keys=True),
        "ContentType": "application/json",
        "IfNoneMatch": "*",
        "ServerSideEncryption": "aws:kms",
        **({"SSEKMSKeyId": put["SSEKMSKeyId"]} if put.get("SSEKMSKeyId") else {}),
        "Tagging": f"{INCIDENT_TAG}={ctx.incident_key}",
    }


class StoreEvidence(Action):
    name = "evidence"
    summary = "Store the capture in the evidence bucket (SSE-KMS)"
    kinds = ("instance", "access_key", "user", "role", "bucket", "function", "db_instance")
    # kms:GenerateDataKey is what S3 asks of KMS on the caller's behalf for SSE-KMS uploads;
    # the rest make the per-incident key (CreateKey with Tags needs kms:TagResource).
    permissions = (
        "s3:PutObject",  # tagged at creation: s3:PutObjectTagging comes with custody's
        "kms:GenerateDataKey",
        "kms:DescribeKey",
        "kms:CreateKey",
        "kms:TagResource",
        "kms:CreateAlias",
        "kms:ScheduleKeyDeletion",
        # After a lost CreateKey answer or on a retry: find the key made before making another.
        "kms:ListKeys",
        "kms:ListResourceTags",
        # Chain of custody: Object Lock on the object and the manifest, the manifest read.
        *custody.PERMISSIONS,
    )
    # Only the target kind's own capture is ever in a plan.
    depends_on = (
        "capture",
        "capture_key",
        "capture_user",
        "capture_role",
        "capture_bucket",
        "capture_function",
        "capture_db",
    )

    def calls(
        self,
        target: Target,
        ctx: ActionContext,
        facts: Facts,
        results: dict[str, StepResult] | None = None,
    ) -> list[PlannedCall]:
        if not ctx.evidence_bucket:
            return []
        own = self._own_key(ctx)
        # The incident's key is known only once made: the export wires CreateKey's answer in.
        params = put_params(target, ctx, facts, key_id=INCIDENT_KEY_ARN if own else None)
        summary = {k: params[k] for k in ("Bucket", "Key", "ServerSideEncryption")}
        calls = []
        if own:
            alias = incident_key_alias(ctx)
            tags = creation_tags(incident_key=ctx.incident_key, finding_id=ctx.finding_id)
            calls.append(PlannedCall("kms", "DescribeKey", {"KeyId": alias}, mutating=False))
            calls.append(
                PlannedCall(
                    "kms",
                    "CreateKey",
                    {"Tags": f"incident-bot:incident={ctx.incident_key}"},
                    # As per_incident_key sends it.
                    sdk={
                        "Description": _key_description(ctx),
                        "KeyUsage": "ENCRYPT_DECRYPT",
                        "Tags": [{"TagKey": k, "TagValue": v} for k, v in tags.items()],
                    },
                )
            )
            calls.append(
                PlannedCall(
                    "kms",
                    "CreateAlias",
                    {"AliasName": alias},
                    sdk={"AliasName": alias, "TargetKeyId": INCIDENT_KEY_ID},
                )
            )
            summary["SSEKMSKeyId"] = f"{alias} (this incident's own key)"
        else:
            summary["SSEKMSKeyId"] = params.get("SSEKMSKeyId", "aws/s3 (default)")
        where = f"in {ctx.evidence_account()}"
        calls = [replace(c, note=where) for c in calls]
        lock = f"Object Lock {ctx.evidence_lock_mode} {ctx.evidence_retention_days} days"
        return [
            *calls,
            PlannedCall(
                "s3",
                "GetObjectLockConfiguration",
                {"Bucket": ctx.evidence_bucket},
                mutating=False,
                note=where,
            ),
            PlannedCall(
                "s3",
                "PutObject",
                {**summary, "ObjectLock": lock},
                note=where,
                # As sent: the capture is the body; the lock only where the bucket has it.
                sdk={
                    **params,
                    "Body": "<capture>",
                    "ChecksumAlgorithm": "SHA256",
                    "ObjectLockMode": ctx.evidence_lock_mode,
                    "ObjectLockRetainUntilDate": f"<now + {ctx.evidence_retention_days} days>",
                },
            ),
            PlannedCall(
                "s3",
                "PutObject",
                {
                    "Bucket": ctx.evidence_bucket,
                    "Key": custody.manifest_key(ctx.evidence_prefix, ctx.incident_key),
                },
                note=f"{where}: the object's SHA-256 added to the manifest",
                sdk=manifest_sdk(params, ctx),
            ),
        ]

    @staticmethod
    def _own_key(ctx: ActionContext) -> bool:
        return ctx.evidence_key_per_incident and not ctx.evidence_kms_key_id

    def apply(self, target: Target, ctx: ActionContext, state: RunState) -> StepResult:
        if not ctx.evidence_bucket:
            return self.nothing_to_do(ctx, "no evidence bucket configured")
        rec = self.recorder(ctx, state)
        facts = state.captured
        body = {k: v for k, v in facts.items() if k != "_blobs"}
        body.update(facts.get("_blobs") or {})
        data = json.dumps(body, sort_keys=True, default=str).encode()
        notes: list[str] = []
        with rec.guard():
            key_id = per_incident_key(ctx, target.region) if self._own_key(ctx) else None
            params = put_params(target, ctx, facts, key_id=key_id)
            s3 = ctx.evidence_client("s3", target.region)
            lock = custody.lock_for(s3, params["Bucket"], ctx)
            location = {"bucket": params["Bucket"], "key": params["Key"]}
            if ctx.forensic_account_id:
                location["account"] = ctx.forensic_account_id
            try:
                out = s3.put_object(Body=data, **params, **lock.params)
            except ClientError as exc:
                if error_code(exc) not in ("PreconditionFailed", "412"):
                    raise
                # Stored by an earlier attempt: hash what is there, not what we hold.
                out = s3.get_object(Bucket=params["Bucket"], Key=params["Key"])
                data = out["Body"].read()
                rec.evidence["already_stored"] = True
                notes.append("evidence object already stored")
            digest = custody.sha256_hex(data)
            locked = lock.record() if not rec.evidence.get("already_stored") else None
            if rec.evidence.get("already_stored") and out.get("ObjectLockMode"):
                locked = {
                    "mode": out["ObjectLockMode"],
                    "retain_until": str(out.get("ObjectLockRetainUntilDate")),
                }
            rec.evidence.update(
                location,
                version_id=out.get("VersionId"),
                etag=out.get("ETag"),
                sse=out.get("ServerSideEncryption"),
                kms_key_id=out.get("SSEKMSKeyId"),
                sha256=digest,
                size=len(data),
                object_lock=locked,
            )
            entry = {
                "key": params["Key"],
                "version_id": out.get("VersionId") or "null",
                "sha256": digest,
                "size": len(data),
                "stored_at": ctx.now().isoformat(),
                "object_lock": locked,
            }
            rec.evidence["manifest"] = custody.add_to_manifest(
                s3=s3,
                bucket=params["Bucket"],
                ctx=ctx,
                objects=[entry],
                lock=lock,
                kms_key_id=params.get("SSEKMSKeyId"),
            )
            # The lock first: the card shortens a long note, and "NOT LOCKED" must survive.
            if locked:
                notes.append(f"Object Lock {locked['mode']} until {locked['retain_until'][:10]}")
            else:
                rec.evidence["not_locked"] = lock.missing or "stored before Object Lock"
                notes.append(f"NOT LOCKED: {rec.evidence['not_locked']}")
            notes.append(f"SHA-256 {digest}")
            # Evidence is kept on rollback; changes stay empty on purpose.
        return rec.result(note="; ".join(notes) or None)
