"""Render an incident's timeline as Markdown, JSON or CSV, streaming rows (no ORM objects)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from json.encoder import encode_basestring
from typing import Any, TextIO

from sqlalchemy.orm import Session

from storage.models import Incident
from storage.timeline import ExportRow, export_batches, iso, stream_event_rows

FORMATS = ("md", "json", "csv")


def _md_cell(text: str) -> str:
    # A pipe or newline would break the table a responder pastes into the report.
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", "<br>")


def export_timeline(*, session: Session, incident: Incident, fmt: str, out: TextIO) -> int:
    """Write the whole timeline to `out`; returns the number of events written."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    if fmt == "json":
        return _json(incident, export_batches(conn=session, incident_id=incident.id), out)
    rows = stream_event_rows(conn=session, incident_id=incident.id)
    return {"md": _markdown, "csv": _csv}[fmt](incident, rows, out)


def _markdown(incident: Incident, rows: Iterator[Any], out: TextIO) -> int:
    out.write(f"# {incident.key}: {_md_cell(incident.title)}\n\n")
    out.write(
        f"Severity: {incident.severity} · Status: {incident.status} · "
        f"Opened: {iso(incident.created_at)} by {incident.created_by}\n\n"
    )
    out.write("| # | Time (UTC) | Actor | Event | Summary |\n|---|---|---|---|---|\n")
    n = 0
    for r in rows:
        n += 1
        out.write(
            f"| {r.seq} | {iso(r.occurred_at)} | {_md_cell(r.actor)} | {_md_cell(r.kind)} "
            f"| {_md_cell(r.summary)} |\n"
        )
    return n


def _json(incident: Incident, batches: Iterator[list[ExportRow]], out: TextIO) -> int:
    head = {
        "incident": incident.key,
        "title": incident.title,
        "severity": incident.severity,
        "status": incident.status,
        "created_at": iso(incident.created_at),
    }
    out.write(json.dumps(head)[:-1] + ', "events": [')
    n = 0
    # `details` goes out as the stored text, the bytes the chain hashed (a reader can check
    # an event's hash from the export); a damaged, non-JSON value goes out as a string.
    q = encode_basestring
    for rows in batches:
        if n:
            out.write(",")
        n += len(rows)
        out.write(
            ",".join(
                [
                    f'{{"seq": {seq}, "at": "{at}", "actor": {q(actor)}, "kind": {q(kind)}, '
                    f'"summary": {q(summary)}, "details": {details}, '
                    f'"prev_hash": {q(prev_hash)}, "hash": {q(digest)}}}'
                    for seq, at, actor, kind, summary, details, prev_hash, digest in rows
                ]
            )
        )
    out.write("]}\n")
    return n


def _csv(incident: Incident, rows: Iterator[Any], out: TextIO) -> int:
    w = csv.writer(out)
    w.writerow(["incident", "seq", "at", "actor", "kind", "summary", "details", "hash"])
    n = 0
    for r in rows:
        n += 1
        w.writerow(
            [incident.key, r.seq, iso(r.occurred_at), r.actor, r.kind, r.summary, r.details, r.hash]
        )
    return n
