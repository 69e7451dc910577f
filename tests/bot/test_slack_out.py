"""The one Slack writer: retries, permanent errors, shared pacing and the card's record."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from sqlalchemy import select

from bot.slack_out import Pace, SlackWriter, card_id
from storage.clock import ManualClock
from storage.db import Database
from storage.migrate import upgrade
from storage.models import TimelineEvent
from tests.clock import manual
from tests.slack_fake import FakeSlack


@pytest.fixture
def clock() -> ManualClock:
    return manual()


@pytest.fixture
def db(db_url: str, clock: ManualClock) -> Iterator[Database]:
    upgrade(db_url)
    database = Database(db_url, clock=clock)
    yield database
    database.dispose()


def writer(slack: FakeSlack, db: Database) -> tuple[SlackWriter, list[float]]:
    slept: list[float] = []
    # No retry handlers: what the writer does with a 429 is what is under test.
    client = WebClient(token="xoxb-test", base_url=slack.base_url, retry_handlers=[])
    return SlackWriter(client, db, sleep=slept.append), slept


def test_a_patient_call_waits_out_retry_after(fake_slack: FakeSlack, db: Database) -> None:
    fake_slack.rate_limit("chat.postMessage", times=2, retry_after=3)
    out, slept = writer(fake_slack, db)
    posted = out.call("chat_postMessage", patient=True, channel="C0INCIDENT", text="hi")
    assert posted["ok"] and slept == [3.0, 3.0]
    assert (out.stats.posts, out.stats.rate_limited) == (1, 2)


def test_an_impatient_call_raises_the_429(fake_slack: FakeSlack, db: Database) -> None:
    fake_slack.rate_limit("chat.postMessage", times=1)
    out, slept = writer(fake_slack, db)
    with pytest.raises(SlackApiError):
        out.post("C0INCIDENT", {"text": "hi"})
    assert slept == []


def test_a_permanent_error_is_not_retried(fake_slack: FakeSlack, db: Database) -> None:
    fake_slack.fail_next("chat.postMessage", "channel_not_found", times=5)
    out, slept = writer(fake_slack, db)
    with pytest.raises(SlackApiError):
        out.call("chat_postMessage", patient=True, channel="C0INCIDENT", text="hi")
    assert slept == [] and len(fake_slack.calls_for("chat.postMessage")) == 1


def test_a_transient_error_is_retried_after_a_backoff(fake_slack: FakeSlack, db: Database) -> None:
    fake_slack.fail_next("chat.postMessage", "internal_error", times=2)
    out, slept = writer(fake_slack, db)
    assert out.call("chat_postMessage", patient=True, channel="C0INCIDENT", text="hi")["ok"]
    assert slept == [0.5, 1.0]


def test_the_pace_of_a_card_is_shared_by_writers_of_one_database(
    fake_slack: FakeSlack, db: Database, clock: ManualClock
) -> None:
    first, _ = writer(fake_slack, db)
    second, _ = writer(fake_slack, db)  # another process, as far as pacing goes
    card = card_id("incident", "INC-1")
    assert first.claim_turn(card, 10).wait == 0
    clock.advance(seconds=4)
    turn = second.claim_turn(card, 10)
    assert turn.wait == pytest.approx(6) and turn.silent_for == pytest.approx(4)
    assert first.claim_turn(card_id("incident", "INC-2"), 10).wait == 0  # per card
    clock.advance(seconds=6)
    assert second.claim_turn(card, 10) == (0, pytest.approx(10))
    assert first.claim_turn(card, 10).wait == pytest.approx(10)


def test_writers_claiming_a_new_cards_first_turn_at_once_all_get_an_answer(
    fake_slack: FakeSlack, db_url: str, clock: ManualClock
) -> None:
    """Eight writers, each on its own engine (as replicas would be), claim the first turn of
    a card no one has written: one gets it, the rest are told to wait (a read-then-insert let
    all but one fail on the cursor's key)."""
    upgrade(db_url)
    databases = [Database(db_url, clock=clock) for _ in range(8)]
    card = card_id("incident", "INC-9")
    turns: list[object] = []
    start = threading.Barrier(len(databases))

    def claim(database: Database) -> None:
        start.wait(5)
        try:
            turns.append(writer(fake_slack, database)[0].claim_turn(card, 10))
        except Exception as exc:  # what is under test: no writer may fail
            turns.append(exc)

    threads = [threading.Thread(target=claim, args=(d,)) for d in databases]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    finally:
        for database in databases:
            database.dispose()
    assert not [t for t in turns if isinstance(t, Exception)], turns
    assert sorted(t.wait for t in turns) == [0] + [pytest.approx(10)] * 7  # type: ignore[attr-defined]


def test_wait_turn_waits_at_most_one_interval(fake_slack: FakeSlack, db: Database) -> None:
    out, slept = writer(fake_slack, db)
    card = card_id("approval", 7)
    out.wait_turn(card, 1.0)
    out.wait_turn(card, 1.0)  # the clock stands still: one interval, then it goes ahead
    assert slept == [1.0]


def test_waiting_writers_take_successive_slots(
    fake_slack: FakeSlack, db: Database, clock: ManualClock
) -> None:
    first, slept_first = writer(fake_slack, db)
    second, slept_second = writer(fake_slack, db)  # another process
    card = card_id("approval", 8)
    assert first.wait_turn(card, 1.0) and slept_first == []
    # Both arrive within the interval: the second queues behind the first's slot, not beside it.
    assert first.wait_turn(card, 1.0) and slept_first == [1.0]
    clock.advance(seconds=0.5)
    assert second.wait_turn(card, 1.0) and slept_second == [pytest.approx(1.0)]
    clock.advance(seconds=3)
    assert first.wait_turn(card, 1.0) and slept_first == [1.0]  # its slot came and went


def test_the_next_write_keeps_an_interval_after_a_slow_one_landed(
    fake_slack: FakeSlack, db: Database, clock: ManualClock
) -> None:
    first, _ = writer(fake_slack, db)
    second, slept = writer(fake_slack, db)  # another process
    card = card_id("approval", 10)
    assert first.wait_turn(card, 1.0)  # its slot is now; Slack answers 0.8 s later
    clock.advance(seconds=0.8)
    first.landed(card)
    clock.advance(seconds=0.3)  # past the reserved slot, but not an interval after it landed
    assert second.wait_turn(card, 1.0) and slept == [pytest.approx(0.7)]


def test_a_second_waiter_in_one_process_leaves_the_write_to_the_first(
    fake_slack: FakeSlack, db: Database
) -> None:
    card = card_id("approval", 9)
    entered, release = threading.Event(), threading.Event()

    def held_sleep(seconds: float) -> None:  # the first waiter, asleep until released
        entered.set()
        release.wait(5)

    client = WebClient(token="xoxb-test", base_url=fake_slack.base_url, retry_handlers=[])
    out = SlackWriter(client, db, sleep=held_sleep)
    assert out.wait_turn(card, 1.0)  # the first write goes straight ahead
    results: list[bool] = []
    waiter = threading.Thread(target=lambda: results.append(out.wait_turn(card, 1.0)))
    waiter.start()
    assert entered.wait(5)
    assert out.wait_turn(card, 1.0) is False  # the sleeping waiter will render this change
    release.set()
    waiter.join(5)
    assert results == [True]
    assert out.wait_turn(card, 1.0)  # nobody waits now: this one queues for its own slot


def test_recording_a_card_writes_one_event_and_starts_its_pace(
    fake_slack: FakeSlack, db: Database
) -> None:
    from commands.incidents import open_incident

    out, _ = writer(fake_slack, db)
    with db.session() as session:
        incident = open_incident(session=session, title="t", created_by="W111")
        out.record_card(
            session, incident, channel="C0INCIDENT", ts="1.0", thread_ts="1.0", summary="posted"
        )
        key = incident.key
    with db.read_session() as session:
        kinds = session.scalars(select(TimelineEvent.kind)).all()
    assert kinds.count("slack.card_posted") == 1
    assert out.claim_turn(card_id("incident", key), 10).wait == pytest.approx(10)


def test_patient_calls_keep_to_slacks_pace_and_a_429_holds_the_method(
    fake_slack: FakeSlack, db: Database
) -> None:
    fake_slack.add_channel("C2")
    slept: list[float] = []
    client = WebClient(token="xoxb-test", base_url=fake_slack.base_url, retry_handlers=[])
    pace = Pace(posts_per_second=1.0, post_burst=2.0, tier3_per_minute=30.0, tier3_burst=1.0)
    out = SlackWriter(client, db, sleep=slept.append, pace=pace)
    now = [100.0]
    out.budget.clock = lambda: now[0]
    for n in range(4):  # a burst of two, then one a second (the clock stands still)
        out.call("chat_postMessage", patient=True, channel="C0INCIDENT", text=str(n))
    assert slept == [1.0, 2.0]
    slept.clear()
    # Another channel has its own budget; an impatient call never waits.
    out.call("chat_postMessage", patient=True, channel="C2", text="x")
    out.call("chat_postMessage", channel="C0INCIDENT", text="now")
    assert slept == []
    # chat.update (Tier 3): a 429 holds the method for its Retry-After, for every caller.
    ts = fake_slack.calls_for("chat.postMessage")[0].response["ts"]
    fake_slack.rate_limit("chat.update", times=1, retry_after=4)
    out.call("chat_update", patient=True, channel="C0INCIDENT", ts=ts, text="a")
    assert slept == [4.0]
    assert out.budget.ready_in("chat_update") == pytest.approx(4.0)
    now[0] += 4.0
    assert out.budget.ready_in("chat_update") == 0.0
