"""Record GuardDuty findings and turn them into incidents.

Every finding is recorded, upserted by its GuardDuty id. What happens next:

- a repeat (same id, larger count or later updatedAt) updates count and last-seen, and marks
  the incident's card stale; a byte-for-byte redelivery changes nothing;
- an archived finding, or one below `guardduty.min_severity`, is recorded and opens nothing;
- the first finding for a resource opens an incident with the severity of its band;
- a new finding for a resource that has an open incident joins that incident (and raises its
  severity when the finding's band is higher).

The caller owns the transaction: `record_findings` runs inside one `Database.session()`, so a
batch is stored whole or not at all.

Repeats are the bulk of an alert storm, so they take a lean path: the stored counters are
read for the whole batch in one query and written back with one executemany UPDATE, without
building ORM objects. Their effect on the incident (the card's facts and a `finding.repeat`
timeline event summarising which counts grew) is applied by `sync_incident`: at the end of
the batch, or, with `defer_repeats=True`, later by whoever renders the card (the bot does it
right before each card update, so a storm costs one such event per incident per card
update rather than one per delivery).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import bindparam, select, text
from sqlalchemy.orm import Session

from commands.findings.errors import BadFinding
from commands.findings.normalize import NormalizedFinding, normalize_finding, severity_band
from commands.incidents import change_severity, new_incident
from storage.db import clock_of
from storage.facts import GUARDDUTY, GuardDutyFacts, set_origin
from storage.models import SEVERITIES, Finding, Incident
from storage.timeline import NewEvent, adopt_tails, append_event, append_to_timelines

log = logging.getLogger(__name__)

ACTOR = "guardduty"
FACT_FINDINGS = 10  # findings listed on a card
COUNTED_FINDINGS = 500  # per-finding counts kept in the facts, to tell what grew
_NETWORK_FACTS = (
    "public_ips",
    "remote_ip",
    "remote_domain",
    "user_name",
    "bucket_names",
    "cluster",
    "resource_kind",
    "host_instance_id",
    "volume_ids",
    "object_keys",
    "process",
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
    severity: float = 0.0  # the finding's, as recorded (cards go most severe first)

    @property
    def card_stale(self) -> bool:
        """The incident's card no longer shows the truth (a new card, a join or a repeat)."""
        return self.incident_id is not None and self.outcome in ("opened", "joined", "repeat")


@dataclass(slots=True)
class _Stored:
    """The columns of a stored finding that merging needs, without an ORM object."""

    pk: int | None
    count: int
    last_seen: dt.datetime | None
    updated_at: dt.datetime | None
    severity: float
    archived: bool
    resource_id: str | None
    incident_id: int | None
    incident_number: int | None
    row: Finding | None = None  # set when this batch works on the ORM object instead
    incident: Incident | None = None  # the incident this batch attaches it to (ids come later)
    changed: dict[str, Any] | None = None  # columns to write back with the bulk UPDATE


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
    defer_repeats: bool = False,
) -> list[Ingested]:
    """Record a batch of findings in the caller's transaction; see the module docstring."""
    # Statements are few and explicit: nothing is flushed until the batch is decided (the
    # ORM would otherwise flush before every query, once per incident opened).
    with session.no_autoflush:
        return _record(
            session=session,
            findings=findings,
            min_severity=min_severity,
            channel_id=channel_id,
            received=now or clock_of(session).now(),
            defer_repeats=defer_repeats,
        )


