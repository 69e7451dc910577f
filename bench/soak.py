"""Soak: the bot under a steady mix for SOAK_MINUTES (default 10), watched for growth.

    make soak                       # SOAK_MINUTES=10
    SOAK_MINUTES=3 python -m bench.soak

The real bot process (`incident-bot run --http`: gunicorn master and worker) runs against the
realistic fake Slack (tests/slack_fake.py `realistic()`: latency, per-channel and tiered rate
limits, 429 + Retry-After), moto_server behind the fault-injecting proxy
(tests/reliability/aws_proxy.py) and a SQLite file. Every second it gets a share of:
GuardDuty findings (new ones and repeats, over 20 tagged instances), slash commands (`open`,
`note`, `status`, `list`), "Take it" clicks, and reminders coming due (scheduled into the
database, as the bot's own commands do); once a minute a few faults (Slack 500 on a post,
a 429 burst on chat.update, an AWS 503).

Each minute it reports the worker's RSS, open file descriptors and threads, the database's
size on disk, requests sent, non-200 answers and the p99 answer time. At the end: the RSS and
thread slopes (least squares over the samples after SOAK_WARMUP_MINUTES, default 2: imports,
caches and pools filling; RSS still rises by ~2 MB in the second minute). It fails (exit 1)
when RSS grows faster than SOAK_MAX_RSS_MB_PER_MIN (default 1.0; judged only with 3 minutes
or more after warm-up), threads by more than SOAK_MAX_THREAD_GROWTH (default 4) after
warm-up, or any answer is a 5xx or lost. Last line: {"bench": "soak", ...}.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

REPO_ROOT = Path(__file__).resolve().parents[1]
SECRET = "soak-signing-secret"
TOKEN = "soak-ingest-token"
CHANNEL = "C0INCIDENT"
USERS = ("W111", "U0SOAK1", "U0SOAK2")
SAMPLE_EVERY = 5.0  # seconds


@dataclass
class Minute:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    lost: int = 0


@dataclass
class Sample:
    at: float  # minutes since the start
    rss_mb: float
    fds: int
    threads: int
    db_mb: float


def worker_pid(master: int) -> int:
    """gunicorn's (single) worker: the app, its pools and caches live there."""
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return int(children[0]) if children else master


def sample(pid: int, db: Path, start: float) -> Sample:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss_kb = int(fields["VmRSS"].split()[0])
    size = sum(p.stat().st_size for p in db.parent.glob(db.name + "*"))
    return Sample(
        at=(time.monotonic() - start) / 60,
        rss_mb=rss_kb / 1024,
        fds=len(os.listdir(f"/proc/{pid}/fd")),
        threads=int(fields["Threads"]),
        db_mb=size / 1e6,
    )


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope (per minute)."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / var if var else 0.0


