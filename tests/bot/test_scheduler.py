"""The reminder scheduler against a real database and the fake Slack Web API.

In-process tests drive `ReminderScheduler`; the restart and scale-out tests run real bot
processes (`python -m bot.scheduler`) and kill them with SIGKILL.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from slack_sdk import WebClient
from sqlalchemy import select

from bot.clock import SystemClock
from bot.reminder_kinds import reminder_kinds
from bot.scheduler import MAINTAIN_JOB, POST_WORKERS, TICK_JOB, ReminderScheduler
from bot.settings import AppConfig, EnvSettings, Settings
from commands.deadlines import delivery, gdpr
from commands.deadlines import queue as dl
from commands.deadlines.policy import DeadlinePolicy
from commands.incidents import open_incident
from storage.db import Database
from storage.models import Incident, Reminder, TimelineEvent
from tests.conftest import POSTGRES_URL, reset_postgres
from tests.slack_fake import Call, FakeSlack

pytestmark = pytest.mark.dates  # CI reruns these with the clock shifted (.ci/run)

REPO = Path(__file__).resolve().parents[2]
CHANNEL = "C0INCIDENT"


def make_settings(url: str, slack: FakeSlack, **deadlines: Any) -> Settings:
    env = EnvSettings.model_validate(
        {
            "database_url": url,
            "slack_bot_token": "xoxb-test",
            "slack_signing_secret": "secret",
            "slack_api_url": slack.base_url,
        }
    )
    config = AppConfig.model_validate(
        {
            "slack": {"incident_channel": CHANNEL},
            "contacts": {"slack_usergroup": "S0IRTEAM"},
            "deadlines": deadlines,
        }
    )
    return Settings(env=env, config=config)


@pytest.fixture
def running(database: Database, fake_slack: FakeSlack) -> Iterator[Any]:
    """Start a scheduler (with the given deadline settings); stopped after the test."""
    started: list[ReminderScheduler] = []

    def start(
        poll: float = 10, batch: int = 50, post_workers: int = POST_WORKERS, **deadlines: Any
    ) -> ReminderScheduler:
        settings = make_settings(database.url, fake_slack, **deadlines)
        client = WebClient(token="xoxb-test", base_url=fake_slack.base_url)
        scheduler = ReminderScheduler(
            database=database,
            settings=settings,
            kinds=reminder_kinds(),
            client=client,
            poll_seconds=poll,
            maintain_at_start=False,
            batch=batch,
            post_workers=post_workers,
        )
        scheduler.start()
        started.append(scheduler)
        return scheduler

    yield start
    for scheduler in started:
        scheduler.shutdown()


def reminder_posts(slack: FakeSlack) -> list[Any]:
    return [c for c in slack.calls_for("chat.postMessage", ok_only=True) if is_reminder_post(c)]


def is_reminder_post(call: Any) -> bool:
    return (call.args.get("metadata") or {}).get("event_type") == "incident_bot_reminder"


def posted_ids(slack: FakeSlack) -> list[int]:
    return [int(c.args["metadata"]["event_payload"]["reminder_id"]) for c in reminder_posts(slack)]


def new_incident(database: Database, slack: FakeSlack, *, owner: str = "U0OWNER") -> Incident:
    """An incident whose card thread exists in the fake Slack."""
    client = WebClient(token="xoxb-test", base_url=slack.base_url)
    parent = client.chat_postMessage(channel=CHANNEL, text="card")
    with database.session() as session:
        incident = open_incident(session=session, title="ssh brute force", created_by=owner)
        incident.channel_id = CHANNEL
        incident.thread_ts = parent["ts"]
        incident.card_ts = parent["ts"]
    return incident


def wait_quiet(scheduler: ReminderScheduler, database: Database, timeout: float = 5) -> None:
    """Return once nothing more can be posted now: no reminder is due and none is in flight.

    A state, not a pause: after it, any further post would need a new pending row.
    """
    deadline = time.monotonic() + timeout
    while True:
        with database.read_session() as session:
            due = session.scalars(
                select(Reminder.id).where(
                    Reminder.status == "pending", Reminder.due_at <= database.clock.now()
                )
            ).all()
        if not due and scheduler.idle():
            return
        assert time.monotonic() < deadline, f"reminders {due} still due"
        time.sleep(0.02)


def on_clock(database: Database, call: Call) -> dt.datetime:
    """When the fake Slack saw `call`, on the test's clock (it stamps calls with wall time)."""
    return database.clock.now() - dt.timedelta(seconds=time.time() - call.at)


