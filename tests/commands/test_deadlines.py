"""commands.deadlines on a real database (SQLite, and PostgreSQL in CI): due times, the
personal-data tag, notified, atomic claiming, late marking, stale nudges and the digest."""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import select

from bot.views.reminders import delivery_text as said
from commands import incidents
from commands.deadlines import delivery, digest, gdpr, queue, stale, timefmt
from commands.deadlines import tags as tag_rules
from commands.deadlines.kinds import deadline_kinds
from commands.deadlines.policy import DeadlinePolicy
from commands.incidents import open_incident
from storage.db import Database
from storage.models import ContainmentRequest, Incident, Reminder, TimelineEvent
from storage.timeline import append_event

pytestmark = pytest.mark.dates  # CI reruns these with the clock shifted (.ci/run)

T0 = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)


DEFAULT = DeadlinePolicy()


def policy(**kw: Any) -> DeadlinePolicy:
    return DeadlinePolicy(**kw)


def mark_personal_data(
    *,
    session: Any,
    incident: Incident,
    pol: DeadlinePolicy = DEFAULT,
    schedule: bool = True,
    **kw: Any,
) -> bool:
    """Start the regulator clock and schedule its reminders, as `/incident personal-data`;
    `schedule=False`: only the incident's side (the test schedules with its own policy)."""
    if not schedule:
        return incidents.mark_personal_data(session=session, incident=incident, **kw)
    return gdpr.start_clock(session=session, incident=incident, policy=pol, **kw)


def record_notified(**kw: Any) -> Incident:
    return gdpr.record_notice(**kw)


def new_incident(session: Any, *, title: str = "ssh brute force", **kw: Any) -> Incident:
    return open_incident(session=session, title=title, created_by="U0OWNER", **kw)


def reminders(database: Database, incident_id: int | None = None) -> list[Reminder]:
    with database.read_session() as session:
        stmt = select(Reminder).order_by(Reminder.due_at, Reminder.id)
        if incident_id is not None:
            stmt = stmt.where(Reminder.incident_id == incident_id)
        return list(session.scalars(stmt))


def kinds(database: Database, incident_id: int) -> list[str]:
    with database.read_session() as session:
        return list(
            session.scalars(
                select(TimelineEvent.kind)
                .where(TimelineEvent.incident_id == incident_id)
                .order_by(TimelineEvent.seq)
            )
        )


def fire(
    database: Database, now: dt.datetime, pol: DeadlinePolicy = DEFAULT
) -> list[delivery.Delivery]:
    """Claim everything due at `now` and prepare it, as the scheduler does (no Slack)."""
    with database.session() as session:
        claims = queue.claim_due(session=session, now=now, worker_id="test", limit=1000)
    out = []
    for claim in claims:
        with database.session() as session:
            prepared = prepare(session, claim, now, pol)
            if prepared is not None:
                delivery.record_fired(
                    session=session,
                    delivery=prepared,
                    text=said(prepared),
                    now=now,
                    channel="C",
                    ts="1",
                )
                out.append(prepared)
    return out


def prepare(
    session: Any, claim: queue.Claim, now: dt.datetime, pol: DeadlinePolicy = DEFAULT
) -> delivery.Delivery | None:
    return delivery.prepare_delivery(
        session=session, claim=claim, now=now, policy=pol, kinds=deadline_kinds()
    )


# -- the regulator clock ----------------------------------------------------------------------


def test_clock_schedules_each_reminder_and_the_deadline_at_the_right_times(database) -> None:
    pol = policy(gdpr_hours=72, reminder_hours_before=(48, 24, 6, 1))
    with database.session() as session:
        incident = new_incident(session)
        assert mark_personal_data(
            session=session, incident=incident, actor="U1", aware_at=T0, pol=pol
        )
    due = {(r.kind, r.dedupe_key): r.due_at for r in reminders(database)}
    deadline = T0 + dt.timedelta(hours=72)
    assert due == {
        ("gdpr", f"gdpr:{incident.id}:before:48"): deadline - dt.timedelta(hours=48),
        ("gdpr", f"gdpr:{incident.id}:before:24"): deadline - dt.timedelta(hours=24),
        ("gdpr", f"gdpr:{incident.id}:before:6"): deadline - dt.timedelta(hours=6),
        ("gdpr", f"gdpr:{incident.id}:before:1"): deadline - dt.timedelta(hours=1),
        ("gdpr", f"gdpr:{incident.id}:deadline"): deadline,
    }


