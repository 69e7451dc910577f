"""Reminder benchmark: rebuild the schedule at start, and how late reminders fire.

Data: 10,000 pending reminders across 2,000 incidents (each a running GDPR clock: four
reminders before the deadline and the deadline), in a SQLite file.

- rebuild: `ReminderScheduler.start()` on a fresh engine, as a restarted process does it
  (start APScheduler, mark rows that came due while down as late, arm the timer for the
  earliest pending row). Floor: loading the same pending rows with raw SQL (sqlite3).
  `ratio` = rebuild / floor (medians). The scheduler never holds one job per reminder, so
  it can beat the floor: it reads one MIN(due_at) through the (status, due_at) index.
- lateness: 100 more reminders due within the next 10 s (half written before the start,
  half while running, as commands do), posted to a fake Slack Web API over HTTP;
  lateness = when Slack received the post - due_at.

Targets (issue 7): rebuild <= 3x floor and < 2 s; p99 lateness < 1 s.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from slack_sdk import WebClient
from sqlalchemy import insert

from bot.clock import SystemClock
from bot.reminder_kinds import reminder_kinds
from bot.scheduler import ReminderScheduler
from bot.settings import AppConfig, EnvSettings, Settings
from commands.deadlines import queue as dl
from storage.db import Database
from storage.migrate import upgrade
from storage.models import Incident, Reminder
from tests.slack_fake import FakeSlack

CLOCK = SystemClock()  # the bench measures real lateness
INCIDENTS = 2_000
PER_INCIDENT = 5  # 48, 24, 6, 1 h before the 72 h deadline, and the deadline
FIRING = 100
WINDOW_S = 10.0
STARTS = 7
CHANNEL = "C0INCIDENT"


def seed(db: Database, now: dt.datetime) -> None:
    """2,000 incidents with running clocks; every reminder at least a minute away."""
    rng = random.Random(7)
    incidents = []
    reminders = []
    for n in range(1, INCIDENTS + 1):
        # Aware between 0 and 23 h ago: the 48 h-before reminder is still ahead for all.
        aware = now - dt.timedelta(hours=rng.uniform(0, 23))
        incidents.append(
            {
                "id": n,
                "number": n,
                "title": f"incident {n}",
                "severity": "high",
                "status": "open",
                "channel_id": CHANNEL,
                "created_by": "U0OWNER",
                "owner": "U0OWNER",
                "created_at": now,
                "updated_at": now,
                "personal_data": True,
                "aware_at": aware,
                "is_drill": False,
                "facts": {},
                "timeline_count": 0,
            }
        )
        deadline = aware + dt.timedelta(hours=72)
        for hours in (48, 24, 6, 1, 0):
            reminders.append(
                {
                    "incident_id": n,
                    "kind": "gdpr",
                    "due_at": deadline - dt.timedelta(hours=hours),
                    "status": "pending",
                    "dedupe_key": f"gdpr:{n}:" + (f"before:{hours}" if hours else "deadline"),
                    "late": False,
                    "message": None,
                    "payload": {"stage": "before", "hours_before": hours}
                    if hours
                    else {"stage": "deadline"},
                    "created_at": now,
                }
            )
    with db.session() as session:
        session.execute(insert(Incident), incidents)
        session.execute(insert(Reminder), reminders)


def settings_for(url: str, slack: FakeSlack) -> Settings:
    env = EnvSettings.model_validate(
        {"database_url": url, "slack_bot_token": "xoxb-bench", "slack_api_url": slack.base_url}
    )
    return Settings(
        env=env, config=AppConfig.model_validate({"slack": {"incident_channel": CHANNEL}})
    )


def floor_load(path: Path) -> int:
    conn = sqlite3.connect(path)
    rows = conn.execute(
        "SELECT id, incident_id, kind, due_at, dedupe_key, message, payload, late "
        "FROM reminders WHERE status = 'pending' ORDER BY due_at"
    ).fetchall()
    conn.close()
    return len(rows)


def add_firing(db: Database, now: dt.datetime, ids: range) -> dict[int, dt.datetime]:
    """Reminders due within the next WINDOW_S seconds, written the way commands do."""
    due: dict[int, dt.datetime] = {}
    with db.session() as session:
        for i in ids:
            incident = session.get(Incident, 1 + i % INCIDENTS)
            at = now + dt.timedelta(seconds=WINDOW_S * (i + 1) / FIRING)
            row = dl.schedule_reminder(
                session=session,
                incident=incident,
                kind="followup",
                due_at=at,
                dedupe_key=f"bench:{i}",
                message=f"bench reminder {i}",
            )
            due[row.id] = at
    return due


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-reminders-"))
    path = tmp / "reminders.db"
    url = f"sqlite:///{path}"
    upgrade(url)
    seed_db = Database(url, clock=CLOCK)
    seed(seed_db, CLOCK.now())
    seed_db.dispose()

    with FakeSlack() as slack:
        slack.add_channel(CHANNEL, name="incidents")
        settings = settings_for(url, slack)
        client = WebClient(token="xoxb-bench", base_url=slack.base_url)

        # Rebuild at start: a fresh engine each time, as after a restart.
        rebuild: list[float] = []
        floor: list[float] = []
        for _ in range(STARTS):
            t = time.perf_counter()
            n_floor = floor_load(path)
            floor.append(time.perf_counter() - t)
            db = Database(url, clock=CLOCK)
            scheduler = ReminderScheduler(
                database=db,
                settings=settings,
                kinds=reminder_kinds(),
                client=client,
                maintain_at_start=False,
            )
            t = time.perf_counter()
            scheduler.start()
            rebuild.append(time.perf_counter() - t)
            scheduler.shutdown()
            db.dispose()
        assert n_floor == INCIDENTS * PER_INCIDENT, n_floor

        # Lateness: half the firing reminders exist before the start, half arrive after.
        db = Database(url, clock=CLOCK)
        now = CLOCK.now() + dt.timedelta(seconds=0.5)
        due = add_firing(db, now, range(0, FIRING, 2))
        scheduler = ReminderScheduler(
            database=db, settings=settings, kinds=reminder_kinds(), client=client
        )
        scheduler.start()  # with the upkeep (digest, stale checks for 2,000 incidents)
        due.update(add_firing(db, now, range(1, FIRING, 2)))
        deadline = time.monotonic() + WINDOW_S + 15
        while time.monotonic() < deadline:
            posted = [
                c
                for c in slack.calls_for("chat.postMessage", ok_only=True)
                if (c.args.get("metadata") or {}).get("event_type") == "incident_bot_reminder"
            ]
            if len(posted) >= FIRING:
                break
            time.sleep(0.1)
        time.sleep(0.5)
        scheduler.shutdown()
        posted = [
            c
            for c in slack.calls_for("chat.postMessage", ok_only=True)
            if (c.args.get("metadata") or {}).get("event_type") == "incident_bot_reminder"
        ]
        db.dispose()

    ids = [int(c.args["metadata"]["event_payload"]["reminder_id"]) for c in posted]
    assert sorted(ids) == sorted(due), f"posted {len(ids)} of {len(due)} (or some twice)"
    lateness = [
        (dt.datetime.fromtimestamp(c.at, dt.UTC) - due[rid]).total_seconds()
        for c, rid in zip(posted, ids, strict=True)
    ]
    rebuild_s = statistics.median(rebuild)
    floor_s = statistics.median(floor)
    result = {
        "bench": "reminders",
        "pending": INCIDENTS * PER_INCIDENT,
        "incidents": INCIDENTS,
        "rebuild_ms_p50": round(rebuild_s * 1000, 3),
        "rebuild_ms_max": round(max(rebuild) * 1000, 3),
        "floor_load_ms_p50": round(floor_s * 1000, 3),
        "fired": len(ids),
        "duplicates": len(ids) - len(set(ids)),
        "lateness_ms_p50": round(pct(lateness, 0.50) * 1000, 1),
        "lateness_ms_p99": round(pct(lateness, 0.99) * 1000, 1),
        "lateness_ms_max": round(max(lateness) * 1000, 1),
        "early": sum(1 for x in lateness if x < 0),
        "ratio": round(rebuild_s / floor_s, 3),
    }
    print(
        f"rebuild {result['rebuild_ms_p50']} ms vs raw load {result['floor_load_ms_p50']} ms; "
        f"{len(ids)} reminders fired, lateness p50 {result['lateness_ms_p50']} ms, "
        f"p99 {result['lateness_ms_p99']} ms",
        file=sys.stderr,
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