def test_reminder_due_in_one_second_fires_once(database, fake_slack, running) -> None:
    incident = new_incident(database, fake_slack)
    scheduler = running()
    # Never APScheduler's default 1 s grace, which silently drops a late wake-up.
    jobs = scheduler._scheduler.get_jobs()
    assert {TICK_JOB, MAINTAIN_JOB} <= {j.id for j in jobs}
    assert all(j.misfire_grace_time is None for j in jobs)
    due = database.clock.now() + dt.timedelta(seconds=1)
    with database.session() as session:
        dl.schedule_reminder(
            session=session,
            incident=incident,
            kind="followup",
            due_at=due,
            dedupe_key="t:1",
            message="check the snapshot copies",
        )
    call = fake_slack.wait_for("chat.postMessage", lambda c: "snapshot" in c.args.get("text", ""))
    fired_at = on_clock(database, call)
    # On time: never early; late only by scheduling noise (generous for slow, loaded CI
    # machines: a missed wake-up would wait for the 10 s poll). Lateness is bench.reminders'.
    assert due <= fired_at < due + dt.timedelta(seconds=3)
    wait_quiet(scheduler, database)
    assert len(reminder_posts(fake_slack)) == 1
    assert call.args["thread_ts"] == incident.thread_ts
    assert "<@U0OWNER>" in call.args["text"] and "<!subteam^S0IRTEAM>" in call.args["text"]
    with database.read_session() as session:
        row = session.scalars(select(Reminder).where(Reminder.dedupe_key == "t:1")).one()
        assert (row.status, row.late) == ("sent", False)
        events = session.scalars(
            select(TimelineEvent).where(TimelineEvent.kind == "reminder.followup")
        ).all()
    assert len(events) == 1 and events[0].actor == "scheduler"


def follow_up_each(
    database: Database, incidents: list[Incident], *, due: dt.datetime, name: str
) -> None:
    """One follow-up reminder per incident, all due at `due`: "<name> reminder <n>"."""
    with database.session() as session:
        for n, incident in enumerate(incidents):
            dl.schedule_reminder(
                session=session,
                incident=session.get(Incident, incident.id),
                kind="followup",
                due_at=due,
                dedupe_key=f"{name}:{n}",
                message=f"{name} reminder {n}",
            )


