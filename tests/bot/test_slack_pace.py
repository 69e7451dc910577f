"""Slack's pace shared by every writer of one database (bot/slack_pace.py): posts to one
channel from several processes keep Slack's per-channel pace together, and a 429 on a Tier 3
method holds it for all of them."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.clock import SystemClock
from bot.slack_out import Pace, SlackWriter
from bot.slack_pace import PACE_CURSOR, SharedBuckets
from storage.clock import Clock, ManualClock
from storage.db import Database
from storage.migrate import upgrade
from storage.models import Cursor
from tests.clock import flowing, manual
from tests.slack_fake import Call, FakeSlack

REPO = Path(__file__).resolve().parents[2]
CHANNEL = "C0INCIDENT"
WRITER = (sys.executable, "-m", "tests.bot.pace_writer")
PACE = Pace()  # what the bot runs with: a burst of 2, then one post a second per channel


@pytest.fixture
def databases(db_url: str) -> Iterator[Callable[[Clock], Database]]:
    """Opens Databases on one migrated database, each with its own engine: writers built on
    them share nothing in memory, as two processes would not."""
    upgrade(db_url)
    opened: list[Database] = []

    def open_(clock: Clock) -> Database:
        opened.append(Database(db_url, clock=clock))
        return opened[-1]

    yield open_
    for database in opened:
        database.dispose()


def writer(slack: FakeSlack, database: Database, slept: list[float] | None = None) -> SlackWriter:
    client = WebClient(token="xoxb-test", base_url=slack.base_url, retry_handlers=[])
    if slept is None:
        return SlackWriter(client, database, pace=PACE)
    return SlackWriter(client, database, pace=PACE, sleep=slept.append)


def assert_one_pace(slack: FakeSlack, posts: list[Call], tags: set[str], count: int) -> None:
    """Every message landed once, none was refused, and Slack saw them at its pace: the k-th
    post (from 0) reached it no sooner than k - 1 seconds after the first (a burst of 2)."""
    assert not [c for c in slack.calls if c.status == 429]
    assert slack.unhandled_429s() == []
    texts = sorted(m["text"] for m in slack.messages(CHANNEL))
    assert texts == sorted(f"{tag} {n}" for tag in tags for n in range(count))
    assert {c.args["text"].split()[0] for c in posts} == tags
    # When each reached Slack (before its latency): the writers' pace, give or take how
    # long a loaded machine takes to send a request once its turn came.
    arrived = sorted(c.at - c.latency for c in posts)
    for k in range(2, len(arrived)):
        assert arrived[k] - arrived[0] >= (k - 1) / PACE.posts_per_second - 0.15, (k, arrived)


def test_writers_of_one_database_post_to_a_channel_at_one_pace(
    fake_slack: FakeSlack, databases: Callable[[Clock], Database]
) -> None:
    """Two writers with their own in-process state post to one channel together: without a
    shared budget each would spend its own burst and Slack would refuse the fourth post."""
    fake_slack.realistic()
    clock = flowing()  # the machine's pace, from T0: both "processes" read the same time
    writers = {tag: writer(fake_slack, databases(clock)) for tag in ("first", "second")}
    start = threading.Barrier(len(writers))

    def post(tag: str) -> None:
        start.wait(5)
        for n in range(3):
            writers[tag].call("chat_postMessage", patient=True, channel=CHANNEL, text=f"{tag} {n}")

    threads = [threading.Thread(target=post, args=(tag,)) for tag in writers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    posts = fake_slack.calls_for("chat.postMessage")
    assert_one_pace(fake_slack, posts, set(writers), 3)
    assert sum(w.stats.posts for w in writers.values()) == 6
    assert sum(w.stats.rate_limited for w in writers.values()) == 0


@pytest.mark.wall_processes
def test_two_processes_post_to_a_channel_at_slacks_pace(fake_slack: FakeSlack, db_url: str) -> None:
    """The same with two real processes (each its own SlackWriter and engine), started
    together on one database: SQLite's file, or PostgreSQL as replicas share it."""
    fake_slack.realistic()
    upgrade(db_url)
    procs = {
        tag: subprocess.Popen(
            [*WRITER, db_url, fake_slack.base_url, CHANNEL, tag, "3"],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for tag in ("left", "right")
    }
    try:
        for proc in procs.values():
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        for proc in procs.values():  # go: both at once
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        outputs = {tag: proc.communicate(timeout=60)[0] for tag, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
    for tag, proc in procs.items():
        assert proc.returncode == 0, outputs[tag]
        assert "posted 3 rate_limited 0" in outputs[tag], outputs[tag]
    assert_one_pace(fake_slack, fake_slack.calls_for("chat.postMessage"), set(procs), 3)


def test_a_writer_waits_for_the_tokens_another_took_and_for_its_429(
    fake_slack: FakeSlack, databases: Callable[[Clock], Database]
) -> None:
    """Time stands still (a manual clock for both the database and each writer's mirror):
    what one writer spent, or was told by a 429, is what the other waits for."""
    clock: ManualClock = manual()
    first_slept: list[float] = []
    second_slept: list[float] = []
    first = writer(fake_slack, databases(clock), first_slept)
    second = writer(fake_slack, databases(clock), second_slept)
    for out in (first, second):
        out.budget.clock = lambda: 0.0
    fake_slack.add_channel("C2")
    # The first spends the channel's burst, impatiently: it never waits, but it counts.
    for n in range(2):
        first.post(CHANNEL, {"text": f"now {n}"})
    assert second.budget.ready_in("post:" + CHANNEL) == 0.0  # its mirror has not heard yet
    second.call("chat_postMessage", patient=True, channel=CHANNEL, text="paced")
    assert second_slept == [pytest.approx(1.0)]
    assert second.budget.ready_in("post:" + CHANNEL) == pytest.approx(2.0)  # heard now
    second.call("chat_postMessage", patient=True, channel="C2", text="its own channel")
    assert second_slept == [pytest.approx(1.0)]
    # A reminder lane's call keeps the pace too, but tries once: its lane handles a 429.
    fake_slack.rate_limit("chat.postMessage", times=1, retry_after=5)
    with pytest.raises(SlackApiError):
        first.call("chat_postMessage", keep_pace=True, channel=CHANNEL, text="lane")
    assert first_slept == [pytest.approx(2.0)]  # behind the second's token, then the 429
    second_slept.clear()
    # chat.update (Tier 3, per workspace): a 429 told to the first holds it for the second.
    ts = fake_slack.calls_for("chat.postMessage")[0].response["ts"]
    fake_slack.rate_limit("chat.update", times=1, retry_after=4)
    first.call("chat_update", patient=True, channel=CHANNEL, ts=ts, text="a")
    assert first_slept == [pytest.approx(2.0), 4.0]
    second.call("chat_update", patient=True, channel=CHANNEL, ts=ts, text="b")
    assert second_slept == [pytest.approx(4.0)]
    assert len(fake_slack.calls_for("chat.update", ok_only=True)) == 2


def test_pacing_falls_back_to_the_process_when_the_database_cannot_keep_it(
    fake_slack: FakeSlack, tmp_path: Path
) -> None:
    """A database that cannot answer (here: one never migrated) does not hold Slack writes
    back: the writer keeps its own pace and posts."""
    database = Database(f"sqlite:///{tmp_path / 'empty.db'}", clock=SystemClock())
    try:
        slept: list[float] = []
        out = writer(fake_slack, database, slept)
        out.budget.clock = lambda: 0.0
        for n in range(3):
            out.call("chat_postMessage", patient=True, channel=CHANNEL, text=str(n))
    finally:
        database.dispose()
    assert slept == [pytest.approx(1.0)]
    assert len(fake_slack.calls_for("chat.postMessage", ok_only=True)) == 3


def test_a_due_time_written_on_another_clock_does_not_hold_posts_back(
    fake_slack: FakeSlack, databases: Callable[[Clock], Database]
) -> None:
    """A process on a clock days ahead (a test's, a badly skewed host) left the channel's due
    time far in the future: the bucket starts afresh instead of waiting days for it."""
    clock: ManualClock = manual()
    database = databases(clock)
    with database.session() as session:
        ahead = (clock.now() + dt.timedelta(days=3)).timestamp()
        session.add(Cursor(name=PACE_CURSOR + "post:" + CHANNEL, value=repr(ahead)))
    slept: list[float] = []
    out = writer(fake_slack, database, slept)
    for n in range(3):
        out.call("chat_postMessage", patient=True, channel=CHANNEL, text=str(n))
    assert slept == [pytest.approx(1.0)]  # the burst of two, then Slack's pace: as if new


def test_tokens_taken_at_once_by_many_threads_are_each_a_slot_of_their_own(
    databases: Callable[[Clock], Database],
) -> None:
    """A process's threads asking together share transactions (the first writes for those
    waiting behind it): still every token is a slot of its own, none lost or given twice."""
    buckets = SharedBuckets(databases(manual()))  # time stands still: slot n is n s ahead
    aheads: list[float | None] = []
    start = threading.Barrier(20)

    def take(key: str) -> None:
        start.wait(5)
        aheads.append(buckets.take(key, 1.0))

    threads = [threading.Thread(target=take, args=(f"post:C{n % 2}",)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(aheads) == [pytest.approx(n // 2 + 1) for n in range(20)]  # two channels