def test_decimal_hours_make_a_clock_of_seconds(database) -> None:
    pol = policy(gdpr_hours=0.05, reminder_hours_before=(0.01,))  # 180 s, one at -36 s
    now = database.clock.now()
    with database.session() as session:
        incident = new_incident(session)
        mark_personal_data(session=session, incident=incident, actor="U1", schedule=False)
        gdpr.schedule_gdpr_clock(session=session, incident=incident, policy=pol)
        aware = incident.aware_at
    assert aware is not None and aware >= now
    assert [r.due_at - aware for r in reminders(database)] == [
        dt.timedelta(seconds=144),
        dt.timedelta(seconds=180),
    ]


def test_backdated_awareness_skips_reminders_already_past_but_keeps_the_deadline(
    database,
) -> None:
    aware = database.clock.now() - dt.timedelta(
        hours=50
    )  # 22 h left: the 48 h and 24 h marks passed
    with database.session() as session:
        incident = new_incident(session)
        mark_personal_data(session=session, incident=incident, actor="U1", aware_at=aware)
    assert [r.payload.get("hours_before", "deadline") for r in reminders(database)] == [
        6.0,
        1.0,
        "deadline",
    ]


@pytest.mark.parametrize(
    "tags",
    [
        [{"Key": "Name", "Value": "web-1"}, {"Key": "DataClassification", "Value": "PII"}],
        [{"key": "dataclassification", "value": "confidential"}],  # GuardDuty's camelCase
        {"DataClassification": " PII "},
    ],
    ids=["aws-list", "guardduty-list", "dict"],
)
def test_personal_data_tag_starts_the_clock_with_the_right_due_times(database, tags) -> None:
    pol = policy(gdpr_hours=72, reminder_hours_before=(24, 1))
    with database.session() as session:
        incident = new_incident(session)
        started = gdpr.start_clock_from_tags(
            session=session,
            incident=incident,
            tags=tags,
            policy=pol,
            actor="guardduty",
            resource_id="i-0abc",
        )
        aware = incident.aware_at
    assert started and aware is not None
    deadline = aware + dt.timedelta(hours=72)
    assert [(r.kind, r.due_at) for r in reminders(database)] == [
        ("gdpr", deadline - dt.timedelta(hours=24)),
        ("gdpr", deadline - dt.timedelta(hours=1)),
        ("gdpr", deadline),
    ]
    with database.read_session() as session:
        event = session.scalars(
            select(TimelineEvent).where(TimelineEvent.kind == "incident.personal_data")
        ).one()
    assert "resource tagged" in event.summary and "i-0abc" in event.summary
    assert event.actor == "guardduty"


def test_untagged_or_already_running_clock_changes_nothing(database) -> None:
    with database.session() as session:
        incident = new_incident(session)
        assert not gdpr.start_clock_from_tags(
            session=session,
            incident=incident,
            tags={"DataClassification": "Public"},
            policy=DEFAULT,
        )
        assert not gdpr.start_clock_from_tags(
            session=session, incident=incident, tags=None, policy=DEFAULT
        )
    assert reminders(database) == []
    with database.session() as session:
        incident = session.get(Incident, incident.id)
        assert gdpr.start_clock_from_tags(
            session=session, incident=incident, tags={"DataClassification": "PII"}, policy=DEFAULT
        )
        assert not gdpr.start_clock_from_tags(
            session=session, incident=incident, tags={"DataClassification": "PII"}, policy=DEFAULT
        )
    assert len(reminders(database)) == 5
    assert kinds(database, incident.id).count("incident.personal_data") == 1