def _record(
    *,
    session: Session,
    findings: Sequence[NormalizedFinding],
    min_severity: float,
    channel_id: str | None,
    received: dt.datetime,
    defer_repeats: bool,
) -> list[Ingested]:
    _lock_keys(session, findings)
    known = _stored(session, {f.id for f in findings})
    # Only findings that may open or join an incident need the resource's open incident; a
    # repeat of a finding already attached (a storm's bulk) needs none.
    open_for = _open_incidents(
        session,
        {
            f.resource_id
            for f in findings
            if f.resource_id
            and eligible(f, min_severity=min_severity)
            and (f.id not in known or known[f.id].incident_id is None)
        },
    )
    pending: dict[Incident, list[NewEvent]] = {}
    new_rows: list[Finding] = []
    outcomes: list[tuple[str, Outcome, _Stored]] = []
    for finding in findings:
        stored = known.get(finding.id)
        if stored is None:
            row = _new_row(finding, received)
            new_rows.append(row)
            stored = known[finding.id] = _Stored(
                None,
                row.count,
                row.last_seen,
                row.updated_at,
                row.severity,
                row.archived,
                row.resource_id,
                None,
                None,
                row=row,
            )
            if eligible(finding, min_severity=min_severity):
                outcome = _attach(session, stored, finding, channel_id, pending, open_for)
            else:
                log.debug("recorded finding %s (archived or below min severity)", finding.id)
                outcome = "recorded"
        elif not _merge(stored, finding):
            outcome = "unchanged"
        elif stored.incident_id is not None or stored.incident is not None:
            outcome = "repeat"
        elif eligible(finding, min_severity=min_severity) and not stored.archived:
            # Recorded earlier below the bar (or archived), now above it: act on it now.
            _promote(session, stored)
            outcome = _attach(session, stored, finding, channel_id, pending, open_for)
        else:
            outcome = "recorded"
        outcomes.append((finding.id, outcome, stored))
    if pending:  # inserts the incidents opened here, then every event, in one go
        append_to_timelines(session=session, batches=list(pending.items()))
    for stored in known.values():
        if stored.incident is not None:
            stored.incident_id, stored.incident_number = stored.incident.id, stored.incident.number
            assert stored.row is not None
            stored.row.incident_id = stored.incident_id
            stored.incident = None
    session.add_all(new_rows)
    _write_back(session, known.values())
    results = [_result(finding_id, outcome, stored) for finding_id, outcome, stored in outcomes]
    if not defer_repeats:
        batch = {f.id: f for f in findings}
        touched = {r.incident_id for r in results if r.incident_id is not None and r.card_stale}
        for incident_id in sorted(touched):
            incident = session.get(Incident, incident_id)
            if incident is not None:
                sync_incident(session=session, incident=incident, batch=batch)
    return results


def _result(finding_id: str, outcome: Outcome, stored: _Stored) -> Ingested:
    key = f"INC-{stored.incident_number}" if stored.incident_number is not None else None
    return Ingested(
        finding_id, outcome, stored.resource_id, stored.incident_id, key, stored.severity
    )


_FINDINGS = Finding.__table__
_INCIDENTS = Incident.__table__
_STORED = (
    select(
        _FINDINGS.c.finding_id,
        _FINDINGS.c.id,
        _FINDINGS.c.count,
        _FINDINGS.c.last_seen,
        _FINDINGS.c.updated_at,
        _FINDINGS.c.severity,
        _FINDINGS.c.archived,
        _FINDINGS.c.resource_id,
        _FINDINGS.c.incident_id,
        _INCIDENTS.c.number,
    )
    .select_from(_FINDINGS.outerjoin(_INCIDENTS, _INCIDENTS.c.id == _FINDINGS.c.incident_id))
    .where(_FINDINGS.c.finding_id.in_(bindparam("ids", expanding=True)))
)


def _stored(session: Session, ids: set[str]) -> dict[str, _Stored]:
    """The stored state of a batch's findings: Core queries, no ORM objects."""
    found: dict[str, _Stored] = {}
    ordered = sorted(ids)
    conn = session.connection()
    for start in range(0, len(ordered), 500):
        for finding_id, *columns in conn.execute(_STORED, {"ids": ordered[start : start + 500]}):
            found[finding_id] = _Stored(*columns)
    return found


def _open_incidents(session: Session, resource_ids: set[str]) -> dict[str, Incident]:
    """The open (or contained) incident of each resource, newest first, in a few queries.

    The same choice as commands.incidents.find_open_for_resource, for a whole batch.
    """
    found: dict[str, Incident] = {}
    ordered = sorted(resource_ids)
    for start in range(0, len(ordered), 500):
        rows = session.scalars(
            select(Incident)
            .where(
                Incident.resource_id.in_(ordered[start : start + 500]),
                Incident.status.in_(("open", "contained")),
            )
            .order_by(Incident.number.desc())
        )
        for incident in rows:
            if incident.resource_id is not None:
                found.setdefault(incident.resource_id, incident)
    adopt_tails(session=session, incidents=found.values())  # joins append without a tail read
    return found


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


