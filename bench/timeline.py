"""Timeline benchmark: append 100k events, read the latest 50, export all as JSON.

Floor: the same reads done with raw SQL through sqlite3 on the same file (and, for the
export, the same JSON written from those raw rows). `ratio` is export time / floor export.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bot.clock import SystemClock
from commands.exports import export_timeline
from commands.incidents import open_incident
from storage.db import Database
from storage.migrate import upgrade
from storage.models import Incident
from storage.timeline import NewEvent, append_events, latest_events

EVENTS = 100_000
BATCH = 500  # a burst the app writes in one transaction (a finding storm, a containment run)
READS = 200


def _iso(text: str) -> str:
    # sqlite3 returns the stored text; render it like the app does (UTC, Z suffix).
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def floor_export(path: Path, incident_id: int, out: io.StringIO) -> int:
    conn = sqlite3.connect(path)
    cur = conn.execute(
        "SELECT seq, occurred_at, actor, kind, summary, details, prev_hash, hash "
        "FROM timeline_events WHERE incident_id = ? ORDER BY seq",
        (incident_id,),
    )
    dumps = json.JSONEncoder(ensure_ascii=False).encode
    out.write('{"events": [')
    n = 0
    while rows := cur.fetchmany(2000):
        for seq, at, actor, kind, summary, details, prev_hash, digest in rows:
            if n:
                out.write(",")
            n += 1
            out.write(
                dumps(
                    {
                        "seq": seq,
                        "at": _iso(at),
                        "actor": actor,
                        "kind": kind,
                        "summary": summary,
                        "details": json.loads(details),
                        "prev_hash": prev_hash,
                        "hash": digest,
                    }
                )
            )
    out.write("]}\n")
    conn.close()
    return n


def floor_latest(conn: sqlite3.Connection, incident_id: int) -> list[tuple]:
    return conn.execute(
        "SELECT id, seq, occurred_at, actor, kind, summary, details, prev_hash, hash "
        "FROM timeline_events WHERE incident_id = ? ORDER BY seq DESC LIMIT 50",
        (incident_id,),
    ).fetchall()


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-timeline-"))
    path = tmp / "timeline.db"
    url = f"sqlite:///{path}"
    upgrade(url)
    db = Database(url, clock=SystemClock())
    with db.session() as s:
        incident = open_incident(session=s, title="bench", created_by="U1")

    t0 = time.perf_counter()
    for start in range(1, EVENTS, BATCH):
        with db.session() as s:
            inc = s.get(Incident, incident.id)
            append_events(
                session=s,
                incident=inc,
                events=[
                    NewEvent("U1", "note", f"event {i}", {"i": i, "source": "bench"})
                    for i in range(start, min(start + BATCH, EVENTS))
                ],
            )
    append_s = time.perf_counter() - t0

    # Latest 50, as /incident timeline does it (warm: the app's engine is long-lived).
    ours: list[float] = []
    for _ in range(READS):
        t = time.perf_counter()
        with db.read_session() as s:
            inc = s.get(Incident, incident.id)
            got = latest_events(session=s, incident=inc, limit=50)
        ours.append(time.perf_counter() - t)
    assert len(got) == 50
    raw = sqlite3.connect(path)
    floor: list[float] = []
    for _ in range(READS):
        t = time.perf_counter()
        floor_latest(raw, incident.id)
        floor.append(time.perf_counter() - t)
    raw.close()

    def best_of(fn: Callable[[io.StringIO], int], n: int = 3) -> tuple[float, int]:
        times, count = [], 0
        for _ in range(n):
            buf = io.StringIO()
            t = time.perf_counter()
            count = fn(buf)
            times.append(time.perf_counter() - t)
        return min(times), count

    def export_ours(buf: io.StringIO) -> int:
        with db.read_session() as s:
            inc = s.get(Incident, incident.id)
            return export_timeline(session=s, incident=inc, fmt="json", out=buf)

    export_s, n_ours = best_of(export_ours)
    floor_export_s, n_floor = best_of(lambda buf: floor_export(path, incident.id, buf))
    assert n_ours == n_floor == EVENTS, (n_ours, n_floor)
    db.dispose()

    latest_ms = statistics.median(ours) * 1000
    result = {
        "bench": "timeline",
        "events": EVENTS,
        "append_s": round(append_s, 3),
        "append_events_per_s": round(EVENTS / append_s),
        "latest50_ms_p50": round(latest_ms, 3),
        "latest50_floor_ms_p50": round(statistics.median(floor) * 1000, 3),
        "export_json_s": round(export_s, 3),
        "export_json_floor_s": round(floor_export_s, 3),
        "ratio": round(export_s / floor_export_s, 3),
    }
    print(
        f"appended {EVENTS} events in {append_s:.2f}s; latest 50 in {latest_ms:.2f} ms "
        f"(floor {result['latest50_floor_ms_p50']} ms); JSON export {export_s:.2f}s "
        f"(floor {floor_export_s:.2f}s)",
        file=sys.stderr,
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