def test_reminders_due_at_once_post_in_parallel_across_channels_at_slacks_pace_in_each(
    database, fake_slack, running
) -> None:
    """12 reminders due together in 4 channels (three incidents' threads in each), Slack
    taking 0.5 s per post and allowing one post per second per channel after a burst of 3:
    one after the other they would take 6 s; in parallel lanes each channel's first two
    (the writer's burst) land at once, the third a second later, in order, with no 429."""
    fake_slack.delay("chat.postMessage", 0.5)
    fake_slack.channel_rate_limit(1.0, burst=3)
    channels = [f"C0LANE{n}" for n in range(4)]
    incidents = []
    for n, channel in enumerate(channels * 3):
        if n < len(channels):
            fake_slack.add_channel(channel, name=f"lane-{n}")
        parent = fake_slack.handle_api(
            "chat.postMessage", {"channel": channel, "text": "card"}, {"authorization": "x"}
        )[1]
        with database.session() as session:
            incident = open_incident(session=session, title=f"lane {n}", created_by="U0OWNER")
            incident.channel_id, incident.thread_ts = channel, parent["ts"]
        incidents.append(incident)
    time.sleep(3.0)  # the cards' posts leave every channel's budget full again
    scheduler = running()
    due = database.clock.now() + dt.timedelta(seconds=0.3)
    follow_up_each(database, incidents, due=due, name="lane")
    fake_slack.wait_for("chat.postMessage", is_reminder_post, count=12, timeout=15)
    wait_quiet(scheduler, database)
    posts = reminder_posts(fake_slack)
    assert len(posts) == 12 and sorted(posted_ids(fake_slack)) == sorted(
        set(posted_ids(fake_slack))
    )
    assert scheduler.stats.rate_limited == 0
    assert not [c for c in fake_slack.calls_for("chat.postMessage") if c.status == 429]
    late = sorted((on_clock(database, c) - due).total_seconds() for c in posts)
    # Measured from the first post, which lands 0.5 s (Slack's pace) plus the machine's
    # scheduling noise after it was due: 1.2 s of noise once on a slow, loaded CI machine.
    assert 0 <= late[0] < 3.0, late
    assert late[7] - late[0] < 1.0, late  # two per channel: together (one by one: 3.5 s)
    assert late[-1] - late[0] < 2.0, late  # the third: about a second later (not 5.5 s)
    for channel in channels:  # in due order
        mine = [c for c in posts if c.args["channel"] == channel]
        numbers = [int(c.args["text"].rsplit(" ", 1)[1]) for c in mine]
        assert numbers == sorted(numbers) and len(numbers) == 3


def test_while_its_lanes_are_full_a_scheduler_claims_no_more(database, fake_slack, running) -> None:
    """Rows a process cannot post yet stay pending, for another replica to claim: with two
    posting threads and Slack taking 1 s a post, 6 reminders due at once in 6 channels are
    claimed 2 at a time, as the lanes drain (the timer used to re-fire at once for the rows
    already due and claim them all, leaving a second replica nothing)."""
    fake_slack.delay("chat.postMessage", 1.0)
    channels = [f"C0FULL{n}" for n in range(6)]
    incidents = []
    for n, channel in enumerate(channels):
        fake_slack.add_channel(channel, name=f"full-{n}")
        with database.session() as session:
            incident = open_incident(session=session, title=f"full {n}", created_by="U0OWNER")
            incident.channel_id = channel
        incidents.append(incident)
    scheduler = running(batch=2, post_workers=2)
    due = database.clock.now()
    follow_up_each(database, incidents, due=due, name="full")

    def claimed() -> int:
        with database.read_session() as session:
            return len(
                session.scalars(
                    select(Reminder.id).where(
                        Reminder.dedupe_key.like("full:%"), Reminder.status != "pending"
                    )
                ).all()
            )

    time.sleep(0.6)  # the first two are being posted (Slack answers after 1 s)
    assert claimed() == 2
    fake_slack.wait_for("chat.postMessage", is_reminder_post, count=6, timeout=15)
    wait_quiet(scheduler, database)
    assert claimed() == 6 and len(reminder_posts(fake_slack)) == 6


def test_a_recording_the_database_aborted_is_made_again_for_every_posted_reminder(
    database, fake_slack, running, monkeypatch
) -> None:
    """A deadlock or a lost connection aborts the recorder's whole transaction, which a
    savepoint cannot undo: every reminder posted in that batch is recorded again, alone."""
    from sqlalchemy.exc import OperationalError

    real = delivery.record_fired
    calls: list[int] = []

    def aborting(**kwargs: Any) -> Any:
        calls.append(kwargs["delivery"].reminder_id)
        if len(calls) == 1:
            raise OperationalError("INSERT ...", {}, Exception("deadlock detected"))
        return real(**kwargs)

    monkeypatch.setattr(delivery, "record_fired", aborting)
    with database.session() as session:
        incidents = [
            open_incident(session=session, title=f"batch {n}", created_by="U0OWNER")
            for n in range(3)
        ]
        for n, incident in enumerate(incidents):
            incident.channel_id = f"C0BATCH{n}"
            fake_slack.add_channel(incident.channel_id, name=f"batch-{n}")
    scheduler = running()
    follow_up_each(
        database, incidents, due=database.clock.now() + dt.timedelta(seconds=0.2), name="batch"
    )
    fake_slack.wait_for("chat.postMessage", is_reminder_post, count=3, timeout=15)
    wait_quiet(scheduler, database)
    assert scheduler.drain(10)
    with database.read_session() as session:
        rows = session.scalars(select(Reminder)).all()
        events = session.scalars(
            select(TimelineEvent).where(TimelineEvent.kind == "reminder.followup")
        ).all()
    assert len(calls) > 3  # the aborted one was made again
    assert [r.status for r in rows] == ["sent"] * 3
    assert len(events) == 3


