"""Record GuardDuty findings and turn them into incidents.

Every finding is recorded, upserted by its GuardDuty id. What happens next:

- a repeat (same id, larger count or later updatedAt) updates count and last-seen, and marks
  the incident's card stale; a byte-for-byte redelivery changes nothing;
- an archived finding, or one below `guardduty.min_severity`, is recorded and opens nothing;
- the first finding for a resource opens an incident with the severity of its band;
- a new finding for a resource that has an open incident joins that incident (and raises its
  severity when the finding's band is higher).

The caller owns the transaction: `record_findings` runs inside one `Database.session()`, so a
batch is stored whole or not at all. Timeline events are appended per incident at the end of
the batch, one per finding, so a storm of repeats costs one timeline event per finding per
batch, not one per delivery.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from commands.findings.errors import BadFinding
from commands.findings.normalize import NormalizedFinding, normalize_finding, severity_band
from commands.incidents import find_open_for_resource, open_incident, set_severity
from storage.models import SEVERITIES, Finding, Incident, utcnow
from storage.timeline import NewEvent, append_events

log = logging.getLogger(__name__)

ACTOR = "guardduty"
FACT_FINDINGS = 10  # findings listed on a card
_NETWORK_FACTS = (
    "public_ips",
    "remote_ip",
    "remote_domain",
    "user_name",
    "bucket_names",
    "cluster",
)
Outcome = Literal["opened", "joined", "repeat", "recorded", "unchanged"]


@dataclass(frozen=True, slots=True)
class Ingested:
    """What became of one finding; bot/ renders cards from it."""

    finding_id: str
    outcome: Outcome
    resource_id: str | None
    incident_id: int | None = None
    incident_key: str | None = None

    @property
    def card_stale(self) -> bool:
        """The incident's card no longer shows the truth (a new card, a join or a repeat)."""
        return self.incident_id is not None and self.outcome in ("opened", "joined", "repeat")


def eligible(finding: NormalizedFinding, *, min_severity: float) -> bool:
    """Whether a finding may open or join an incident."""
    return not finding.archived and finding.severity >= min_severity


def record_findings(
    *,
    session: Session,
    findings: Sequence[NormalizedFinding],
    min_severity: float,
    channel_id: str | None = None,
    now: dt.datetime | None = None,
) -> list[Ingested]:
    """Record a batch of findings in the caller's transaction; see the module docstring."""
    received = now or utcnow()
    _lock_keys(session, findings)
    pending: dict[int, tuple[Incident, dict[str, NewEvent]]] = {}
    results: list[Ingested] = []
    for finding in findings:
        result = _record_one(
            session,
            finding,
            min_severity=min_severity,
            channel_id=channel_id,
            received=received,
            pending=pending,
        )
        results.append(result)
    for incident, events in pending.values():
        append_events(session=session, incident=incident, events=list(events.values()))
    batch = {f.id: f for f in findings}
    touched = {r.incident_id for r in results if r.card_stale}
    for incident_id in touched:
        incident = session.get(Incident, incident_id)
        if incident is not None:
            refresh_finding_facts(session=session, incident=incident, batch=batch)
    return results


def refresh_finding_facts(
    *, session: Session, incident: Incident, batch: dict[str, NormalizedFinding] | None = None
) -> None:
    """Summarise the incident's findings into `facts["guardduty"]`, which its card shows.

    The card is rendered from the incident alone, so the facts carry what it needs: the
    most severe (then latest) findings, the distinct count and the total of their counts.
    """
    rows = session.scalars(
        select(Finding)
        .where(Finding.incident_id == incident.id)
        .order_by(Finding.severity.desc(), Finding.last_seen.desc(), Finding.id)
        .limit(FACT_FINDINGS)
    ).all()
    distinct, occurrences = session.execute(
        select(func.count(), func.coalesce(func.sum(Finding.count), 0)).where(
            Finding.incident_id == incident.id
        )
    ).one()
    previous = {
        fact.get("id"): fact
        for fact in ((incident.facts or {}).get("guardduty") or {}).get("findings", [])
    }
    summary = {
        "distinct": int(distinct),
        "occurrences": int(occurrences),
        "findings": [_fact(row, (batch or {}).get(row.finding_id), previous) for row in rows],
    }
    incident.facts = {**(incident.facts or {}), "guardduty": summary}


