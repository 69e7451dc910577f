"""Reminder benchmark: rebuild the schedule at start, and how late reminders reach Slack.

Data: 10,000 pending reminders across 2,000 incidents (each a running GDPR clock: four
reminders before the deadline and the deadline), plus 500 that came due while no process
ran (the downtime a restart finds), in a SQLite file.

- rebuild: `ReminderScheduler.rebuild()` on a fresh engine, as a restarted process does it:
  mark the rows that came due while down as late (one UPDATE), read the earliest pending due
  time, arm the timer. Floor: the same SQL work with sqlite3 on a fresh connection (that
  UPDATE, then SELECT MIN(due_at)), in one transaction. The 500 rows are reset to not-late
  before every round of either, so each round marks them. `ratio` = rebuild / floor
  (medians, rounds interleaved).
- lateness, against the fake Slack with Slack's manners (`FakeSlack.realistic`) at
  SLACK_LATENCY_S +/- 50 ms per call: one post per second per channel after a burst of 3,
  429 with Retry-After past it; lateness = when Slack accepted the post - due_at, Slack's
  own latency included:
  - spread: FIRING reminders due at the same instant, each in the thread of its own incident
    channel (`channels` of them), one scheduler with its upkeep: `lateness_p99_ms` (target
    <= 1 s);
  - paced: FIRING reminders due at once in the threads of incidents sharing PACED_CHANNELS
    channels (5 per channel): Slack's pace bounds each channel, the k-th post (from 0) in a
    channel cannot land before due + max(0, k - burst + 1) x 1 s + the latency. `pace_ratio`
    = the worst channel's last lateness / that physical bound (the bot keeps a little under
    Slack's limits: bot/slack_out.py's Pace, a burst of 2);
  - two processes: the spread case with two `python -m bot.scheduler` processes on the same
    file: every reminder posted exactly once, both processes posting.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from slack_sdk import WebClient
from sqlalchemy import insert, text

from bot.clock import SystemClock
from bot.reminder_kinds import reminder_kinds
from bot.scheduler import ReminderScheduler
from bot.settings import AppConfig, EnvSettings, Settings
from commands.deadlines import queue as dl
from storage.db import Database
from storage.migrate import upgrade
from storage.models import Incident, Reminder
from tests.slack_fake import Call, FakeSlack, SlackManners

CLOCK = SystemClock()  # the bench measures real lateness
INCIDENTS = 2_000
PER_INCIDENT = 5  # 48, 24, 6, 1 h before the 72 h deadline, and the deadline
DOWNTIME = 500  # pending rows that came due while no process ran
FIRING = 100
PACED_CHANNELS = 20
SLACK_LATENCY_S = 0.2
SLACK_PACE_S = 1.0  # Slack: about one message per second per channel
STARTS = 9
CHANNEL = "C0INCIDENT"
REPO = Path(__file__).resolve().parents[1]


def seed(db: Database, now: dt.datetime) -> None:
    """2,000 incidents with running clocks, and DOWNTIME rows due in the last hour."""
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
    for i in range(DOWNTIME):
        reminders.append(
            {
                "incident_id": 1 + i % INCIDENTS,
                "kind": "followup",
                "due_at": now - dt.timedelta(minutes=rng.uniform(1, 60)),
                "status": "pending",
                "dedupe_key": f"down:{i}",
                "late": False,
                "message": f"due while down {i}",
                "payload": {},
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


def sqlite_time(at: dt.datetime) -> str:
    """A datetime as SQLAlchemy stores it in SQLite (naive UTC text)."""
    return at.astimezone(dt.UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def floor_rebuild(path: Path, now: dt.datetime) -> int:
    """The rebuild's SQL, raw: mark what came due while down as late, read the minimum."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA synchronous=NORMAL")  # as the app's connections (WAL is the file's)
    late = conn.execute(
        "UPDATE reminders SET late = 1 WHERE status = 'pending' AND due_at < ? AND late = 0",
        (sqlite_time(now),),
    ).rowcount
    conn.execute("SELECT MIN(due_at) FROM reminders WHERE status = 'pending'").fetchone()
    conn.commit()
    conn.close()
    return late


def reset_downtime(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("UPDATE reminders SET late = 0 WHERE dedupe_key LIKE 'down:%'")
    conn.commit()
    conn.close()


def late_rows(path: Path) -> int:
    conn = sqlite3.connect(path)
    (n,) = conn.execute("SELECT count(*) FROM reminders WHERE late = 1").fetchone()
    conn.close()
    return int(n)


def threads(slack: FakeSlack, channels: list[str], prefix: str, first: int) -> None:
    """Give incidents first.. a card thread, round-robin over `channels` (as the bot does)."""
    client = WebClient(token="xoxb-bench", base_url=slack.base_url)
    rows = []
    for i in range(FIRING):
        channel = channels[i % len(channels)]
        if i < len(channels):
            slack.add_channel(channel, name=f"{prefix}-{i}")
        ts = client.chat_postMessage(channel=channel, text="card")["ts"]
        rows.append({"id": first + i, "channel": channel, "ts": ts})
    conn = sqlite3.connect(SLACK_DB[0])
    conn.executemany(
        "UPDATE incidents SET channel_id = :channel, thread_ts = :ts, card_ts = :ts WHERE id = :id",
        rows,
    )
    conn.commit()
    conn.close()


SLACK_DB: list[Path] = []


def schedule(db: Database, first: int, at: dt.datetime, tag: str) -> dict[int, dt.datetime]:
    """FIRING reminders on incidents first.., all due at `at`, written as commands do."""
    due: dict[int, dt.datetime] = {}
    with db.session() as session:
        for i in range(FIRING):
            row = dl.schedule_reminder(
                session=session,
                incident=session.get(Incident, first + i),
                kind="followup",
                due_at=at,
                dedupe_key=f"{tag}:{i}",
                message=f"{tag} reminder {i}",
            )
            due[row.id] = at
    return due


def reminder_posts(slack: FakeSlack, ids: dict[int, dt.datetime]) -> list[Call]:
    out = []
    for c in slack.calls_for("chat.postMessage", ok_only=True):
        meta = c.args.get("metadata") or {}
        if (
            meta.get("event_type") == "incident_bot_reminder"
            and int(meta["event_payload"]["reminder_id"]) in ids
        ):
            out.append(c)
    return out


def wait_posts(slack: FakeSlack, due: dict[int, dt.datetime], timeout: float) -> list[Call]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(reminder_posts(slack, due)) < len(due):
        time.sleep(0.05)
    time.sleep(0.5)  # a duplicate would arrive now
    return reminder_posts(slack, due)


def lateness(posts: list[Call], due: dict[int, dt.datetime]) -> list[float]:
    rid = [int(c.args["metadata"]["event_payload"]["reminder_id"]) for c in posts]
    if sorted(rid) != sorted(due):
        raise AssertionError(f"posted {len(rid)} of {len(due)} ({len(set(rid))} distinct)")
    return [
        (dt.datetime.fromtimestamp(c.at, dt.UTC) - due[r]).total_seconds()
        for c, r in zip(posts, rid, strict=True)
    ]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class SchedulerProcess:
    """`python -m bot.scheduler` on the bench's file and fake Slack."""

    READY = re.compile(r"reminder scheduler (\S+) started")

    def __init__(self, url: str, slack: FakeSlack, tmp: Path) -> None:
        config = tmp / "incident-bot.yml"
        config.write_text(f"slack:\n  incident_channel: {CHANNEL}\n")
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "SLACK_BOT_TOKEN": "xoxb-bench",
            "SLACK_SIGNING_SECRET": "bench",
            "INCIDENT_BOT_SLACK_API_URL": slack.base_url,
            "INCIDENT_BOT_CONFIG": str(config),
            "PYTHONPATH": str(REPO),
        }
        env.pop("SLACK_APP_TOKEN", None)
        self.worker_id = ""
        self.lines: list[str] = []
        self._ready = threading.Event()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bot.scheduler", "--no-maintain", "--poll", "1"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            found = self.READY.search(line)
            if found:
                self.worker_id = found.group(1)
                self._ready.set()

    def started(self) -> SchedulerProcess:
        if not self._ready.wait(60):
            self.proc.kill()
            raise RuntimeError("scheduler process did not start:\n" + "".join(self.lines[-20:]))
        return self

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-reminders-"))
    path = tmp / "reminders.db"
    SLACK_DB.append(path)
    url = f"sqlite:///{path}"
    upgrade(url)
    seed_db = Database(url, clock=CLOCK)
    seed(seed_db, CLOCK.now())
    seed_db.dispose()

    with FakeSlack() as slack:
        slack.add_channel(CHANNEL, name="incidents")
        settings = settings_for(url, slack)
        client = WebClient(token="xoxb-bench", base_url=slack.base_url)

        # Rebuild at start: a fresh engine each time, as after a restart; rounds interleaved.
        rebuild: list[float] = []
        floor: list[float] = []
        for _ in range(STARTS):
            reset_downtime(path)
            t = time.perf_counter()
            marked = floor_rebuild(path, CLOCK.now())
            floor.append(time.perf_counter() - t)
            assert marked == DOWNTIME, marked
            reset_downtime(path)
            db = Database(url, clock=CLOCK)
            scheduler = ReminderScheduler(
                database=db, settings=settings, kinds=reminder_kinds(), client=client
            )
            rebuild.append(scheduler.rebuild())  # the start's rebuild, the clock not started
            db.dispose()
            assert late_rows(path) == DOWNTIME
        # The downtime rows were measured; the lateness runs are about what comes due now.
        conn = sqlite3.connect(path)
        conn.execute("UPDATE reminders SET status = 'cancelled' WHERE dedupe_key LIKE 'down:%'")
        conn.commit()
        conn.close()
        # A database the bot has been running on holds each incident's stale check and the
        # digest; the seed does not: upkeep adds them once, here, as it did in production.
        db = Database(url, clock=CLOCK)
        ReminderScheduler(
            database=db, settings=settings, kinds=reminder_kinds(), client=client
        ).maintain()
        db.dispose()

        spread_channels = [f"C0SPREAD{n:03d}" for n in range(FIRING)]
        paced_channels = [f"C0PACED{n:02d}" for n in range(PACED_CHANNELS)]
        two_channels = [f"C0TWO{n:03d}" for n in range(FIRING)]
        threads(slack, spread_channels, "spread", 1)
        threads(slack, paced_channels, "paced", 1 + FIRING)
        threads(slack, two_channels, "two", 1 + 2 * FIRING)
        manners = slack.realistic(SlackManners(latency=SLACK_LATENCY_S))
        time.sleep(manners.post_burst * SLACK_PACE_S)  # every channel's budget full again

        db = Database(url, clock=CLOCK)
        scheduler = ReminderScheduler(
            database=db, settings=settings, kinds=reminder_kinds(), client=client
        )
        scheduler.start()  # with its upkeep at start (2,000 incidents to look over)
        spread_due = schedule(db, 1, CLOCK.now() + dt.timedelta(seconds=1), "spread")
        spread_posts = wait_posts(slack, spread_due, 30)
        spread = lateness(spread_posts, spread_due)

        paced_due = schedule(db, 1 + FIRING, CLOCK.now() + dt.timedelta(seconds=1), "paced")
        paced_posts = wait_posts(slack, paced_due, 60)
        paced = lateness(paced_posts, paced_due)
        scheduler.shutdown()
        db.dispose()
        per_channel: dict[str, list[float]] = {}
        for c, late in zip(paced_posts, paced, strict=True):
            per_channel.setdefault(c.args["channel"], []).append(late)
        physical = {
            ch: max(0, len(lates) - manners.post_burst) * SLACK_PACE_S + SLACK_LATENCY_S
            for ch, lates in per_channel.items()
        }
        pace_ratio = max(max(lates) / physical[ch] for ch, lates in per_channel.items())

        bots = [SchedulerProcess(url, slack, tmp) for _ in range(2)]
        try:
            for bot in bots:
                bot.started()
            db = Database(url, clock=CLOCK)
            two_due = schedule(db, 1 + 2 * FIRING, CLOCK.now() + dt.timedelta(seconds=1), "two")
            two_posts = wait_posts(slack, two_due, 30)
        finally:
            for bot in bots:
                bot.stop()
        two = lateness(two_posts, two_due)
        with db.read_session() as session:
            owners = session.execute(
                text("SELECT DISTINCT claimed_by FROM reminders WHERE dedupe_key LIKE 'two:%'")
            ).all()
        db.dispose()
        rate_limited = sum(1 for c in slack.calls_for("chat.postMessage") if c.status == 429)
        # The latency the fake put before the reminders' posts (not the set-up's card posts).
        waits = [c.latency for c in (*spread_posts, *paced_posts, *two_posts)]
        slack_latency_ms = round(1000 * statistics.mean(waits), 1)

    rebuild_s = statistics.median(rebuild)
    floor_s = statistics.median(floor)
    result = {
        "bench": "reminders",
        "pending": INCIDENTS * PER_INCIDENT,
        "incidents": INCIDENTS,
        "came_due_while_down": DOWNTIME,
        "rebuild_ms_p50": round(rebuild_s * 1000, 3),
        "rebuild_ms_max": round(max(rebuild) * 1000, 3),
        "floor_rebuild_ms_p50": round(floor_s * 1000, 3),
        "slack_latency_ms": slack_latency_ms,
        "slack_pace_s_per_channel": SLACK_PACE_S,
        "fired": len(spread),
        "channels": len(spread_channels),
        "lateness_p50_ms": round(pct(spread, 0.50) * 1000, 1),
        "lateness_p99_ms": round(pct(spread, 0.99) * 1000, 1),
        "lateness_max_ms": round(max(spread) * 1000, 1),
        "paced_channels": PACED_CHANNELS,
        "paced_lateness_p99_ms": round(pct(paced, 0.99) * 1000, 1),
        "paced_physical_limit_ms": round(max(physical.values()) * 1000),
        "pace_ratio": round(pace_ratio, 3),
        "two_processes_fired": len(two),
        "two_processes_posting": len([o for (o,) in owners if o]),
        "two_processes_lateness_p99_ms": round(pct(two, 0.99) * 1000, 1),
        "duplicates": 0,  # lateness() refuses a run with a duplicate or a missing post
        "early": sum(1 for x in spread + paced + two if x < 0),
        "slack_429": rate_limited,
        "ratio": round(rebuild_s / floor_s, 3),
    }
    print(
        f"rebuild {result['rebuild_ms_p50']} ms vs raw SQL {result['floor_rebuild_ms_p50']} ms; "
        f"{FIRING} due at once in {FIRING} channels: lateness p99 {result['lateness_p99_ms']} ms; "
        f"in {PACED_CHANNELS} channels: p99 {result['paced_lateness_p99_ms']} ms "
        f"({result['pace_ratio']}x Slack's pace); two processes: p99 "
        f"{result['two_processes_lateness_p99_ms']} ms",
        file=sys.stderr,
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