def test_one_reminder_that_cannot_be_prepared_does_not_hold_back_the_others(
    database, fake_slack
) -> None:
    """Reminders due together are prepared in one transaction; when one of them fails, the
    rest are prepared one by one and posted, and the failing one is retried later."""
    incident = new_incident(database, fake_slack)

    def followup(*, reminder, base, **_: Any) -> delivery.Delivery:
        if reminder.message == "boom":
            raise RuntimeError("cannot say this one")
        return base

    kinds = reminder_kinds()
    kinds = type(kinds)(deliver={**kinds.deliver, "followup": followup}, after_post={})
    scheduler = ReminderScheduler(
        database=database,
        settings=make_settings(database.url, fake_slack),
        kinds=kinds,
        client=WebClient(token="xoxb-test", base_url=fake_slack.base_url),
        maintain_at_start=False,
    )
    with database.session() as session:
        for n, message in enumerate(["first", "boom", "third"]):
            dl.schedule_reminder(
                session=session,
                incident=session.get(Incident, incident.id),
                kind="followup",
                due_at=database.clock.now(),
                dedupe_key=f"prep:{n}",
                message=message,
            )
    scheduler.start()
    try:
        fake_slack.wait_for("chat.postMessage", is_reminder_post, count=2, timeout=5)
        wait_quiet(scheduler, database)
    finally:
        scheduler.shutdown()
    texts = [c.args["text"] for c in reminder_posts(fake_slack)]
    assert len(texts) == 2 and not [t for t in texts if "boom" in t]
    assert [t for t in texts if "first" in t] and [t for t in texts if "third" in t]
    with database.read_session() as session:
        boom = session.scalars(select(Reminder).where(Reminder.dedupe_key == "prep:1")).one()
    assert boom.status == "pending" and "cannot say this one" in boom.payload["last_error"]