def _fact(
    row: Finding, finding: NormalizedFinding | None, previous: dict[Any, dict[str, Any]]
) -> dict[str, Any]:
    """What a card line needs from one finding (JSON-safe).

    The row holds the merged counters; the network facts come from this batch's normalised
    finding, else from the previous summary, and only as a last resort from re-reading raw.
    """
    fact: dict[str, Any] = {
        "id": row.finding_id,
        "type": row.type,
        "title": row.title,
        "severity": row.severity,
        "band": severity_band(row.severity),
        "count": row.count,
        "first_seen": row.first_seen.isoformat() if row.first_seen else None,
        "last_seen": row.last_seen.isoformat() if row.last_seen else None,
        "account_id": row.account_id,
        "region": row.region,
        "resource_type": row.resource_type,
        "resource_id": row.resource_id,
        "archived": row.archived,
        "sample": row.sample,
    }
    if finding is None and row.finding_id in previous:
        old = previous[row.finding_id]
        fact.update({k: old.get(k) for k in _NETWORK_FACTS})
        return fact
    if finding is None:
        finding = _normalized_or_none(row.raw or {}, row.region)
    if finding is not None:
        fact.update(
            public_ips=list(finding.public_ips),
            remote_ip=finding.remote_ip,
            remote_domain=finding.remote_domain,
            user_name=finding.user_name,
            bucket_names=list(finding.bucket_names),
            cluster=finding.cluster,
        )
    return fact


def _normalized_or_none(raw: dict[str, Any], region: str | None) -> NormalizedFinding | None:
    try:
        return normalize_finding(raw, region=region)
    except BadFinding:
        return None


def _record_one(
    session: Session,
    finding: NormalizedFinding,
    *,
    min_severity: float,
    channel_id: str | None,
    received: dt.datetime,
    pending: dict[int, tuple[Incident, dict[str, NewEvent]]],
) -> Ingested:
    row = session.scalars(select(Finding).where(Finding.finding_id == finding.id)).first()
    if row is None:
        row = _new_row(finding, received)
        session.add(row)
        session.flush()
        if not eligible(finding, min_severity=min_severity):
            log.debug("recorded finding %s (archived or below min severity)", finding.id)
            return Ingested(finding.id, "recorded", finding.resource_id)
        return _attach(session, row, finding, channel_id=channel_id, pending=pending)

    if not _merge(row, finding):
        return _linked(row, "unchanged", session)
    if row.incident_id is not None:
        incident = session.get(Incident, row.incident_id)
        assert incident is not None
        _queue(
            pending,
            incident,
            f"repeat:{finding.id}",
            NewEvent(
                ACTOR,
                "finding.repeat",
                f"GuardDuty finding {finding.type} seen again: count {row.count}"
                + (f", last seen {row.last_seen:%Y-%m-%d %H:%M:%S} UTC" if row.last_seen else ""),
                {"finding_id": finding.id, "count": row.count, "severity": row.severity},
            ),
        )
        return Ingested(finding.id, "repeat", row.resource_id, incident.id, incident.key)
    if eligible(finding, min_severity=min_severity) and not row.archived:
        # Recorded earlier below the bar (or archived) and now above it: act on it now.
        return _attach(session, row, finding, channel_id=channel_id, pending=pending)
    return Ingested(finding.id, "recorded", row.resource_id)


def _new_row(finding: NormalizedFinding, received: dt.datetime) -> Finding:
    return Finding(
        finding_id=finding.id,
        type=finding.type,
        title=finding.title,
        severity=finding.severity,
        account_id=finding.account_id,
        region=finding.region,
        resource_type=finding.resource_type,
        resource_id=finding.resource_id,
        first_seen=finding.first_seen,
        last_seen=finding.last_seen,
        updated_at=finding.updated_at,
        received_at=received,
        count=finding.count,
        archived=finding.archived,
        sample=finding.sample,
        raw=dict(finding.raw),
    )


