"""Timeline benchmark: append 100k events, read the latest 50, export all as JSON.

Floors, on the same file: the latest 50 read with raw SQL through sqlite3; the export done
by SQLite itself, `json_group_array(json_object(...))` over the same rows in one query (the
fastest honest route to the same JSON: the bench checks both hold the same events).
`ratio` = `export_ratio_sqlite_json` = our export / SQLite's (best of 5, interleaved).
"""

from __future__ import annotations

import io
import json
import sqlite3
import statistics
import sys
import tempfile
import time
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
EXPORTS = 5


def floor_export(path: Path, incident_id: int, out: io.StringIO) -> int:
    """The same events, as JSON built by SQLite's JSON functions in one statement."""
    conn = sqlite3.connect(path)
    (events, n) = conn.execute(
        "SELECT json_group_array(json_object("
        " 'seq', seq, 'at', replace(occurred_at, ' ', 'T') || 'Z', 'actor', actor,"
        " 'kind', kind, 'summary', summary, 'details', json(details),"
        " 'prev_hash', prev_hash, 'hash', hash)), count(*)"
        " FROM (SELECT * FROM timeline_events WHERE incident_id = ? ORDER BY seq)",
        (incident_id,),
    ).fetchone()
    out.write('{"events": ')
    out.write(events)
    out.write("}\n")
    conn.close()
    return int(n)


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

    outputs: dict[str, io.StringIO] = {}

    def floor_fn(buf: io.StringIO) -> int:
        return floor_export(path, incident.id, buf)

    def export_ours(buf: io.StringIO) -> int:
        with db.read_session() as s:
            inc = s.get(Incident, incident.id)
            return export_timeline(session=s, incident=inc, fmt="json", out=buf)

    # Interleaved, best of EXPORTS each: load from other work on the machine only adds time.
    ours_t: list[float] = []
    floor_t: list[float] = []
    for _ in range(EXPORTS):
        for fn, times in ((export_ours, ours_t), (floor_fn, floor_t)):
            buf = io.StringIO()
            t = time.perf_counter()
            count = fn(buf)
            times.append(time.perf_counter() - t)
            assert count == EVENTS, count
            outputs[fn.__name__] = buf
    same = (
        json.loads(outputs["export_ours"].getvalue())["events"]
        == json.loads(outputs["floor_fn"].getvalue())["events"]
    )
    assert same, "the floor's JSON and ours hold different events"
    export_s, floor_export_s = min(ours_t), min(floor_t)
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
        "export_json_sqlite_s": round(floor_export_s, 3),
        "export_ratio_sqlite_json": round(export_s / floor_export_s, 3),
        "ratio": round(export_s / floor_export_s, 3),
    }
    print(
        f"appended {EVENTS} events in {append_s:.2f}s; latest 50 in {latest_ms:.2f} ms "
        f"(floor {result['latest50_floor_ms_p50']} ms); JSON export {export_s:.2f}s "
        f"(SQLite's JSON functions {floor_export_s:.2f}s)",
        file=sys.stderr,
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