def test_personal_data_clock_posts_reminders_then_overdue_until_notified(
    database, fake_slack, running
) -> None:
    # 0.0004 h = 1.44 s to the deadline; a reminder 0.0003 h (1.08 s) before it; overdue
    # alerts every 0.0001 h (0.36 s): the whole 72-hour story in about three seconds.
    incident = new_incident(database, fake_slack)
    scheduler = running(
        gdpr_hours=0.0004, reminder_hours_before=[0.0003], overdue_every_hours=0.0001
    )
    with database.session() as session:
        target = session.get(Incident, incident.id)
        assert gdpr.start_clock(
            session=session, incident=target, actor="U0OWNER", policy=scheduler.policy
        )
        aware_at = target.aware_at

    def texts() -> list[str]:
        return [c.args["text"] for c in reminder_posts(fake_slack)]

    fake_slack.wait_for("chat.postMessage", is_reminder_post, count=4, timeout=5)
    with database.session() as session:
        target = session.get(Incident, incident.id)
        gdpr.record_notice(session=session, incident=target, actor="U0OWNER", reference="ICO-123")
    wait_quiet(scheduler, database)
    with database.read_session() as session:
        left = session.scalars(
            select(Reminder).where(
                Reminder.incident_id == incident.id, Reminder.status == "pending"
            )
        ).all()
        sent = session.scalars(
            select(Reminder).where(Reminder.incident_id == incident.id, Reminder.status == "sent")
        ).all()
    # Nothing left to fire for this incident, and every post is one sent row: no alert can
    # follow the notice.
    assert left == [], "an overdue alert is still scheduled after notified"
    assert len(texts()) == len(sent)

    first, deadline, overdue = texts()[0], texts()[1], texts()[2:]
    assert "regulator notice for *INC-1* is due in" in first
    assert "GDPR deadline reached" in deadline
    assert overdue and all("GDPR notice OVERDUE" in t for t in overdue)
    assert all("<@U0OWNER>" in t and "<!subteam^S0IRTEAM>" in t for t in texts())
    # Posted on time relative to the clock's due times.
    at = [on_clock(database, c) for c in reminder_posts(fake_slack)]
    # Never early; late by at most CI noise (one slow, loaded run took 1.2 s to post).
    assert aware_at + dt.timedelta(seconds=0.36) <= at[0] < aware_at + dt.timedelta(seconds=2.4)
    assert aware_at + dt.timedelta(seconds=1.44) <= at[1] < aware_at + dt.timedelta(seconds=3.5)
    with database.read_session() as session:
        rows = session.scalars(select(Reminder).where(Reminder.incident_id == incident.id)).all()
        kinds = [
            e.kind
            for e in session.scalars(
                select(TimelineEvent)
                .where(TimelineEvent.incident_id == incident.id)
                .order_by(TimelineEvent.seq)
            )
        ]
    assert {r.status for r in rows if r.kind == "gdpr_overdue"} >= {"cancelled"}
    assert not [r for r in rows if r.status == "pending"]
    assert kinds.count("reminder.gdpr") == 2
    assert kinds.count("reminder.gdpr_overdue") == len(overdue)
    # The notice cancels what is pending in its own transaction, and says so right after it;
    # an overdue alert already claimed when it committed is dropped unposted instead (on a
    # slow machine that can be the only one left, and the notice then cancels nothing).
    cancelled = [r for r in rows if r.status == "cancelled"]
    dropped = [r for r in cancelled if (r.payload or {}).get("cancelled")]
    notified = kinds.index("incident.notified")
    if len(dropped) < len(cancelled):
        assert kinds[notified + 1] == "reminders.cancelled", kinds
    else:
        assert "reminders.cancelled" not in kinds, kinds


def test_reminder_scheduled_after_start_wakes_the_timer(database, fake_slack, running) -> None:
    """The timer is armed 10 s ahead (poll); a new earlier row must re-arm it at once."""
    incident = new_incident(database, fake_slack)
    scheduler = running()
    assert (
        scheduler._armed_at is not None
        and scheduler._armed_at > database.clock.now() + dt.timedelta(seconds=5)
    )
    due = database.clock.now() + dt.timedelta(seconds=0.3)
    with database.session() as session:
        dl.schedule_reminder(
            session=session, incident=incident, kind="followup", due_at=due, dedupe_key="w"
        )
    call = fake_slack.wait_for("chat.postMessage", timeout=5)
    # Woken by the commit, not by the poll (armed more than 5 s ahead); CI noise allowed.
    assert on_clock(database, call) - due < dt.timedelta(seconds=3)


def test_transient_slack_failure_is_retried_and_permanent_one_is_recorded(
    database, fake_slack, running, monkeypatch
) -> None:
    monkeypatch.setattr(delivery, "RETRY_BACKOFF", (0.2, 0.2))
    incident = new_incident(database, fake_slack)
    running()
    fake_slack.fail_next("chat.postMessage", "internal_error", times=1)
    with database.session() as session:
        dl.schedule_reminder(
            session=session,
            incident=incident,
            kind="followup",
            due_at=database.clock.now(),
            dedupe_key="retry",
            message="retry me",
        )
    fake_slack.wait_for("chat.postMessage", lambda c: c.ok and "retry me" in c.args["text"])
    fake_slack.fail_next("chat.postMessage", "channel_not_found", times=1)
    with database.session() as session:
        dl.schedule_reminder(
            session=session,
            incident=incident,
            kind="followup",
            due_at=database.clock.now(),
            dedupe_key="lost",
            message="never lands",
        )
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        with database.read_session() as session:
            failed = session.scalars(
                select(TimelineEvent).where(TimelineEvent.kind == "reminder.failed")
            ).all()
        if failed:
            break
        time.sleep(0.05)
    assert len(failed) == 1 and "channel_not_found" in failed[0].summary
    with database.read_session() as session:
        retried = session.scalars(select(Reminder).where(Reminder.dedupe_key == "retry")).one()
    assert retried.status == "sent" and retried.payload["attempts"] == 1
    assert len([c for c in reminder_posts(fake_slack) if "retry me" in c.args["text"]]) == 1


