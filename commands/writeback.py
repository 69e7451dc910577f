"""Write-back on close: the incident's findings are archived in GuardDuty
(`guardduty:ArchiveFindings`, when `guardduty.archive_on_close`) and resolved in Security Hub
(`securityhub:BatchUpdateFindings`, workflow status RESOLVED with a note naming the incident,
when `securityhub.enabled`).

Each AWS answer is recorded on the timeline as it was: what AWS accepted
(`findings.archived`, `securityhub.resolved`), and what it refused (`findings.archive_failed`,
`securityhub.unprocessed`). A finding only counts as archived after GuardDuty said so.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy import select

from containment.capabilities import Permissions
from containment.errors import error_code
from storage.db import Database
from storage.models import Finding, Incident
from storage.timeline import append_event

PERMISSIONS = Permissions(
    "writeback", "contain", ("guardduty:ArchiveFindings", "securityhub:BatchUpdateFindings")
)
ARCHIVE_BATCH = 50  # ArchiveFindings takes at most 50 finding ids
SECURITYHUB_BATCH = 100  # BatchUpdateFindings takes at most 100 identifiers
NOTE_MAX = 512  # Security Hub's note text limit
_GUARDDUTY_ARN = re.compile(
    r"^arn:(?P<partition>aws[a-z-]*):guardduty:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):"
    r"detector/(?P<detector>[A-Za-z0-9]+)/finding/(?P<finding>[A-Za-z0-9]+)$"
)

ClientFor = Callable[[str, str | None], Any]


@dataclass(frozen=True)
class FindingRef:
    finding_id: str  # as stored (GuardDuty's id, or an ASFF Id)
    region: str | None
    guardduty: tuple[str, str, str] | None  # (region, detector id, GuardDuty finding id)
    securityhub: tuple[str, str, str] | None  # (region, Id, ProductArn)
    archived: bool


@dataclass
class WriteBack:
    archived: list[str] = field(default_factory=list)
    archive_failures: list[str] = field(default_factory=list)  # "region: Code"
    resolved: int = 0
    unprocessed: list[str] = field(default_factory=list)  # "Id: ErrorCode"
    skipped: list[str] = field(default_factory=list)  # why a step did not run

    @property
    def anything(self) -> bool:
        return bool(self.archived or self.archive_failures or self.resolved or self.unprocessed)


def finding_ref(row: Finding) -> FindingRef:
    """Where a stored finding lives in GuardDuty and in Security Hub, from its raw payload."""
    raw: Mapping[str, Any] = row.raw or {}
    if "SchemaVersion" in raw and "ProductArn" in raw:  # arrived as ASFF, from Security Hub
        asff_id, product = str(raw.get("Id") or ""), str(raw.get("ProductArn") or "")
        region = str(raw.get("Region") or row.region or "") or None
        m = _GUARDDUTY_ARN.match(asff_id)
        gd = (m["region"], m["detector"], m["finding"]) if m else None
        sh = (region or (m["region"] if m else ""), asff_id, product) if asff_id else None
        return FindingRef(row.finding_id, region, gd, sh, bool(row.archived))
    arn = str(raw.get("arn") or raw.get("Arn") or "")
    m = _GUARDDUTY_ARN.match(arn)
    if not m:
        return FindingRef(row.finding_id, row.region, None, None, bool(row.archived))
    product = f"arn:{m['partition']}:securityhub:{m['region']}::product/aws/guardduty"
    return FindingRef(
        row.finding_id,
        m["region"],
        (m["region"], m["detector"], m["finding"]),
        (m["region"], arn, product),  # GuardDuty's findings reach Security Hub under their ARN
        bool(row.archived),
    )


def incident_findings(database: Database, key: str) -> tuple[int, list[FindingRef]]:
    number = int(key.split("-", 1)[1])
    with database.read_session() as session:
        incident = session.scalars(select(Incident).where(Incident.number == number)).one()
        rows = session.scalars(
            select(Finding).where(Finding.incident_id == incident.id).order_by(Finding.id)
        ).all()
        return incident.id, [finding_ref(r) for r in rows]


def write_back(
    *,
    database: Database,
    key: str,
    summary: str,
    archive: bool,
    securityhub: bool,
    client_for: ClientFor,
) -> WriteBack:
    """Archive and resolve the closed incident `key`'s findings; every outcome on its timeline."""
    result = WriteBack()
    if not (archive or securityhub):
        return result
    _, refs = incident_findings(database, key)
    if archive:
        _archive(database, key, refs, client_for, result)
    if securityhub:
        _resolve(database, key, summary, refs, client_for, result)
    return result


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _archive(
    database: Database, key: str, refs: list[FindingRef], client_for: ClientFor, out: WriteBack
) -> None:
    groups: dict[tuple[str, str], list[FindingRef]] = {}
    for ref in refs:
        if ref.guardduty is not None and not ref.archived:
            region, detector, _ = ref.guardduty
            groups.setdefault((region, detector), []).append(ref)
    if not groups:
        out.skipped.append("no GuardDuty findings to archive")
    for (region, detector), members in groups.items():
        for batch in _chunks(members, ARCHIVE_BATCH):
            ids = [r.guardduty[2] for r in batch if r.guardduty]
            try:
                client_for("guardduty", region).archive_findings(
                    DetectorId=detector, FindingIds=ids
                )
            except (ClientError, BotoCoreError) as exc:
                code = error_code(exc) if isinstance(exc, ClientError) else type(exc).__name__
                out.archive_failures.append(f"{region}: {code}")
                _record(
                    database,
                    key,
                    "findings.archive_failed",
                    f"GuardDuty did not archive {len(ids)} finding(s) in {region}: {code}",
                    {"region": region, "detector": detector, "finding_ids": ids, "error": code},
                )
                continue
            out.archived.extend(r.finding_id for r in batch)
            with database.session() as session:
                for row in session.scalars(
                    select(Finding).where(Finding.finding_id.in_([r.finding_id for r in batch]))
                ):
                    row.archived = True
                _append(
                    session,
                    key,
                    "findings.archived",
                    f"Archived {len(ids)} GuardDuty finding(s) in {region} on close",
                    {"region": region, "detector": detector, "finding_ids": ids},
                )