def _merge(stored: _Stored, finding: NormalizedFinding) -> bool:
    """Fold a repeat in without going backwards; True when anything changed."""
    values: dict[str, Any] = {}
    if finding.count > stored.count:
        values["count"] = stored.count = finding.count
    if finding.last_seen and (stored.last_seen is None or finding.last_seen > stored.last_seen):
        values["last_seen"] = stored.last_seen = finding.last_seen
    if finding.updated_at is not None and (
        stored.updated_at is None or finding.updated_at > stored.updated_at
    ):
        values["updated_at"] = stored.updated_at = finding.updated_at
        if (finding.severity, finding.archived) != (stored.severity, stored.archived):
            # A material change: keep GuardDuty's latest version. A mere repeat only moves
            # the counters above (rewriting kilobytes of JSON per repeat is a storm's cost).
            values["severity"] = stored.severity = finding.severity
            values["archived"] = stored.archived = finding.archived
            values["title"] = finding.title
            values["raw"] = dict(finding.raw)
    if not values:
        return False
    if stored.row is not None:
        for column, value in values.items():
            setattr(stored.row, column, value)
    else:
        stored.changed = {**(stored.changed or {}), **values}
    return True


def _promote(session: Session, stored: _Stored) -> None:
    """Work on the ORM object from here on (the finding is about to join an incident)."""
    row = session.get(Finding, stored.pk)
    assert row is not None
    for column, value in (stored.changed or {}).items():
        setattr(row, column, value)
    stored.row, stored.changed = row, None


def _write_back(session: Session, stored: Any) -> None:
    """One Core executemany UPDATE per set of changed columns, for rows merged without ORM."""
    by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for item in stored:
        if item.row is None and item.changed:
            columns = tuple(sorted(item.changed))
            by_columns.setdefault(columns, []).append({"pk": item.pk, **item.changed})
            item.changed = None
    session.flush()  # ORM changes of this batch first (new rows), in order
    if not by_columns:
        return
    conn = session.connection()
    for columns, params in by_columns.items():
        conn.execute(_update_of(columns), params)


@functools.cache
def _update_of(columns: tuple[str, ...]) -> Any:
    """The executemany UPDATE for one set of changed columns (a handful of shapes, reused)."""
    return (
        _FINDINGS.update()
        .where(_FINDINGS.c.id == bindparam("pk"))
        .values({c: bindparam(c) for c in columns})
    )


def _attach(
    session: Session,
    stored: _Stored,
    finding: NormalizedFinding,
    channel_id: str | None,
    pending: dict[Incident, list[NewEvent]],
    open_for: dict[str, Incident],
) -> Outcome:
    """Open an incident for the finding, or join the resource's open one.

    The timeline events are queued in `pending`; the ids are filled in once the batch's new
    incidents are inserted.
    """
    incident = open_for.get(finding.resource_id) if finding.resource_id else None
    if incident is None:
        incident, opened = new_incident(
            session=session,
            title=("[SAMPLE] " if finding.sample else "") + finding.title,
            created_by=ACTOR,
            is_drill=finding.drill,
            severity=finding.band,
            channel_id=channel_id,
            account_id=finding.account_id,
            region=finding.region,
            resource_id=finding.resource_id,
            # What the id names (a Container finding without a container id: its host).
            resource_type=finding.resource_kind,
            details={
                "finding_id": finding.id,
                "finding_type": finding.type,
                "finding_severity": finding.severity,
                "count": finding.count,
                "sample": finding.sample,
            },
        )
        set_origin(incident, source=finding.origin, sample=finding.sample, tags=finding.tags)
        pending[incident] = [opened]
        if finding.resource_id:
            open_for[finding.resource_id] = incident
        outcome: Outcome = "opened"
    else:
        events = pending.setdefault(incident, [])
        if SEVERITIES.index(finding.band) > SEVERITIES.index(incident.severity):
            change = change_severity(incident=incident, actor=ACTOR, severity=finding.band)
            if change is not None:
                events.append(change)
        events.append(
            NewEvent(
                ACTOR,
                "finding.joined",
                f"GuardDuty finding {finding.type} ({finding.band}, {finding.severity:g}) "
                f"on {finding.resource_id} joined {incident.key}",
                {
                    "finding_id": finding.id,
                    "finding_type": finding.type,
                    "severity": finding.severity,
                    "count": finding.count,
                },
            )
        )
        outcome = "joined"
    stored.incident = incident
    return outcome


