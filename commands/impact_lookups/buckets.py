"""S3 bucket lookup: where the bucket lives, its exposure (Block Public Access, policy status),
versioning, Object Lock and default encryption; and its summary lines."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from commands.impact_lookups.reads import (
    MISSING,
    Clients,
    Reader,
    Unread,
    first_read,
    labelled,
    tag_dict,
)
from storage.facts import BucketImpact


def bucket_region(location: str | None) -> str:
    # GetBucketLocation answers null for us-east-1 and "EU" for the oldest eu-west-1 buckets.
    if not location:
        return "us-east-1"
    return "eu-west-1" if location == "EU" else location


def bucket_impact(
    *, client: Clients, name: str, region: str, tag_keys: Mapping[str, str], notes: list[str]
) -> dict[str, Any]:
    read = Reader(notes)
    what = f"S3 bucket {name}"
    s3 = client("s3", region)
    location = first_read(
        notes, what, lambda: s3.get_bucket_location(Bucket=name), {"NoSuchBucket"}
    )
    if location is MISSING:
        return {}
    if isinstance(location, Unread):
        where = region  # the other reads may still be allowed; try the finding's region
    else:
        where = bucket_region(location.get("LocationConstraint"))
        if where != region:
            s3 = client("s3", where)
    out: dict[str, Any] = {}
    bucket: BucketImpact = {"region": where}

    tagging = read(f"{what} tags", lambda: s3.get_bucket_tagging(Bucket=name), {"NoSuchTagSet": {}})
    if not isinstance(tagging, Unread):
        out["tags"] = labelled(tag_dict(tagging.get("TagSet")), tag_keys)
    block = read(
        f"{what} Block Public Access",
        lambda: s3.get_public_access_block(Bucket=name),
        {"NoSuchPublicAccessBlockConfiguration": None},
    )
    if not isinstance(block, Unread):
        bucket["public_access_block"] = (
            {k: bool(v) for k, v in block["PublicAccessBlockConfiguration"].items()}
            if block
            else None
        )
    status = read(
        f"{what} policy status",
        lambda: s3.get_bucket_policy_status(Bucket=name),
        {"NoSuchBucketPolicy": None},
    )
    if not isinstance(status, Unread):
        if status is None:
            bucket["policy"] = "none"
        else:
            public = (status.get("PolicyStatus") or {}).get("IsPublic")
            bucket["policy"] = "public" if public else "not public"
    versioning = read(f"{what} versioning", lambda: s3.get_bucket_versioning(Bucket=name))
    if not isinstance(versioning, Unread):
        bucket["versioning"] = versioning.get("Status") or "Off"
        bucket["mfa_delete"] = versioning.get("MFADelete")
    lock = read(
        f"{what} Object Lock",
        lambda: s3.get_object_lock_configuration(Bucket=name),
        {"ObjectLockConfigurationNotFoundError": {}},
    )
    if not isinstance(lock, Unread):
        config = lock.get("ObjectLockConfiguration") or {}
        retention = (config.get("Rule") or {}).get("DefaultRetention") or {}
        bucket["object_lock"] = {
            "enabled": config.get("ObjectLockEnabled") == "Enabled",
            # A rule sets Days or Years, not both (some answers carry the other as 0).
            **{k.lower(): v for k, v in retention.items() if k in ("Mode", "Days", "Years") and v},
        }
    encryption = read(
        f"{what} default encryption",
        lambda: s3.get_bucket_encryption(Bucket=name),
        {"ServerSideEncryptionConfigurationNotFoundError": None},
    )
    if not isinstance(encryption, Unread):
        rules = ((encryption or {}).get("ServerSideEncryptionConfiguration") or {}).get("Rules")
        if rules:
            default = rules[0].get("ApplyServerSideEncryptionByDefault") or {}
            bucket["encryption"] = {
                "algorithm": default.get("SSEAlgorithm"),
                "kms_key": default.get("KMSMasterKeyID"),
                "bucket_key": rules[0].get("BucketKeyEnabled"),
            }
        else:
            bucket["encryption"] = None
    out["bucket"] = bucket
    return out


def bucket_lines(b: Mapping[str, Any]) -> list[str]:
    lines = []
    exposure = []
    if "policy" in b:
        exposure.append(
            {"public": "bucket policy PUBLIC", "none": "no bucket policy"}.get(
                b["policy"], "bucket policy not public"
            )
        )
    if "public_access_block" in b:
        block = b["public_access_block"]
        if block is None:
            exposure.append("Block Public Access not set on the bucket")
        else:
            off = [k for k, v in block.items() if not v]
            exposure.append(
                "Block Public Access all on"
                if not off
                else "Block Public Access off: " + ", ".join(off)
            )
    if exposure:
        lines.append("; ".join(exposure))
    facts = [f"S3 bucket in {b.get('region', '?')}"]
    if "versioning" in b:
        facts.append(f"versioning {b['versioning']}")
    lock = b.get("object_lock")
    if lock is not None and not lock.get("enabled"):
        facts.append("Object Lock off")
    elif lock is not None:
        retention = ", ".join(
            f"{lock[k]} {k}" if k != "mode" else str(lock[k])
            for k in ("mode", "days", "years")
            if lock.get(k) is not None
        )
        facts.append("Object Lock on" + (f" ({retention})" if retention else ""))
    if "encryption" in b:
        enc = b["encryption"]
        facts.append(
            "no default encryption"
            if not enc
            else f"default encryption {enc.get('algorithm')}"
            + (f" ({enc['kms_key']})" if enc.get("kms_key") else "")
        )
    lines.append(", ".join(facts))
    return lines
