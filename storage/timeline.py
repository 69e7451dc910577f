"""The append-only, hash-chained incident timeline.

Every event stores the SHA-256 of (its predecessor's hash + its own canonical content), so
changing, deleting or reordering any stored row breaks the chain from that row on.
`append_event` is the one entry point for writing; nothing here updates or deletes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from storage.db import clock_of
from storage.models import Incident, TimelineEvent

GENESIS_HASH = "0" * 64
_EVENTS = TimelineEvent.__table__
MAX_SUMMARY = 3000


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, no spaces, non-JSON values stringified."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def iso(ts: dt.datetime) -> str:
    return ts.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_hash(
    *,
    prev_hash: str,
    incident_number: int,
    seq: int,
    occurred_at: dt.datetime,
    actor: str,
    kind: str,
    summary: str,
    details: str,
) -> str:
    content = canonical_json(
        {
            "incident": incident_number,
            "seq": seq,
            "at": iso(occurred_at),
            "actor": actor,
            "kind": kind,
            "summary": summary,
            "details": details,
        }
    )
    return hashlib.sha256((prev_hash + content).encode()).hexdigest()


@dataclass(frozen=True)
class NewEvent:
    actor: str
    kind: str
    summary: str
    details: Mapping[str, Any] | None = None
    occurred_at: dt.datetime | None = None


def _lock_incident_tail(session: Session, incident: Incident) -> tuple[int, str]:
    """Serialize appenders per incident and return (last seq, last hash).

    PostgreSQL: a row lock on the incident. SQLite: write sessions already hold the database
    lock (BEGIN IMMEDIATE), so the read below cannot race.
    """
    if session.get_bind().dialect.name != "sqlite":
        session.execute(
            select(Incident.id).where(Incident.id == incident.id).with_for_update()
        ).one()
    row = session.execute(
        select(TimelineEvent.seq, TimelineEvent.hash)
        .where(TimelineEvent.incident_id == incident.id)
        .order_by(TimelineEvent.seq.desc())
        .limit(1)
    ).first()
    return (row[0], row[1]) if row else (0, GENESIS_HASH)


_TAILS_KEY = "timeline.tails"


def _tails(session: Session) -> dict[Incident, tuple[int, str]]:
    """The chain tails this transaction has written, by incident.

    Once a transaction has appended to an incident it holds that incident's lock (the row
    lock, or SQLite's database lock) until it ends, so the tail it wrote is still the tail:
    later appends in the same transaction need not read it again.
    """
    # The innermost transaction: a savepoint rolled back must not leave its tails behind.
    transaction = session.get_nested_transaction() or session.get_transaction()
    held = session.info.get(_TAILS_KEY)
    if held is None or held[0] is not transaction:
        held = session.info[_TAILS_KEY] = (transaction, {})
    return held[1]


def adopt_tails(*, session: Session, incidents: Iterable[Incident]) -> None:
    """SQLite: take the chain tails of incidents this write transaction has just read.

    A SQLite write transaction holds the database lock from its BEGIN IMMEDIATE, so an
    incident row it read is current, and its `timeline_head`/`timeline_count` are the tail:
    appending to it needs no tail query. (PostgreSQL still locks and reads per incident.)
    """
    if session.get_bind().dialect.name != "sqlite":
        return
    tails = _tails(session)
    for incident in incidents:
        count, head = incident.timeline_count or 0, incident.timeline_head
        if incident.id is None or incident in tails or (count == 0) != (head is None):
            continue  # new, already known, or a head that disagrees: read the tail instead
        tails[incident] = (count, head or GENESIS_HASH)


class Appended(NamedTuple):
    """Where an appended event sits in its incident's chain."""

    incident_id: int
    seq: int
    hash: str