def test_custom_tag_policy_from_settings_shape(database) -> None:
    class Options:  # the shape of bot.settings.DeadlinesConfig
        gdpr_hours = 24.0
        reminder_hours_before = [2.0]
        overdue_every_hours = 1.0
        stale_after_hours = 4.0
        digest_time = "08:30"
        timezone = "Europe/Berlin"
        personal_data_tags = {"Sensitivity": ["Restricted"]}

    class Config:
        deadlines = Options()

    class Settings:
        config = Config()

    pol = DeadlinePolicy.from_options(Settings().config.deadlines)
    assert pol.gdpr_hours == 24 and pol.personal_data_tags == {"Sensitivity": ("Restricted",)}
    assert tag_rules.personal_data_tag([{"Key": "Sensitivity", "Value": "restricted"}], policy=pol)
    assert tag_rules.personal_data_tag({"DataClassification": "PII"}, policy=pol) is None


def test_schedule_reminder_is_idempotent_on_its_dedupe_key(database) -> None:
    with database.session() as session:
        incident = new_incident(session)
        a = queue.schedule_reminder(
            session=session, incident=incident, kind="followup", due_at=T0, dedupe_key="k"
        )
        b = queue.schedule_reminder(
            session=session,
            incident=incident,
            kind="followup",
            due_at=T0 + dt.timedelta(hours=1),
            dedupe_key="k",
        )
        assert a.id == b.id and b.due_at == T0
    with pytest.raises(ValueError, match="unknown reminder kind"), database.session() as session:
        queue.schedule_reminder(
            session=session, incident=None, kind="nope", due_at=T0, dedupe_key=None
        )


def test_deadline_starts_overdue_alerts_and_notified_stops_them(database) -> None:
    pol = policy(gdpr_hours=72, reminder_hours_before=(1,), overdue_every_hours=12)
    with database.session() as session:
        incident = new_incident(session)
        mark_personal_data(session=session, incident=incident, actor="U1", aware_at=T0, pol=pol)
    deadline = T0 + dt.timedelta(hours=72)

    fired = fire(database, deadline - dt.timedelta(hours=1))
    assert [said(d) for d in fired] == [
        "⏰ *GDPR*: the regulator notice for *INC-1* is due in *1 h 0 m* "
        f"(by {timefmt.utc_text(deadline)}). Record it with "
        "`/incident notified INC-1 &lt;reference&gt;` once it is sent."
    ]
    fired = fire(database, deadline)
    assert len(fired) == 1 and "GDPR deadline reached" in said(fired[0])
    fired = fire(database, deadline + dt.timedelta(hours=12))
    assert len(fired) == 1 and "OVERDUE" in said(fired[0]) and "12 h 0 m ago" in said(fired[0])
    pending = [r for r in reminders(database) if r.status == "pending"]
    assert [(r.kind, r.due_at) for r in pending] == [
        ("gdpr_overdue", deadline + dt.timedelta(hours=24))
    ]

    with database.session() as session:
        target = session.get(Incident, incident.id)
        record_notified(session=session, incident=target, actor="U1", reference="ICO-7")
    assert not [r for r in reminders(database) if r.status == "pending"]
    assert fire(database, deadline + dt.timedelta(days=10)) == []
    assert kinds(database, incident.id)[-2:] == ["incident.notified", "reminders.cancelled"]


def test_an_alert_claimed_before_notified_committed_is_not_posted_after(database) -> None:
    with database.session() as session:
        incident = new_incident(session)
        mark_personal_data(session=session, incident=incident, actor="U1", aware_at=T0)
    later = T0 + dt.timedelta(hours=100)
    with database.session() as session:
        claims = queue.claim_due(session=session, now=later, worker_id="w", limit=10)
    with database.session() as session:
        record_notified(
            session=session, incident=session.get(Incident, incident.id), actor="U1", reference="r"
        )
    for claim in claims:
        with database.session() as session:
            assert prepare(session, claim, later) is None
    assert {r.status for r in reminders(database)} == {"cancelled"}


