"""Chain of custody: what was collected, its hash, and a per-incident manifest beside it.

Every evidence object's SHA-256, and every snapshot copy's source (snapshot id, volume id,
start time), is recorded twice: on the timeline (the step's evidence) and in
`<prefix><incident>/manifest.json` in the evidence bucket, so `incident-bot verify --evidence`
can re-read the objects and compare. Objects are written under S3 Object Lock when the
bucket has it enabled; `lock_for` says so, or why not, so the caller can tell the team.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from containment.context import ActionContext
from containment.errors import error_code
from containment.tags import INCIDENT_TAG

MANIFEST_NAME = "manifest.json"
# What writing evidence and its manifest under Object Lock asks of S3 (and verify of reads).
PERMISSIONS = (
    "s3:GetBucketObjectLockConfiguration",
    "s3:PutObjectRetention",
    "s3:GetObject",
    "s3:GetObjectVersion",
    "s3:PutObjectTagging",  # the manifest carries the incident tag, so the wipe finds it
)
# A conditional write that lost to another writer (S3 answers 409 when both were in flight).
_LOST_RACE = ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")
MANIFEST_ATTEMPTS = 8
_NO_LOCK = ("ObjectLockConfigurationNotFoundError", "ObjectLockConfigurationNotFound")


# In a plan's exported manifest write: the machine puts the capture's SHA-256 here.
CAPTURE_SHA256 = "<capture sha256>"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest_key(prefix: str, incident_key: str) -> str:
    return f"{prefix}{incident_key}/{MANIFEST_NAME}"


@dataclass(frozen=True)
class Lock:
    """The Object Lock a put carries (`params`), or why there is none (`missing`)."""

    params: dict[str, Any]
    missing: str | None = None

    def record(self) -> dict[str, Any] | None:
        if not self.params:
            return None
        return {
            "mode": self.params["ObjectLockMode"],
            "retain_until": self.params["ObjectLockRetainUntilDate"].isoformat(),
        }


def lock_for(s3: Any, bucket: str, ctx: ActionContext) -> Lock:
    """Object Lock parameters for a put into `bucket`, when the bucket supports them."""
    try:
        conf = s3.get_object_lock_configuration(Bucket=bucket).get("ObjectLockConfiguration")
    except ClientError as exc:
        if error_code(exc) not in _NO_LOCK:
            raise
        conf = None
    if not conf or conf.get("ObjectLockEnabled") != "Enabled":
        return Lock({}, f"bucket {bucket} has no Object Lock, so the evidence is not immutable")
    until = ctx.now() + dt.timedelta(days=ctx.evidence_retention_days)
    return Lock(
        {
            "ObjectLockMode": ctx.evidence_lock_mode,
            "ObjectLockRetainUntilDate": until,
            "ChecksumAlgorithm": "SHA256",  # Object Lock puts need an integrity checksum
        }
    )


def read_manifest(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    return _read_manifest(s3, bucket, key)[0]


def _read_manifest(s3: Any, bucket: str, key: str) -> tuple[dict[str, Any] | None, str | None]:
    """The manifest and its ETag (the version a conditional write must replace), or
    (None, None) when there is none yet."""
    try:
        out = s3.get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if error_code(exc) in ("NoSuchKey", "404"):
            return None, None
        raise
    data = json.loads(out["Body"].read())
    return (data if isinstance(data, dict) else None), out.get("ETag")


def add_to_manifest(
    *,
    s3: Any,
    bucket: str,
    ctx: ActionContext,
    objects: Sequence[dict[str, Any]] = (),
    snapshots: Sequence[dict[str, Any]] = (),
    lock: Lock | None = None,
    kms_key_id: str | None = None,
) -> str:
    """Merge entries into the incident's manifest and write it as a new version.

    Entries are keyed (object key + version, or the copy's snapshot id), so a retried step
    adds nothing twice. Two writers at once (two evidence steps, a copy and a capture) must
    not drop each other's entries: the write is conditional on the version read (If-Match
    its ETag, or If-None-Match * for the first), and a writer that lost the race reads the
    other's manifest and merges again. Returns the manifest's key."""
    key = manifest_key(ctx.evidence_prefix, ctx.incident_key)
    for _ in range(MANIFEST_ATTEMPTS):
        found, etag = _read_manifest(s3, bucket, key)
        found = found or {}
        manifest: dict[str, Any] = {
            "incident": ctx.incident_key,
            "objects": list(found.get("objects") or []),
            "snapshots": list(found.get("snapshots") or []),
        }
        seen_objects = {(o.get("key"), o.get("version_id")) for o in manifest["objects"]}
        seen_snaps = {s.get("copy_id") or s.get("snapshot_id") for s in manifest["snapshots"]}
        new_objects = [
            e for e in objects if (e.get("key"), e.get("version_id")) not in seen_objects
        ]
        new_snaps = [
            e for e in snapshots if (e.get("copy_id") or e.get("snapshot_id")) not in seen_snaps
        ]
        if found and not new_objects and not new_snaps:
            return key  # a retry: everything is already listed
        manifest["objects"] += new_objects
        manifest["snapshots"] += new_snaps
        manifest["updated_at"] = ctx.now().isoformat()
        lock = lock or lock_for(s3, bucket, ctx)
        condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
        try:
            s3.put_object(
                Bucket=bucket,
                Key=key,
                Body=json.dumps(manifest, sort_keys=True, indent=1).encode(),
                ContentType="application/json",
                Tagging=f"{INCIDENT_TAG}={ctx.incident_key}",
                # Like the evidence it lists: SSE-KMS (the policy allows nothing else under
                # incidents/).
                ServerSideEncryption="aws:kms",
                **({"SSEKMSKeyId": kms_key_id} if kms_key_id else {}),
                **lock.params,
                **condition,
            )
        except ClientError as exc:
            if error_code(exc) not in _LOST_RACE:
                raise
            continue  # another writer's manifest landed first: merge into it
        return key
    raise RuntimeError(
        f"the manifest s3://{bucket}/{key} changed under every one of {MANIFEST_ATTEMPTS} "
        "writes; the entries are on the timeline, write it again with a retry"
    )


def check_objects(s3: Any, bucket: str, manifest: dict[str, Any]) -> tuple[int, list[str]]:
    """Re-read every object the manifest lists; (objects checked, one line per mismatch)."""
    problems: list[str] = []
    checked = 0
    for entry in manifest.get("objects") or []:
        name = entry.get("key")
        params: dict[str, Any] = {"Bucket": bucket, "Key": name}
        if entry.get("version_id") and entry["version_id"] != "null":
            params["VersionId"] = entry["version_id"]
        try:
            body = s3.get_object(**params)["Body"].read()
        except ClientError as exc:
            problems.append(f"s3://{bucket}/{name}: could not be read back ({error_code(exc)})")
            continue
        checked += 1
        digest = sha256_hex(body)
        if digest != entry.get("sha256"):
            problems.append(
                f"s3://{bucket}/{name}: SHA-256 {digest[:16]}… differs from the recorded "
                f"{str(entry.get('sha256'))[:16]}…: the object was changed"
            )
    return checked, problems
