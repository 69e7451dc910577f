"""The append-only, hash-chained incident timeline.

Every event stores a digest of (its predecessor's digest + its own canonical content), so
changing, deleting or reordering any stored row breaks the chain from that row on.
`append_event` is the one entry point for writing; nothing here updates or deletes.

Keyed chains: when the Database carries a TimelineKey (a secret that is NOT in the database),
a new incident's digests are HMAC-SHA256 under it and the incident records the key's id (never
the key), plus a seal: an HMAC over (incident, count, head). Whoever holds only the database
can then neither recompute the chain after an edit nor move the head back after truncating.
Incidents chained before keys existed (`timeline_key_id` NULL) stay plain SHA-256: "legacy,
unkeyed", and verify says so.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import Connection, String, case, func, null, select, type_coerce
from sqlalchemy.orm import Session

from storage.db import clock_of
from storage.errors import StorageError
from storage.models import Incident, TimelineEvent

GENESIS_HASH = "0" * 64
_EVENTS = TimelineEvent.__table__
MAX_SUMMARY = 3000


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, no spaces, non-JSON values stringified."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def iso(ts: dt.datetime) -> str:
    return ts.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


MIN_KEY_BYTES = 32


@dataclass(frozen=True)
class TimelineKey:
    """The secret that keys timeline chains, and its public id (recorded per incident)."""

    secret: bytes
    id: str

    @classmethod
    def from_secret(cls, secret: str | bytes, *, source: str = "env") -> TimelineKey:
        raw = secret.encode() if isinstance(secret, str) else secret
        if len(raw) < MIN_KEY_BYTES:
            raise ValueError(f"a timeline key needs at least {MIN_KEY_BYTES} bytes")
        # The id names the key without revealing it: a MAC of a fixed label under the key.
        tag = hmac.new(raw, b"incident-bot timeline key id", hashlib.sha256).hexdigest()
        return cls(secret=raw, id=f"{source}:{tag[:16]}")

    def __repr__(self) -> str:  # never the secret
        return f"TimelineKey(id={self.id!r})"


class TimelineKeyError(StorageError):
    """An append to a keyed chain without its key: refused rather than breaking the chain."""


def key_of(session: Session | Connection) -> TimelineKey | None:
    """The timeline key of the Database that opened `session`, if it has one."""
    info = getattr(session, "info", {})
    return info.get("timeline_key")


def _digest(key: TimelineKey | None, message: str) -> str:
    if key is None:
        return hashlib.sha256(message.encode()).hexdigest()
    return hmac.new(key.secret, message.encode(), hashlib.sha256).hexdigest()


def head_seal(*, key: TimelineKey, incident_number: int, count: int, head: str) -> str:
    """The MAC binding an incident's event count to its head: truncation cannot re-seal."""
    return _digest(
        key,
        canonical_json(
            {"seal": "timeline-head", "incident": incident_number, "count": count, "head": head}
        ),
    )


