"""Witnesses of the timeline outside the database: anchors of each incident's chain head.

A keyed chain (storage.timeline) stops whoever holds the database from rewriting events, but
not from rolling the whole incident back to an older copy, or deleting it. So at milestones
(opened, contained, resolved, closed) and hourly while an incident is active and its head has
moved, the head digest is written where the database holder cannot take it back: the
incident's Slack thread, and an S3 object under Object Lock (compliance mode) when an evidence
bucket is configured. `incident-bot verify` reads them back and compares.

This module decides what is due and what an anchor says; bot/ posts it to Slack. Knows nothing
of Slack; the S3 calls take a boto3 client.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from containment.capabilities import Permissions
from storage.models import Counter, Incident
from storage.timeline import GENESIS_HASH, ChainReport, iso

# Anchors written to the evidence bucket under Object Lock. Under contain: triage is
# read-only, so a triage-only bot anchors in Slack alone.
PERMISSIONS = Permissions("anchors", "contain", ("s3:PutObject", "s3:PutObjectRetention"))

# Incident status -> the milestone its first anchor in that status records.
MILESTONES = {
    "open": "opened",
    "contained": "contained",
    "resolved": "resolved",
    "closed": "closed",
}
ACTIVE = ("open", "contained")
HOURLY = dt.timedelta(hours=1)
HOURLY_MILESTONE = "hourly"
UNKEYED = "unkeyed"  # what an anchor says for a chain of plain SHA-256
S3_PREFIX = "incident-bot/timeline-anchors"
_FACT = "timeline_anchor"  # incident.facts: the last anchor (status, count, at), to pace them


@dataclass(frozen=True)
class Anchor:
    """What one witness says: incident N had `count` events ending in `head`, keyed so."""

    incident_number: int
    count: int
    head: str
    key_id: str  # a TimelineKey id, or UNKEYED
    milestone: str
    at: dt.datetime

    @property
    def incident_key(self) -> str:
        return f"INC-{self.incident_number}"

    def to_json(self) -> str:
        return json.dumps(
            {
                "incident": self.incident_key,
                "count": self.count,
                "head": self.head,
                "key": self.key_id,
                "milestone": self.milestone,
                "at": iso(self.at),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Anchor:
        data = json.loads(text)
        return cls(
            incident_number=int(str(data["incident"]).removeprefix("INC-")),
            count=int(data["count"]),
            head=str(data["head"]),
            key_id=str(data["key"]),
            milestone=str(data["milestone"]),
            at=dt.datetime.fromisoformat(str(data["at"]).replace("Z", "+00:00")),
        )


@dataclass(frozen=True)
class DueAnchor:
    """An anchor to post now, and where the incident's Slack thread is (None: no thread)."""

    incident_id: int
    anchor: Anchor
    status: str  # the incident's status this anchor marks
    channel_id: str | None
    thread_ts: str | None


def anchor_of(incident: Incident, *, milestone: str, now: dt.datetime) -> Anchor:
    return Anchor(
        incident_number=incident.number,
        count=incident.timeline_count or 0,
        head=incident.timeline_head or GENESIS_HASH,
        key_id=incident.timeline_key_id or UNKEYED,
        milestone=milestone,
        at=now,
    )


def milestone_due(incident: Incident, *, now: dt.datetime) -> str | None:
    """Which anchor, if any, this incident is due: a new status, or an hour of new events."""
    last = (incident.facts or {}).get(_FACT)
    status = incident.status
    if status not in MILESTONES:
        return None
    if not last or last.get("status") != status:
        return MILESTONES[status]
    if status in ACTIVE and last.get("count") != (incident.timeline_count or 0):
        at = dt.datetime.fromisoformat(str(last.get("at")).replace("Z", "+00:00"))
        if now - at >= HOURLY:
            return HOURLY_MILESTONE
    return None


def due_anchors(*, session: Session, now: dt.datetime) -> list[DueAnchor]:
    """Anchors due now: active incidents, and ones that left the active states lately."""
    recent = now - dt.timedelta(days=1)
    incidents = session.scalars(
        select(Incident)
        .where(
            or_(
                Incident.status.in_(ACTIVE),
                Incident.resolved_at >= recent,
                Incident.closed_at >= recent,
            )
        )
        .order_by(Incident.number)
    )
    due = []
    for incident in incidents:
        milestone = milestone_due(incident, now=now)
        if milestone is not None:
            due.append(
                DueAnchor(
                    incident.id,
                    anchor_of(incident, milestone=milestone, now=now),
                    incident.status,
                    incident.channel_id,
                    incident.thread_ts,
                )
            )
    return due