def test_late_before_reminders_are_superseded_by_the_deadline_alert(database) -> None:
    """Down for the whole clock: one late deadline alert, not five stale countdowns."""
    with database.session() as session:
        incident = new_incident(session)
        mark_personal_data(session=session, incident=incident, actor="U1", aware_at=T0)
    later = T0 + dt.timedelta(hours=73)
    with database.session() as session:
        assert queue.mark_late(session=session, before=later) == 5
    fired = fire(database, later)
    assert len(fired) == 1 and fired[0].late
    assert "GDPR deadline reached" in said(fired[0]) and "late" in said(fired[0])


# -- claiming -----------------------------------------------------------------------------------


def test_concurrent_claimers_get_each_row_exactly_once(database) -> None:
    with database.session() as session:
        incident = new_incident(session)
        for n in range(300):
            queue.schedule_reminder(
                session=session,
                incident=incident,
                kind="followup",
                due_at=T0 + dt.timedelta(milliseconds=n),
                dedupe_key=f"c{n}",
            )
    got: list[tuple[str, int]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(6)

    def worker(name: str) -> None:
        barrier.wait()
        while True:
            with database.session() as session:
                claims = queue.claim_due(
                    session=session, now=T0 + dt.timedelta(seconds=1), worker_id=name, limit=7
                )
            if not claims:
                return
            with lock:
                got.extend((name, c.id) for c in claims)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    counts = Counter(rid for _, rid in got)
    assert len(counts) == 300 and set(counts.values()) == {1}
    rows = reminders(database)
    assert {r.status for r in rows} == {"sent"}
    assert {(r.claimed_by, r.id) for r in rows} == set(got)


def test_claim_takes_only_due_rows_oldest_first_and_marks_late(database) -> None:
    now = T0 + dt.timedelta(hours=1)
    with database.session() as session:
        incident = new_incident(session)
        for key, due in (
            ("future", now + dt.timedelta(seconds=1)),
            ("just", now - dt.timedelta(seconds=2)),
            ("old", now - dt.timedelta(hours=2)),
        ):
            queue.schedule_reminder(
                session=session, incident=incident, kind="followup", due_at=due, dedupe_key=key
            )
        cancelled = queue.schedule_reminder(
            session=session,
            incident=incident,
            kind="followup",
            due_at=now - dt.timedelta(hours=3),
            dedupe_key="cancelled",
        )
        cancelled.status = "cancelled"
    with database.session() as session:
        assert queue.next_due(session=session) == now - dt.timedelta(hours=2)
        claims = queue.claim_due(session=session, now=now, worker_id="w")
    assert [(c.due_at, c.late) for c in claims] == [
        (now - dt.timedelta(hours=2), True),  # beyond LATE_AFTER
        (now - dt.timedelta(seconds=2), False),
    ]
    with database.session() as session:
        assert queue.claim_due(session=session, now=now, worker_id="w2") == []
        assert queue.next_due(session=session) == now + dt.timedelta(seconds=1)


def test_a_claim_takes_at_most_its_limit_in_due_order(database) -> None:
    """On PostgreSQL too: as `IN (SELECT ... LIMIT 2 FOR UPDATE SKIP LOCKED)` one claim once
    took all six due rows, and a second replica found nothing to share."""
    now = database.clock.now()
    with database.session() as session:
        incident = open_incident(session=session, title="limit", created_by="U1")
        for n in range(6):
            queue.schedule_reminder(
                session=session,
                incident=incident,
                kind="followup",
                due_at=now - dt.timedelta(seconds=6 - n),
                dedupe_key=f"limit:{n}",
            )
    taken: list[list[str]] = []
    for worker in ("a", "b", "c", "d"):
        with database.session() as session:
            claims = queue.claim_due(session=session, now=now, worker_id=worker, limit=2)
            keys = {r.id: r.dedupe_key for r in session.scalars(select(Reminder))}
        taken.append([keys[c.id] for c in claims])
    assert taken == [["limit:0", "limit:1"], ["limit:2", "limit:3"], ["limit:4", "limit:5"], []]


def test_start_up_marks_rows_due_while_down_late(database) -> None:
    now = T0
    with database.session() as session:
        incident = new_incident(session)
        for n, offset in enumerate((-1.0, -0.1, 5.0)):
            queue.schedule_reminder(
                session=session,
                incident=incident,
                kind="followup",
                due_at=now + dt.timedelta(seconds=offset),
                dedupe_key=f"d{n}",
            )
    with database.session() as session:
        assert queue.mark_late(session=session, before=now) == 2
    assert [r.late for r in reminders(database)] == [True, True, False]


def test_failed_post_is_retried_then_given_up_on_the_timeline(database, monkeypatch) -> None:
    monkeypatch.setattr(delivery, "RETRY_BACKOFF", (5,))
    with database.session() as session:
        incident = new_incident(session)
        queue.schedule_reminder(
            session=session, incident=incident, kind="followup", due_at=T0, dedupe_key="f"
        )
    with database.session() as session:
        (claim,) = queue.claim_due(session=session, now=T0, worker_id="w")
        retry_at = delivery.record_failed(
            session=session, reminder_id=claim.id, now=T0, error="ratelimited", retry=True
        )
    assert retry_at == T0 + dt.timedelta(seconds=5)
    (row,) = reminders(database)
    assert (row.status, row.due_at, row.claimed_by) == ("pending", retry_at, None)
    with database.session() as session:
        (claim,) = queue.claim_due(session=session, now=retry_at, worker_id="w")
        assert (
            delivery.record_failed(
                session=session, reminder_id=claim.id, now=T0, error="ratelimited", retry=True
            )
            is None
        )
    (row,) = reminders(database)
    assert row.status == "sent" and row.payload["failed"] and row.payload["attempts"] == 2
    assert kinds(database, incident.id)[-1] == "reminder.failed"


# -- stale incidents ----------------------------------------------------------------------------


def test_stale_checks_for_live_non_drill_incidents_nudge_only_when_quiet(database) -> None:
    pol = policy(stale_after_hours=4)
    with database.session() as session:
        quiet = new_incident(session, title="quiet")
        busy = new_incident(session, title="busy")
        new_incident(session, title="drill", is_drill=True)
        closed = new_incident(session, title="closed")
        closed.status = "closed"
        opened = quiet.created_at
    with database.session() as session:
        assert stale.ensure_stale_checks(session=session, now=opened, policy=pol) == 2
        assert stale.ensure_stale_checks(session=session, now=opened, policy=pol) == 0
        # Quiet since its last timeline event (incident.opened).
        last = {i.id: stale.last_activity(session=session, incident=i) for i in (quiet, busy)}
    assert {(r.incident_id, r.due_at) for r in reminders(database)} == {
        (quiet.id, last[quiet.id] + dt.timedelta(hours=4)),
        (busy.id, last[busy.id] + dt.timedelta(hours=4)),
    }
    with database.session() as session:  # someone worked on `busy` two hours in
        append_event(
            session=session,
            incident=session.get(Incident, busy.id),
            actor="U1",
            kind="note",
            summary="still digging",
            occurred_at=last[busy.id] + dt.timedelta(hours=2),
        )
    at = last[quiet.id] + dt.timedelta(hours=4, seconds=1)
    fired = fire(database, at, pol)
    assert [d.incident_id for d in fired] == [quiet.id]
    assert "has had no activity for 4 h 0 m" in said(fired[0])
    pending = {r.incident_id: r.due_at for r in reminders(database) if r.status == "pending"}
    assert pending[quiet.id] == at + dt.timedelta(hours=4)
    assert pending[busy.id] == last[busy.id] + dt.timedelta(hours=6)  # note + 4 h
    # The nudge is on the timeline but is not itself "activity".
    assert kinds(database, quiet.id)[-1] == "reminder.stale"
    with database.read_session() as session:
        assert stale.last_activity(session=session, incident=quiet) == last[quiet.id]


# -- the digest ---------------------------------------------------------------------------------


def test_next_digest_time_is_local_and_follows_daylight_saving() -> None:
    berlin = policy(digest_time="09:00", timezone="Europe/Berlin")
    # Before the spring change 09:00 CET is 08:00 UTC; after it 09:00 CEST is 07:00 UTC.
    assert digest.next_digest_at(
        now=dt.datetime(2026, 3, 28, 9, 0, tzinfo=dt.UTC), policy=berlin
    ) == (dt.datetime(2026, 3, 29, 7, 0, tzinfo=dt.UTC))
    assert digest.next_digest_at(
        now=dt.datetime(2026, 3, 28, 7, 0, tzinfo=dt.UTC), policy=berlin
    ) == (dt.datetime(2026, 3, 28, 8, 0, tzinfo=dt.UTC))
    # 02:30 does not exist in Berlin on 29 March 2026: still a real instant, once.
    skipped = policy(digest_time="02:30", timezone="Europe/Berlin")
    at = digest.next_digest_at(now=dt.datetime(2026, 3, 28, 23, 0, tzinfo=dt.UTC), policy=skipped)
    assert (
        dt.datetime(2026, 3, 29, 0, 0, tzinfo=dt.UTC)
        <= at
        <= dt.datetime(2026, 3, 29, 2, 0, tzinfo=dt.UTC)
    )


def test_digest_lists_open_incidents_approvals_and_deadlines_but_no_drills(database) -> None:
    pol = policy(gdpr_hours=72, digest_time="09:00", timezone="America/New_York")
    now = T0
    with database.session() as session:
        real = new_incident(session, title="real one")
        mark_personal_data(
            session=session,
            incident=real,
            actor="U1",
            aware_at=now - dt.timedelta(hours=60),
            schedule=False,
        )
        drill = new_incident(session, title="exercise", is_drill=True)
        mark_personal_data(
            session=session,
            incident=drill,
            actor="U1",
            aware_at=now - dt.timedelta(hours=60),
            schedule=False,
        )
        for inc in (real, drill):
            session.add(
                ContainmentRequest(
                    incident_id=inc.id,
                    target_type="instance",
                    target_id=f"i-{inc.number:08d}",
                    requested_by="U0REQ",
                    requested_at=now,
                    expires_at=now + dt.timedelta(hours=5),  # 3 h after the digest
                    status="pending",
                    plan={},
                )
            )
        due = digest.ensure_digest(session=session, now=now, policy=pol)
        assert due.due_at == dt.datetime(2026, 11, 27, 14, 0, tzinfo=dt.UTC)  # 09:00 EST
    fired = fire(database, due.due_at, pol)
    assert len(fired) == 1
    text = said(fired[0])
    assert "INC-1" in text and "real one" in text
    assert "INC-2" not in text and "exercise" not in text
    assert "2026-11-27 17:00 UTC · INC-1: approval of i-00000001 expires" in text
    assert "INC-1: regulator notice due" in text
    assert "Pending approvals (1)" in text
    assert fired[0].timeline_incident_ids == (real.id,)
    assert kinds(database, real.id)[-1] == "reminder.digest"
    assert "reminder.digest" not in kinds(database, drill.id)
    nxt = [r for r in reminders(database) if r.kind == "digest" and r.status == "pending"]
    assert [r.due_at for r in nxt] == [dt.datetime(2026, 11, 28, 14, 0, tzinfo=dt.UTC)]


# -- time left ----------------------------------------------------------------------------------


def test_user_text_in_digest_and_reminders_is_escaped(database) -> None:
    evil = "<!channel> <https://evil|click> & co"
    with database.session() as session:
        incident = new_incident(session, title=evil)
        queue.schedule_reminder(
            session=session,
            incident=incident,
            kind="followup",
            due_at=T0,
            dedupe_key="evil",
            message=evil,
        )
        digest.ensure_digest(session=session, now=T0 - dt.timedelta(days=1), policy=DEFAULT)
    texts = [said(d) for d in fire(database, T0 + dt.timedelta(days=1))]
    assert len(texts) == 2
    for text in texts:
        assert "<!channel>" not in text and "<https://evil" not in text
        assert "&lt;!channel&gt; &lt;https://evil|click&gt; &amp; co" in text


def test_reminder_claimed_by_a_process_that_died_is_taken_over_once(database) -> None:
    with database.session() as session:
        incident = new_incident(session)
        for key in ("stalled", "posted"):
            queue.schedule_reminder(
                session=session,
                incident=incident,
                kind="followup",
                due_at=T0,
                dedupe_key=key,
                message=key,
            )
    with database.session() as session:
        stalled, posted = queue.claim_due(session=session, now=T0, worker_id="dead")
    fire_one = delivery.Delivery(reminder_id=posted.id, kind="followup", prepared_at=T0)
    with database.session() as session:
        delivery.record_fired(
            session=session, delivery=fire_one, text="posted", now=T0, channel="C", ts="1.2"
        )

    with database.session() as session:  # within the lease: the claimer may still be posting
        assert (
            queue.recover_stalled(session=session, now=T0 + dt.timedelta(minutes=1), worker_id="a")
            == []
        )
    later = T0 + queue.STALLED_AFTER + dt.timedelta(seconds=1)
    with database.session() as session:
        claims = queue.recover_stalled(session=session, now=later, worker_id="a")
    with database.session() as session:
        assert queue.recover_stalled(session=session, now=later, worker_id="b") == []
    assert [(c.id, c.late) for c in claims] == [(stalled.id, True)]
    with database.session() as session:
        prepared = prepare(session, claims[0], later)
        assert prepared is not None and "may repeat" in said(prepared)
        delivery.record_fired(
            session=session,
            delivery=prepared,
            text=said(prepared),
            now=later,
            channel="C",
            ts="3.4",
        )
    with database.session() as session:
        assert (
            queue.recover_stalled(session=session, now=later + dt.timedelta(hours=1), worker_id="c")
            == []
        )
    rows = {r.dedupe_key: r for r in reminders(database)}
    assert rows["stalled"].claimed_by == "a" and rows["stalled"].payload["recovered_from"] == "dead"
    assert rows["posted"].claimed_by == "dead"


def test_after_a_long_outage_one_late_overdue_alert_then_the_regular_rhythm(database) -> None:
    pol = policy(gdpr_hours=72, reminder_hours_before=(), overdue_every_hours=12)
    with database.session() as session:
        incident = new_incident(session)
        mark_personal_data(
            session=session, incident=incident, actor="U1", aware_at=T0, schedule=False
        )
        gdpr.schedule_gdpr_clock(session=session, incident=incident, policy=pol, now=T0)
    deadline = T0 + dt.timedelta(hours=72)
    back = deadline + dt.timedelta(days=5, hours=1)  # down for five days past the deadline
    with database.session() as session:
        queue.mark_late(session=session, before=back)
    fired = fire(database, back, pol)
    assert len(fired) == 1 and fired[0].late and "deadline reached" in said(fired[0])
    assert fire(database, back, pol) == []  # no backlog of ten overdue alerts
    (pending,) = [r for r in reminders(database) if r.status == "pending"]
    assert pending.due_at == deadline + dt.timedelta(hours=12 * 11)  # the next 12 h mark
    assert pending.dedupe_key == f"gdpr_overdue:{incident.id}:11"


def test_countdowns_missed_in_an_outage_collapse_into_the_latest(database) -> None:
    with database.session() as session:
        incident = new_incident(session)
        mark_personal_data(session=session, incident=incident, actor="U1", aware_at=T0)
    back = T0 + dt.timedelta(hours=50)  # the 48 h- and 24 h-before marks passed while down
    with database.session() as session:
        assert queue.mark_late(session=session, before=back) == 2
    fired = fire(database, back)
    assert len(fired) == 1 and fired[0].late
    assert "due in *22 h 0 m*" in said(fired[0])
    statuses = {r.payload.get("hours_before"): r.status for r in reminders(database)}
    assert statuses == {
        48.0: "cancelled",
        24.0: "sent",
        6.0: "pending",
        1.0: "pending",
        None: "pending",
    }