def p99(values: list[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


class Load:
    """The steady mix, sent from a few threads; every answer timed into its minute."""

    def __init__(self, url: str, start: float, bodies: list[bytes], database: Any) -> None:
        from tests.slack_signing import SlackSender

        self.url = url
        self.start = start
        self.minutes: dict[int, Minute] = defaultdict(Minute)
        self.lock = threading.Lock()
        self.sender = SlackSender(f"{url}/slack/events", SECRET)
        self.bodies = bodies
        self.database = database
        self.rng = random.Random(18)
        self.opened = 0
        self.sent = 0

    def _timed(self, send: Any) -> None:
        began = time.monotonic()
        minute = int((began - self.start) // 60)
        try:
            status = send().status_code
        except requests.RequestException:
            with self.lock:
                self.minutes[minute].lost += 1
            return
        with self.lock:
            self.minutes[minute].latencies.append(time.monotonic() - began)
            self.minutes[minute].statuses[status] += 1
            self.sent += 1

    def finding(self) -> None:
        body = self.bodies[self.rng.randrange(len(self.bodies))]
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
        self._timed(
            lambda: requests.post(
                f"{self.url}/guardduty/events", data=body, headers=headers, timeout=30
            )
        )

    def command(self, slack: Any) -> None:
        from tests.slack_signing import slash_command_body

        n = self.rng.randrange(4)
        key = f"INC-{self.rng.randint(1, max(1, self.opened))}"
        text = (
            f"open Soak incident {self.opened + 1}"
            if n == 0 or not self.opened
            else (f"note {key} soak note {self.sent}", f"status {key}", "list")[n - 1]
        )
        if text.startswith("open"):
            self.opened += 1
        body = slash_command_body(
            "/incident",
            text,
            user_id=self.rng.choice(USERS),
            response_url=slack.response_url(f"soak-{self.sent}"),
            trigger_id=f"{self.sent}.{self.rng.randrange(10**12)}.soak",
        )
        self._timed(lambda: self.sender.post(body, timeout=30))

    def click(self, slack: Any) -> None:
        from tests.slack_signing import block_actions_payload, interactivity_body

        if not self.opened:
            return
        key = f"INC-{self.rng.randint(1, self.opened)}"
        payload = block_actions_payload(
            "incident_take",
            key,
            user_id=self.rng.choice(USERS),
            message_ts=f"{int(time.time())}.{self.rng.randrange(10**6):06d}",
            response_url=slack.response_url(f"take-{self.sent}"),
        )
        payload["trigger_id"] = f"{self.sent}.{self.rng.randrange(10**12)}.soak"
        self._timed(lambda: self.sender.post(interactivity_body(payload), timeout=30))

    def reminder(self) -> None:
        from sqlalchemy import select

        from commands.deadlines import queue as dl
        from storage.models import Incident

        with self.database.session() as session:
            incident = session.scalars(select(Incident).order_by(Incident.id.desc())).first()
            if incident is None:
                return
            dl.schedule_reminder(
                session=session,
                incident=incident,
                kind="followup",
                due_at=self.database.clock.now() + dt.timedelta(seconds=5),
                dedupe_key=f"soak:{time.monotonic_ns()}",
                message="soak follow-up",
            )


def run(minutes: float, tmp: Path) -> dict[str, Any]:
    sys.path.insert(0, str(REPO_ROOT))
    from sqlalchemy import func, select

    from bench._proxy import MotoServer, free_port
    from bench.ack import start_server
    from bench.storm import make_storm, tagged_instances
    from bot.clock import SystemClock
    from storage.db import Database
    from storage.migrate import upgrade
    from storage.models import Incident, Reminder, TimelineEvent
    from tests.reliability.aws_proxy import FaultProxy
    from tests.slack_fake import FakeSlack

    with (
        FakeSlack() as slack,
        MotoServer() as moto,
        FaultProxy(moto.url, hold_seconds=2.0) as proxy,
    ):
        slack.add_channel(CHANNEL, name="incidents")
        for user in USERS:
            slack.add_user(user)
            slack.add_channel(user)
        slack.realistic()
        instances = tagged_instances(moto.url, 20)
        bodies = make_storm(findings=400, instances=instances, repeat_share=0.8)[0]
        db_path = tmp / "soak.db"
        url = f"sqlite:///{db_path}"
        upgrade(url)
        database = Database(url, clock=SystemClock())
        config = tmp / "incident-bot.yml"
        config.write_text(
            f"slack:\n  incident_channel: {CHANNEL}\n"
            "guardduty:\n  min_severity: 4.0\n  poll_interval_seconds: 0\n"
            "approvals:\n  auto_request_min_severity: null\n"
        )
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "SLACK_BOT_TOKEN": "xoxb-soak",
            "SLACK_SIGNING_SECRET": SECRET,
            "INCIDENT_BOT_SLACK_API_URL": slack.base_url,
            "INCIDENT_BOT_INGEST_TOKEN": TOKEN,
            "INCIDENT_BOT_CONFIG": str(config),
            "AWS_ENDPOINT_URL": proxy.url,
            "AWS_ACCESS_KEY_ID": "soak",
            "AWS_SECRET_ACCESS_KEY": "soak",
            "AWS_DEFAULT_REGION": "us-east-1",
            "PYTHONPATH": str(REPO_ROOT),
        }
        env.pop("SLACK_APP_TOKEN", None)
        port = free_port()
        argv = [str(Path(sys.executable).with_name("incident-bot")), "run", "--http"]
        argv += ["--host", "127.0.0.1", "--port", str(port)]
        proc = start_server(argv, env, port, tmp / "bot.log")
        start = time.monotonic()
        load = Load(f"http://127.0.0.1:{port}", start, bodies, database)
        samples: list[Sample] = []
        faults = 0
        stop = threading.Event()

        def sampler() -> None:
            pid = worker_pid(proc.pid)
            while not stop.wait(SAMPLE_EVERY):
                samples.append(sample(pid, db_path, start))

        def steady(every: float, act: Any) -> None:
            while not stop.is_set():
                began = time.monotonic()
                try:
                    act()
                except Exception as exc:  # a load bug must not end the soak silently
                    print(f"load error: {exc!r}", flush=True)
                stop.wait(max(0.0, every - (time.monotonic() - began)))

        threads = [
            threading.Thread(target=sampler, daemon=True),
            threading.Thread(target=steady, args=(1.0, load.finding), daemon=True),
            threading.Thread(target=steady, args=(1.0, lambda: load.command(slack)), daemon=True),
            threading.Thread(target=steady, args=(3.0, lambda: load.click(slack)), daemon=True),
            threading.Thread(target=steady, args=(15.0, load.reminder), daemon=True),
        ]
        for thread in threads:
            thread.start()
        report: list[dict[str, Any]] = []
        try:
            for minute in range(int(minutes)):
                # A few faults a minute: Slack 500 on a post, a 429 burst, an AWS 503.
                slack.fail_next("chat.postMessage", "internal_error")
                slack.rate_limit("chat.update", times=3, retry_after=1)
                proxy.arm("DescribeInstances", "503")
                faults += 3
                time.sleep(max(0.0, start + 60 * (minute + 1) - time.monotonic()))
                with load.lock:
                    m = load.minutes[minute]
                    row = {
                        "minute": minute + 1,
                        "requests": sum(m.statuses.values()),
                        "non_200": sum(n for s, n in m.statuses.items() if s != 200),
                        "lost": m.lost,
                        "p99_ms": round(p99(m.latencies) * 1000),
                    }
                last = samples[-1] if samples else None
                if last is not None:
                    row.update(
                        rss_mb=round(last.rss_mb, 1),
                        fds=last.fds,
                        threads=last.threads,
                        db_mb=round(last.db_mb, 2),
                    )
                report.append(row)
                print(json.dumps(row), flush=True)
        finally:
            stop.set()
            proc.terminate()  # a graceful stop drains the background pool: not under test
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        with database.read_session() as session:  # the work was done, not only answered
            done = {
                "incidents": session.scalar(select(func.count(Incident.id))),
                "timeline_events": session.scalar(select(func.count(TimelineEvent.id))),
                "reminders_sent": session.scalar(
                    select(func.count(Reminder.id)).where(Reminder.status == "sent")
                ),
            }
        database.dispose()
        statuses: dict[int, int] = defaultdict(int)
        for m in load.minutes.values():
            for status, n in m.statuses.items():
                statuses[status] += n
        warmup = float(os.environ.get("SOAK_WARMUP_MINUTES", "2"))
        warm = [s for s in samples if s.at >= warmup] or samples
        rss_slope = slope([(s.at, s.rss_mb) for s in warm])
        thread_growth = max(s.threads for s in warm) - warm[0].threads if warm else 0
        max_rss_slope = float(os.environ.get("SOAK_MAX_RSS_MB_PER_MIN", "1.0"))
        max_thread_growth = int(os.environ.get("SOAK_MAX_THREAD_GROWTH", "4"))
        judged = minutes - warmup >= 3
        server_errors = sum(n for s, n in statuses.items() if s >= 500)
        lost = sum(m.lost for m in load.minutes.values())
        return {
            "bench": "soak",
            "minutes": minutes,
            "requests": sum(statuses.values()),
            "statuses": dict(statuses),
            "lost": lost,
            "faults_injected": faults,
            **done,
            "slack_calls": len(slack.calls),
            "rss_mb_start": round(warm[0].rss_mb, 1) if warm else None,
            "rss_mb_end": round(samples[-1].rss_mb, 1) if samples else None,
            "rss_slope_mb_per_min": round(rss_slope, 3),
            "fds_slope_per_min": round(slope([(s.at, s.fds) for s in warm]), 3),
            "threads_slope_per_min": round(slope([(s.at, s.threads) for s in warm]), 3),
            "thread_growth": thread_growth,
            "db_mb_end": round(samples[-1].db_mb, 2) if samples else None,
            "p99_ms_worst_minute": max((r["p99_ms"] for r in report), default=0),
            # A slope over less than 3 minutes after warm-up is mostly warm-up: shown, not judged.
            "rss_judged": judged,
            "ok": (rss_slope <= max_rss_slope or not judged)
            and thread_growth <= max_thread_growth
            and server_errors == 0
            and lost == 0,
        }


def main() -> int:
    minutes = float(os.environ.get("SOAK_MINUTES", "10"))
    with tempfile.TemporaryDirectory() as tmp:
        result = run(minutes, Path(tmp))
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