def append_to_timelines(
    *, session: Session, batches: Iterable[tuple[Incident, Iterable[NewEvent]]]
) -> list[Appended]:
    """Append events to several incidents' timelines, in order, with one INSERT.

    Incidents not yet inserted start their chain here (they cannot have events yet) and are
    inserted first, with their chain head already set. The events go in as one executemany
    INSERT rather than ORM objects: a storm appends thousands.
    """
    tails = _tails(session)
    now = clock_of(session).now()
    rows: list[tuple[Incident, dict[str, Any]]] = []
    for incident, events in batches:
        if incident in tails:
            seq, prev = tails[incident]
        elif incident.id is None:
            seq, prev = 0, GENESIS_HASH
        else:
            seq, prev = _lock_incident_tail(session, incident)
        for ev in events:
            seq += 1
            at = (ev.occurred_at or now).astimezone(dt.UTC)
            summary = ev.summary
            if len(summary) > MAX_SUMMARY:
                summary = summary[: MAX_SUMMARY - 1] + "…"
            details = canonical_json(dict(ev.details or {}))
            digest = event_hash(
                prev_hash=prev,
                incident_number=incident.number,
                seq=seq,
                occurred_at=at,
                actor=ev.actor,
                kind=ev.kind,
                summary=summary,
                details=details,
            )
            rows.append(
                (
                    incident,
                    {
                        "seq": seq,
                        "occurred_at": at,
                        "actor": ev.actor,
                        "kind": ev.kind,
                        "summary": summary,
                        "details": details,
                        "prev_hash": prev,
                        "hash": digest,
                    },
                )
            )
            prev = digest
        incident.timeline_head = prev
        incident.timeline_count = seq
        tails[incident] = (seq, prev)
    if not rows:
        return []
    session.flush()  # the incidents first: new ones get their ids, all their chain heads
    for incident, row in rows:
        row["incident_id"] = incident.id
    session.connection().execute(_EVENTS.insert(), [row for _, row in rows])
    return [Appended(row["incident_id"], row["seq"], row["hash"]) for _, row in rows]


def append_events(
    *, session: Session, incident: Incident, events: Iterable[NewEvent]
) -> list[Appended]:
    """Append several events to one incident, in order, in the caller's transaction."""
    return append_to_timelines(session=session, batches=[(incident, events)])


def append_event(
    *,
    session: Session,
    incident: Incident,
    actor: str,
    kind: str,
    summary: str,
    details: Mapping[str, Any] | None = None,
    occurred_at: dt.datetime | None = None,
) -> Appended:
    """The one entry point for writing a timeline event."""
    return append_events(
        session=session,
        incident=incident,
        events=[NewEvent(actor, kind, summary, details, occurred_at)],
    )[0]


def latest_events(*, session: Session, incident: Incident, limit: int = 20) -> list[TimelineEvent]:
    """Newest first: what `/incident timeline` shows."""
    return list(
        session.scalars(
            select(TimelineEvent)
            .where(TimelineEvent.incident_id == incident.id)
            .order_by(TimelineEvent.seq.desc())
            .limit(limit)
        )
    )


def count_events(*, session: Session, incident: Incident) -> int:
    from sqlalchemy import func

    return (
        session.scalar(
            select(func.count())
            .select_from(TimelineEvent)
            .where(TimelineEvent.incident_id == incident.id)
        )
        or 0
    )


EVENT_COLUMNS = (
    TimelineEvent.seq,
    TimelineEvent.occurred_at,
    TimelineEvent.actor,
    TimelineEvent.kind,
    TimelineEvent.summary,
    TimelineEvent.details,
    TimelineEvent.prev_hash,
    TimelineEvent.hash,
)


def stream_event_rows(
    *, conn: Connection | Session, incident_id: int, batch: int = 2000
) -> Iterator[Any]:
    """All events oldest first as lightweight Core rows, streamed in batches (no ORM objects)."""
    stmt = (
        select(*EVENT_COLUMNS)
        .where(TimelineEvent.incident_id == incident_id)
        .order_by(TimelineEvent.seq)
        .execution_options(yield_per=batch)
    )
    yield from conn.execute(stmt)


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    events: int
    first_bad_seq: int | None = None
    reason: str | None = None


def verify_chain(*, conn: Connection | Session, incident: Incident) -> ChainReport:
    """Recompute every hash; report the first event whose stored values don't match."""
    prev = GENESIS_HASH
    n = 0
    for expected_seq, row in enumerate(stream_event_rows(conn=conn, incident_id=incident.id), 1):
        n = expected_seq
        if row.seq != expected_seq:
            return ChainReport(False, n, row.seq, f"sequence gap: expected {expected_seq}")
        if row.prev_hash != prev:
            return ChainReport(False, n, row.seq, "prev_hash does not match the previous event")
        digest = event_hash(
            prev_hash=prev,
            incident_number=incident.number,
            seq=row.seq,
            occurred_at=row.occurred_at,
            actor=row.actor,
            kind=row.kind,
            summary=row.summary,
            details=row.details,
        )
        if digest != row.hash:
            return ChainReport(False, n, row.seq, "content does not match its hash")
        prev = row.hash
    if incident.timeline_count and n < incident.timeline_count:
        return ChainReport(
            False, n, n + 1, f"{incident.timeline_count - n} event(s) missing from the end"
        )
    if incident.timeline_head and incident.timeline_head != prev:
        return ChainReport(False, n, n, "last event does not match the incident's chain head")
    return ChainReport(True, n)