# -- the incident's view of its findings ---------------------------------------------------------


def sync_incident(
    *, session: Session, incident: Incident, batch: dict[str, NormalizedFinding] | None = None
) -> bool:
    """Bring the incident up to date with its findings; True when a repeat was recorded.

    Refreshes `facts["guardduty"]` (what the card shows: distinct findings, total
    occurrences, the most severe then latest ten with their network facts, and every
    finding's count) and appends one `finding.repeat` event naming the findings whose count
    grew since the last sync.
    """
    rows = session.execute(
        select(
            Finding.finding_id,
            Finding.type,
            Finding.title,
            Finding.severity,
            Finding.count,
            Finding.first_seen,
            Finding.last_seen,
            Finding.account_id,
            Finding.region,
            Finding.resource_type,
            Finding.resource_id,
            Finding.archived,
            Finding.sample,
        ).where(Finding.incident_id == incident.id)
    ).all()
    previous = GUARDDUTY.get(incident)
    before: dict[str, int] = previous.get("counts") or {}
    grew = [
        (r.finding_id, r.type, before[r.finding_id], r.count)
        for r in rows
        if r.finding_id in before and r.count > before[r.finding_id]
    ]
    ranked = sorted(
        rows,
        key=lambda r: (-r.severity, -(r.last_seen.timestamp() if r.last_seen else 0), r.finding_id),
    )
    shown = {f.get("id"): f for f in previous.get("findings", [])}
    top = ranked[:FACT_FINDINGS]
    missing = [
        r.finding_id for r in top if r.finding_id not in shown and r.finding_id not in (batch or {})
    ]
    raws = (
        dict(
            session.execute(
                select(Finding.finding_id, Finding.raw).where(Finding.finding_id.in_(missing))
            ).all()
        )
        if missing
        else {}
    )
    summary: GuardDutyFacts = {
        "distinct": len(rows),
        "occurrences": sum(r.count for r in rows),
        "findings": [
            _fact(
                r, (batch or {}).get(r.finding_id), shown.get(r.finding_id), raws.get(r.finding_id)
            )
            for r in top
        ],
        "counts": {r.finding_id: r.count for r in ranked[:COUNTED_FINDINGS]},
    }
    GUARDDUTY.set(incident, summary)
    if not grew:
        return False
    listed = "; ".join(f"{kind} count {old}→{new}" for _, kind, old, new in grew[:5])
    more = f" (and {len(grew) - 5} more)" if len(grew) > 5 else ""
    append_event(
        session=session,
        incident=incident,
        actor=ACTOR,
        kind="finding.repeat",
        summary=f"GuardDuty finding(s) seen again: {listed}{more}",
        details={
            "changes": [
                {"finding_id": fid, "type": kind, "from": old, "to": new}
                for fid, kind, old, new in grew
            ],
            "occurrences": summary["occurrences"],
        },
    )
    return True


def _fact(
    row: Any,
    finding: NormalizedFinding | None,
    shown: dict[str, Any] | None,
    raw: dict[str, Any] | None,
) -> dict[str, Any]:
    """What a card line needs from one finding (JSON-safe).

    The row holds the merged counters; the network facts come from this batch's normalised
    finding, else from what the card showed before, and only as a last resort from raw.
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
    if finding is None and shown is not None:
        fact.update({k: shown.get(k) for k in _NETWORK_FACTS})
        return fact
    if finding is None and raw is not None:
        try:
            finding = normalize_finding(raw, region=row.region)
        except BadFinding:
            finding = None
    if finding is not None:
        fact.update(
            public_ips=list(finding.public_ips),
            remote_ip=finding.remote_ip,
            remote_domain=finding.remote_domain,
            user_name=finding.user_name,
            user_type=finding.user_type,  # AssumedRole: containment acts on the role
            bucket_names=list(finding.bucket_names),
            cluster=finding.cluster,
            resource_kind=finding.resource_kind,
            # The instance a container or scanned volume belongs to, when it is not the key.
            host_instance_id=(finding.instance_id if finding.resource_kind != "Instance" else None),
            volume_ids=list(finding.volume_ids),
            object_keys=list(finding.object_keys),
            process=finding.process,
        )
    return fact


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