def test_upkeep_keeps_running_clock_cards_current_and_schedules_digest_and_stale(
    database, fake_slack
) -> None:
    live = new_incident(database, fake_slack)
    done = new_incident(database, fake_slack)
    with database.session() as session:
        for inc in (live, done):
            gdpr.start_clock(
                session=session,
                incident=session.get(Incident, inc.id),
                actor="U1",
                policy=DeadlinePolicy(),
            )
        gdpr.record_notice(
            session=session, incident=session.get(Incident, done.id), actor="U1", reference="r"
        )
    refreshed: list[str] = []
    scheduler = ReminderScheduler(
        database=database,
        settings=make_settings(database.url, fake_slack),
        kinds=reminder_kinds(),
        client=WebClient(token="xoxb-test", base_url=fake_slack.base_url),
        refresh_card=refreshed.append,
        maintain_at_start=False,
    )
    scheduler.maintain()
    scheduler.maintain()  # within card_refresh_seconds: not again
    assert refreshed == ["INC-1"]
    with database.read_session() as session:
        pending = session.scalars(
            select(Reminder.kind).where(
                Reminder.status == "pending", Reminder.kind.in_(("stale", "digest"))
            )
        ).all()
    assert sorted(pending) == ["digest", "stale", "stale"]


def test_start_posts_a_reminder_whose_claimer_died_before_posting(
    database, fake_slack, running
) -> None:
    incident = new_incident(database, fake_slack)
    claimed_at = database.clock.now() - dt.timedelta(minutes=10)
    with database.session() as session:
        row = dl.schedule_reminder(
            session=session,
            incident=incident,
            kind="followup",
            due_at=claimed_at,
            dedupe_key="stalled",
            message="rotate the keys",
        )
        row.status, row.claimed_by, row.sent_at = "sent", "dead-worker", claimed_at
    scheduler = running()
    call = fake_slack.wait_for("chat.postMessage", is_reminder_post, timeout=3)
    assert "rotate the keys" in call.args["text"] and "may repeat" in call.args["text"]
    deadline = time.monotonic() + 5
    while True:  # the re-post is recorded on the row: from then on it cannot be posted again
        with database.read_session() as session:
            row = session.scalars(select(Reminder).where(Reminder.dedupe_key == "stalled")).one()
        if "ts" in row.payload:
            break
        assert time.monotonic() < deadline
        time.sleep(0.02)
    wait_quiet(scheduler, database)
    assert len(reminder_posts(fake_slack)) == 1
    assert scheduler.recover() == 0
    with database.read_session() as session:
        row = session.scalars(select(Reminder).where(Reminder.dedupe_key == "stalled")).one()
    assert row.claimed_by == scheduler.worker_id and row.payload["ts"] == call.response["ts"]


def test_database_errors_delay_reminders_but_never_stop_the_timer(
    database, fake_slack, running, monkeypatch
) -> None:
    incident = new_incident(database, fake_slack)
    real_claim, real_next = dl.claim_due, dl.next_due
    failures = {"claim": 1, "next": 1}

    def flaky_claim(**kw: Any) -> Any:
        if failures["claim"]:
            failures["claim"] -= 1
            raise OSError("database is gone")
        return real_claim(**kw)

    def flaky_next(**kw: Any) -> Any:
        if failures["next"]:
            failures["next"] -= 1
            raise OSError("database is gone")
        return real_next(**kw)

    monkeypatch.setattr(dl, "claim_due", flaky_claim)
    monkeypatch.setattr(dl, "next_due", flaky_next)
    running(poll=0.3)
    with database.session() as session:
        dl.schedule_reminder(
            session=session,
            incident=incident,
            kind="followup",
            due_at=database.clock.now(),
            dedupe_key="x",
        )
    # The retries take about a second; a loaded CI machine may need more.
    fake_slack.wait_for("chat.postMessage", is_reminder_post, timeout=15)
    assert failures == {"claim": 0, "next": 0}
    assert len(reminder_posts(fake_slack)) == 1