def _resolve(
    database: Database,
    key: str,
    summary: str,
    refs: list[FindingRef],
    client_for: ClientFor,
    out: WriteBack,
) -> None:
    groups: dict[str, list[tuple[str, str]]] = {}
    for ref in refs:
        if ref.securityhub is not None and ref.securityhub[0]:
            region, finding_id, product = ref.securityhub
            groups.setdefault(region, []).append((finding_id, product))
    if not groups:
        out.skipped.append("no findings known to Security Hub")
    note = f"Resolved by incident-bot: {key} closed. {summary}"[:NOTE_MAX]
    for region, identifiers in groups.items():
        for batch in _chunks(identifiers, SECURITYHUB_BATCH):
            try:
                answer = client_for("securityhub", region).batch_update_findings(
                    FindingIdentifiers=[{"Id": i, "ProductArn": p} for i, p in batch],
                    Workflow={"Status": "RESOLVED"},
                    Note={"Text": note, "UpdatedBy": "incident-bot"},
                )
            except (ClientError, BotoCoreError) as exc:
                code = error_code(exc) if isinstance(exc, ClientError) else type(exc).__name__
                failed = [f"{i}: {code}" for i, _ in batch]
                out.unprocessed.extend(failed)
                _record(
                    database,
                    key,
                    "securityhub.unprocessed",
                    f"Security Hub did not resolve {len(batch)} finding(s) in {region}: {code}",
                    {"region": region, "findings": [i for i, _ in batch], "error": code},
                )
                continue
            done = answer.get("ProcessedFindings") or []
            refused = answer.get("UnprocessedFindings") or []
            out.resolved += len(done)
            if done:
                _record(
                    database,
                    key,
                    "securityhub.resolved",
                    f"Security Hub: {len(done)} finding(s) set to RESOLVED in {region} "
                    f"with a note naming {key}",
                    {"region": region, "findings": [f.get("Id") for f in done], "note": note},
                )
            if refused:
                lines = [
                    f"{(u.get('FindingIdentifier') or {}).get('Id')}: {u.get('ErrorCode')}"
                    for u in refused
                ]
                out.unprocessed.extend(lines)
                _record(
                    database,
                    key,
                    "securityhub.unprocessed",
                    f"Security Hub did not resolve {len(refused)} finding(s) in {region}: "
                    + "; ".join(lines[:3]),
                    {"region": region, "unprocessed": list(refused)},
                )


def _record(database: Database, key: str, kind: str, summary: str, details: Any) -> None:
    with database.session() as session:
        _append(session, key, kind, summary, details)


def _append(session: Any, key: str, kind: str, summary: str, details: Any) -> None:
    number = int(key.split("-", 1)[1])
    incident = session.scalars(select(Incident).where(Incident.number == number)).one()
    append_event(
        session=session,
        incident=incident,
        actor="system",
        kind=kind,
        summary=summary,
        details=details,
    )