def _merge(row: Finding, finding: NormalizedFinding) -> bool:
    """Fold a repeat into the stored row without going backwards; True when anything changed."""
    changed = False
    if finding.count > row.count:
        row.count = finding.count
        changed = True
    if finding.last_seen and (row.last_seen is None or finding.last_seen > row.last_seen):
        row.last_seen = finding.last_seen
        changed = True
    newer = finding.updated_at is not None and (
        row.updated_at is None or finding.updated_at > row.updated_at
    )
    if newer:
        row.updated_at = finding.updated_at
        row.severity = finding.severity
        row.archived = finding.archived
        row.title = finding.title
        row.raw = dict(finding.raw)
        changed = True
    return changed


def _attach(
    session: Session,
    row: Finding,
    finding: NormalizedFinding,
    *,
    channel_id: str | None,
    pending: dict[int, tuple[Incident, dict[str, NewEvent]]],
) -> Ingested:
    incident = (
        find_open_for_resource(session=session, resource_id=finding.resource_id)
        if finding.resource_id
        else None
    )
    if incident is None:
        incident = open_incident(
            session=session,
            title=("[SAMPLE] " if finding.sample else "") + finding.title,
            created_by=ACTOR,
            severity=finding.band,
            channel_id=channel_id,
            account_id=finding.account_id,
            region=finding.region,
            resource_id=finding.resource_id,
            resource_type=finding.resource_type,
            details={
                "finding_id": finding.id,
                "finding_type": finding.type,
                "finding_severity": finding.severity,
                "sample": finding.sample,
            },
        )
        incident.facts = {
            "source": "guardduty",
            "sample": finding.sample,
            "tags": dict(finding.tags),
        }
        row.incident_id = incident.id
        return Ingested(finding.id, "opened", finding.resource_id, incident.id, incident.key)

    row.incident_id = incident.id
    if SEVERITIES.index(finding.band) > SEVERITIES.index(incident.severity):
        set_severity(session=session, incident=incident, actor=ACTOR, severity=finding.band)
    _queue(
        pending,
        incident,
        f"joined:{finding.id}",
        NewEvent(
            ACTOR,
            "finding.joined",
            f"GuardDuty finding {finding.type} ({finding.band}, {finding.severity:g}) "
            f"on {finding.resource_id} joined {incident.key}",
            {"finding_id": finding.id, "finding_type": finding.type, "severity": finding.severity},
        ),
    )
    return Ingested(finding.id, "joined", finding.resource_id, incident.id, incident.key)


def _linked(row: Finding, outcome: Outcome, session: Session) -> Ingested:
    if row.incident_id is None:
        return Ingested(row.finding_id, outcome, row.resource_id)
    incident = session.get(Incident, row.incident_id)
    key = incident.key if incident else None
    return Ingested(row.finding_id, outcome, row.resource_id, row.incident_id, key)


def _queue(
    pending: dict[int, tuple[Incident, dict[str, NewEvent]]],
    incident: Incident,
    slot: str,
    event: NewEvent,
) -> None:
    """Keep the latest event per slot: repeats of one finding in a batch become one event."""
    _, events = pending.setdefault(incident.id, (incident, {}))
    events.pop(slot, None)
    events[slot] = event


def _lock_keys(session: Session, findings: Sequence[NormalizedFinding]) -> None:
    """PostgreSQL: serialise writers per finding id and per resource, in a fixed order.

    SQLite write transactions already hold the database lock (BEGIN IMMEDIATE). Sorting the
    keys means two batches never wait on each other in opposite orders.
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    names = {f"finding:{f.id}" for f in findings}
    names |= {f"resource:{f.resource_id}" for f in findings if f.resource_id}
    for key in sorted(_advisory_key(name) for name in names):
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def _advisory_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