# -- real bot processes ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class BotProcess:
    """A real bot process against `url`, posting to the fake Slack; its own process group.

    `run`: `incident-bot run --http` (gunicorn master + worker, the scheduler started by
    serve()); `scheduler`: `python -m bot.scheduler` (a dedicated scheduler replica).
    """

    def __init__(self, url: str, slack: FakeSlack, tmp: Path, mode: str, *args: str) -> None:
        config = tmp / "incident-bot.yml"
        config.write_text(
            f"slack:\n  incident_channel: {CHANNEL}\ncontacts:\n  slack_usergroup: S0IRTEAM\n"
            "guardduty:\n  poll_interval_seconds: 0\n"  # no AWS calls from the bot process
        )
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "SLACK_BOT_TOKEN": "xoxb-test",
            "SLACK_SIGNING_SECRET": "secret",
            "INCIDENT_BOT_SLACK_API_URL": slack.base_url,
            "INCIDENT_BOT_CONFIG": str(config),
            "PYTHONPATH": str(REPO),
        }
        env.pop("SLACK_APP_TOKEN", None)
        if mode == "run":
            argv = [str(Path(sys.executable).with_name("incident-bot")), "run", "--http"]
            argv += ["--host", "127.0.0.1", "--port", str(free_port()), *args]
        else:
            argv = [sys.executable, "-m", "bot.scheduler", "--no-maintain", *args]
        self.lines: list[str] = []
        self._ready = threading.Event()
        self.worker_id = ""
        self.proc = subprocess.Popen(
            argv,
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # keep draining so the child never blocks on the pipe
            self.lines.append(line)
            found = READY.search(line)
            if found:
                self.worker_id = found.group(1)
                self._ready.set()

    def started(self, timeout: float = 30.0) -> BotProcess:
        if not self._ready.wait(timeout):
            self.kill()
            raise AssertionError("bot process did not start:\n" + "".join(self.lines[-30:]))
        return self

    def kill(self) -> None:
        """SIGKILL the whole process group (gunicorn's master and its workers)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


READY = re.compile(r"reminder scheduler (\S+) started")
WALL = SystemClock()


@pytest.fixture
def wall_database(db_url: str) -> Iterator[Database]:
    """The bot processes run on the machine's clock (bot/'s edge): so does this database."""
    from storage.migrate import upgrade

    upgrade(db_url)
    db = Database(db_url, clock=WALL)
    yield db
    db.dispose()


@pytest.mark.wall_processes
def test_sigkill_while_reminders_come_due_then_restart_posts_each_once_late(
    wall_database, fake_slack, tmp_path
) -> None:
    database = wall_database
    incident = new_incident(database, fake_slack)
    first = BotProcess(database.url, fake_slack, tmp_path, "run").started()
    try:
        start = WALL.now()
        with database.session() as session:
            for i, offset in enumerate((1.0, 1.2, 1.4)):
                dl.schedule_reminder(
                    session=session,
                    incident=incident,
                    kind="followup",
                    due_at=start + dt.timedelta(seconds=offset),
                    dedupe_key=f"kill:{i}",
                    message=f"follow-up {i}",
                )
        time.sleep(0.6)
    finally:
        first.kill()
    assert reminder_posts(fake_slack) == []
    time.sleep(max(0.0, (start + dt.timedelta(seconds=1.6) - WALL.now()).total_seconds()))
    assert reminder_posts(fake_slack) == []  # all three came due while nothing ran

    second = BotProcess(database.url, fake_slack, tmp_path, "run").started()
    try:
        fake_slack.wait_for(
            "chat.postMessage",
            is_reminder_post,
            count=3,
            timeout=3,  # posted on start, not after a poll interval (10 s)
        )
    finally:
        second.stop()  # a graceful stop: after it nothing more can be posted
    posts = reminder_posts(fake_slack)
    assert len(posts) == 3
    assert sorted(c.args["text"].split("follow-up ")[1][0] for c in posts) == ["0", "1", "2"]
    assert all("late" in c.args["text"] for c in posts)
    with database.read_session() as session:
        rows = session.scalars(select(Reminder).where(Reminder.dedupe_key.like("kill:%"))).all()
        events = session.scalars(
            select(TimelineEvent).where(TimelineEvent.kind == "reminder.followup")
        ).all()
    assert [(r.status, r.late, r.claimed_by) for r in rows] == [
        ("sent", True, second.worker_id)
    ] * 3
    assert len(events) == 3
    assert all('"late":true' in e.details for e in events)
    assert sorted(posted_ids(fake_slack)) == sorted(r.id for r in rows)


@pytest.mark.skipif(
    POSTGRES_URL is None,
    reason="needs PostgreSQL: CI (.ci/run) sets INCIDENT_BOT_TEST_POSTGRES_URL; SQLite cannot "
    "host two writer processes the way replicas share PostgreSQL",
)
@pytest.mark.wall_processes
def test_two_processes_on_postgresql_post_each_of_200_reminders_exactly_once(
    fake_slack, tmp_path
) -> None:
    from storage.migrate import upgrade

    assert POSTGRES_URL is not None
    reset_postgres(POSTGRES_URL)
    upgrade(POSTGRES_URL)
    database = Database(POSTGRES_URL, clock=WALL)
    # Slack's latency: one process posting 5 at a time then keeps up with at most 50 a
    # second, fewer than come due, so the other finds rows to claim however fast the machine
    # (on a slow one, without it, one process once claimed all 200).
    fake_slack.delay("chat.postMessage", 0.1)
    bots = [
        BotProcess(POSTGRES_URL, fake_slack, tmp_path, "scheduler", "--poll", "0.2", "--batch", "5")
        for _ in range(2)
    ]
    try:
        for bot in bots:  # both were launched before either is awaited
            bot.started()
        start = WALL.now() + dt.timedelta(seconds=0.5)
        with database.session() as session:
            incidents = [
                open_incident(session=session, title=f"incident {n}", created_by="U0OWNER")
                for n in range(20)
            ]
            # A channel each: the bot keeps to Slack's ~1 post a second per channel, so 200
            # reminders in one channel would take minutes however many processes post them.
            for n, incident in enumerate(incidents):
                incident.channel_id = f"C0SCALE{n:02d}"
                fake_slack.add_channel(incident.channel_id, name=f"scale-{n}")
            for n in range(200):
                dl.schedule_reminder(
                    session=session,
                    incident=incidents[n % 20],
                    kind="followup",
                    due_at=start + dt.timedelta(milliseconds=5 * n),
                    dedupe_key=f"scale:{n}",
                    message=f"reminder {n}",
                )
        fake_slack.wait_for(
            "chat.postMessage",
            is_reminder_post,
            count=200,
            timeout=30,
        )
    finally:  # graceful stops: after them the posts are final, duplicates included
        for bot in bots:
            bot.stop()
    ids = posted_ids(fake_slack)
    assert len(ids) == 200
    assert len(set(ids)) == 200
    with database.read_session() as session:
        rows = session.scalars(select(Reminder)).all()
        events = session.scalars(
            select(TimelineEvent).where(TimelineEvent.kind == "reminder.followup")
        ).all()
    database.dispose()
    assert {r.status for r in rows} == {"sent"}
    assert set(ids) == {r.id for r in rows}
    # Both replicas did part of the work (else this would prove nothing about sharing).
    assert {r.claimed_by for r in rows} == {b.worker_id for b in bots}
    assert len(events) == 200