def record_anchored(*, session: Session, due: DueAnchor, witnesses: Sequence[str]) -> None:
    """Remember the last anchor so the next one is paced; `witnesses` says where it went."""
    incident = session.get(Incident, due.incident_id)
    if incident is None:
        return
    anchor = due.anchor
    facts = dict(incident.facts or {})
    facts[_FACT] = {
        "status": due.status,
        "count": anchor.count,
        "at": iso(anchor.at),
        "witnesses": list(witnesses),
    }
    incident.facts = facts


def issued_incidents(*, session: Session) -> int:
    """How many incident numbers were ever issued (numbers are gapless; rollbacks return them)."""
    counter = session.get(Counter, "incident")
    return counter.value if counter is not None else 0


# -- S3 Object Lock --------------------------------------------------------------------------


def s3_key(anchor: Anchor) -> str:
    stamp = anchor.at.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{S3_PREFIX}/{anchor.incident_key}/{stamp}-{anchor.count:08d}-{anchor.milestone}.json"


def write_s3_anchor(*, s3: Any, bucket: str, anchor: Anchor, retain_days: int) -> str:
    """Write the anchor as an object locked in compliance mode; returns its s3:// URI.

    Compliance mode: nobody, the account root included, can delete or overwrite the version
    before the retention date. The bucket must have Object Lock enabled.
    """
    key = s3_key(anchor)
    s3.put_object(
        Bucket=bucket,
        Key=key,
        Body=anchor.to_json().encode(),
        ContentType="application/json",
        ServerSideEncryption="AES256",  # not the incident's KMS key: a wipe shreds that
        ObjectLockMode="COMPLIANCE",
        ObjectLockRetainUntilDate=anchor.at + dt.timedelta(days=retain_days),
        ChecksumAlgorithm="SHA256",  # Object Lock puts need an integrity checksum
    )
    return f"s3://{bucket}/{key}"


@dataclass(frozen=True)
class S3Anchors:
    anchors: list[Anchor]
    unlocked: list[str]  # keys of anchors with no Object Lock retention (weaker witnesses)


def read_s3_anchors(*, s3: Any, bucket: str, incident_number: int) -> S3Anchors:
    prefix = f"{S3_PREFIX}/INC-{incident_number}/"
    anchors: list[Anchor] = []
    unlocked: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            got = s3.get_object(Bucket=bucket, Key=obj["Key"])
            anchors.append(Anchor.from_json(got["Body"].read()))
            if got.get("ObjectLockMode") != "COMPLIANCE":
                unlocked.append(obj["Key"])
    return S3Anchors(sorted(anchors, key=lambda a: (a.at, a.count)), unlocked)


# -- checking --------------------------------------------------------------------------------

_HEX64 = re.compile(r"[0-9a-f]{64}")


def check_anchors(
    *, source: str, anchors: Iterable[Anchor], incident: Incident | None, chain: ChainReport | None
) -> list[str]:
    """Every disagreement between `source`'s anchors and the database, oldest anchor first.

    `chain` is verify_chain's report on the incident (its hashes, oldest first).
    """
    problems: list[str] = []
    for a in anchors:
        where = f"the {source} anchor of {iso(a.at)} ({a.milestone})"
        if incident is None:
            problems.append(
                f"{a.incident_key} is missing from the database, but {where} witnessed it "
                f"with {a.count} event(s): the incident was deleted"
            )
            continue
        keyed_as = incident.timeline_key_id or UNKEYED
        if a.key_id != keyed_as:
            problems.append(
                f"{where} says the chain was keyed with {a.key_id}, the database says "
                f"{keyed_as}: the chain was re-keyed or recomputed"
            )
            continue
        hashes = chain.hashes if chain is not None else ()
        if a.count > len(hashes) and chain is not None and chain.read_all:
            problems.append(
                f"{where} witnessed {a.count} event(s), the database has {len(hashes)}: "
                "events were removed"
            )
        elif 0 < a.count <= len(hashes) and hashes[a.count - 1] != a.head:
            problems.append(
                f"event #{a.count} does not match the head {where} witnessed: "
                "the timeline up to it was rewritten"
            )
        elif (a.count == 0 and a.head != GENESIS_HASH) or not _HEX64.fullmatch(a.head):
            problems.append(f"{where} is malformed (head {a.head[:16]}…)")
    return problems