def event_hash(
    *,
    key: TimelineKey | None = None,
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
    return _digest(key, prev_hash + content)


def _chain_key(session: Session, incident: Incident, seq: int) -> TimelineKey | None:
    """The key this incident's chain uses; a chain's first event adopts the session's key."""
    key = key_of(session)
    if seq == 0 and incident.timeline_key_id is None and key is not None:
        incident.timeline_key_id = key.id
        return key
    if incident.timeline_key_id is None:
        return None  # legacy, unkeyed: stays plain SHA-256 so it still verifies
    if key is None or key.id != incident.timeline_key_id:
        have = f"key {key.id}" if key else "no timeline key"
        raise TimelineKeyError(
            f"{incident.key}'s timeline is keyed with {incident.timeline_key_id} but this "
            f"process has {have}: set INCIDENT_BOT_TIMELINE_KEY to the key it was chained with"
        )
    return key


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
        key = _chain_key(session, incident, seq)
        start = seq
        for ev in events:
            seq += 1
            at = (ev.occurred_at or now).astimezone(dt.UTC)
            summary = ev.summary
            if len(summary) > MAX_SUMMARY:
                summary = summary[: MAX_SUMMARY - 1] + "…"
            details = canonical_json(dict(ev.details or {}))
            digest = event_hash(
                key=key,
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
        if key is not None and seq != start:
            incident.timeline_seal = head_seal(
                key=key, incident_number=incident.number, count=seq, head=prev
            )
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


class ExportRow(NamedTuple):
    """An event as an export writes it (batches may hold plain tuples in this order)."""

    seq: int
    at: str  # ISO 8601 UTC with microseconds and a Z, as `iso` writes it
    actor: str
    kind: str
    summary: str
    details: str  # JSON text: the stored text, exactly what was hashed (see export_batches)
    prev_hash: str
    hash: str


def _details_json(text: str) -> str:
    try:
        json.loads(text)
    except ValueError:
        return json.dumps(text, ensure_ascii=False)  # a damaged row: its text, as a string
    return text


def export_batches(
    *, conn: Connection | Session, incident_id: int, batch: int = 2000
) -> Iterator[list[ExportRow]]:
    """All events oldest first for an export, in batches, ready to write: the time as ISO
    text and `details` as JSON text, the stored text itself (what the chain hashed) instead of
    decoding and re-encoding it per row; a damaged, non-JSON value comes as a JSON string."""
    if isinstance(conn, Session):
        conn = conn.connection()
    if conn.dialect.name == "sqlite":
        yield from _sqlite_export_batches(conn, incident_id, batch)
        return
    result = conn.execution_options(stream_results=True).execute(
        select(*EVENT_COLUMNS)
        .where(TimelineEvent.incident_id == incident_id)
        .order_by(TimelineEvent.seq)
    )
    while rows := result.fetchmany(batch):
        yield [
            ExportRow(seq, iso(at), actor, kind, summary, _details_json(details), prev, digest)
            for seq, at, actor, kind, summary, details, prev, digest in rows
        ]


def _sqlite_export_batches(
    conn: Connection, incident_id: int, batch: int
) -> Iterator[list[ExportRow]]:
    """SQLite does the per-row work in the query (the stored time text rewritten as ISO,
    `json_valid`), and the rows come straight from the driver's cursor as plain tuples: an
    export of 100k events then costs about what SQLite's own JSON functions do."""
    ev = TimelineEvent
    stored = type_coerce(ev.occurred_at, String)
    stmt = (
        select(
            ev.seq,
            # SQLAlchemy stores "YYYY-MM-DD HH:MM:SS.ffffff" (naive UTC); anything else: NULL.
            case((func.length(stored) == 26, func.replace(stored, " ", "T") + "Z"), else_=null()),
            ev.actor,
            ev.kind,
            ev.summary,
            case((func.json_valid(ev.details) == 1, ev.details), else_=func.json_quote(ev.details)),
            ev.prev_hash,
            ev.hash,
        )
        .where(ev.incident_id == incident_id)
        .order_by(ev.seq)
    )
    compiled = stmt.compile(dialect=conn.dialect)
    params = [compiled.params[name] for name in compiled.positiontup or ()]
    # The session's own connection (the same transaction), below SQLAlchemy's Row layer.
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(str(compiled), params)
        while rows := cursor.fetchmany(batch):
            yield [r if r[1] is not None else _with_iso_time(conn, incident_id, r) for r in rows]
    finally:
        cursor.close()


def _with_iso_time(conn: Connection, incident_id: int, row: tuple[Any, ...]) -> ExportRow:
    """A row whose stored time the query could not rewrite: read it through its column type."""
    at = conn.scalar(
        select(TimelineEvent.occurred_at).where(
            TimelineEvent.incident_id == incident_id, TimelineEvent.seq == row[0]
        )
    )
    return ExportRow(row[0], iso(at), *row[2:])  # type: ignore[arg-type]


class KeyNeeded(StorageError):
    """Verifying a keyed chain without its key: the operator must supply it."""


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    events: int
    first_bad_seq: int | None = None
    reason: str | None = None
    key_id: str | None = None  # None: legacy, unkeyed (plain SHA-256)
    hashes: tuple[str, ...] = ()  # the stored hashes checked, oldest first (for anchors)
    read_all: bool = True  # False: a broken event stopped the check before the newest

    @property
    def keyed(self) -> bool:
        return self.key_id is not None


def verify_chain(
    *, conn: Connection | Session, incident: Incident, key: TimelineKey | None = None
) -> ChainReport:
    """Recompute every digest; report the first event whose stored values don't match.

    A keyed incident needs its key (KeyNeeded otherwise); a different key is reported, not
    guessed around. Legacy incidents are checked with plain SHA-256.
    """
    key_id = incident.timeline_key_id
    if key_id is not None:
        if key is None:
            raise KeyNeeded(
                f"{incident.key}'s timeline is keyed with {key_id}: set "
                "INCIDENT_BOT_TIMELINE_KEY to that key to verify it"
            )
        if key.id != key_id:
            return ChainReport(
                False,
                0,
                None,
                f"the database says the chain is keyed with {key_id}, but the configured key is "
                f"{key.id}: the key id was replaced, or this is not the key it was chained with",
                key_id,
                read_all=False,
            )
    chain_key = key if key_id is not None else None

    def report(
        ok: bool,
        n: int,
        bad: int | None = None,
        reason: str | None = None,
        *,
        read_all: bool = True,
    ) -> ChainReport:
        return ChainReport(ok, n, bad, reason, key_id, tuple(hashes), read_all)

    prev = GENESIS_HASH
    n = 0
    hashes: list[str] = []
    for expected_seq, row in enumerate(stream_event_rows(conn=conn, incident_id=incident.id), 1):
        n = expected_seq
        if row.seq != expected_seq:
            return report(
                False, n, row.seq, f"sequence gap: expected {expected_seq}", read_all=False
            )
        if row.prev_hash != prev:
            return report(
                False, n, row.seq, "prev_hash does not match the previous event", read_all=False
            )
        digest = event_hash(
            key=chain_key,
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
            what = "its keyed hash (HMAC)" if chain_key else "its hash"
            return report(False, n, row.seq, f"content does not match {what}", read_all=False)
        prev = row.hash
        hashes.append(row.hash)
    if incident.timeline_count and n < incident.timeline_count:
        return report(
            False, n, n + 1, f"{incident.timeline_count - n} event(s) missing from the end"
        )
    if incident.timeline_head and incident.timeline_head != prev:
        return report(False, n, n, "last event does not match the incident's chain head")
    if chain_key is not None and n:
        seal = head_seal(key=chain_key, incident_number=incident.number, count=n, head=prev)
        if not hmac.compare_digest(seal, incident.timeline_seal or ""):
            return report(
                False,
                n,
                n,
                f"the chain head's seal does not match {n} event(s): events were removed "
                "from the end and the head rewritten, or the head was edited",
            )
    return report(True, n)
