"""What anchor is due when, what one says, S3 Object Lock round trips (moto), and checking."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from bot.clock import SystemClock
from commands import anchors as svc
from commands.incidents import close_incident, open_incident, resolve_incident, set_status
from storage.clock import ManualClock
from storage.db import Database
from storage.migrate import upgrade
from storage.models import Incident
from storage.timeline import TimelineKey, append_event, verify_chain
from tests.clock import manual

pytestmark = pytest.mark.dates

KEY = TimelineKey.from_secret("k" * 32)


@pytest.fixture
def mclock() -> ManualClock:
    return manual()


@pytest.fixture
def db(db_url: str, mclock: ManualClock) -> Iterator[Database]:
    upgrade(db_url)
    database = Database(db_url, clock=mclock, timeline_key=KEY)
    yield database
    database.dispose()


def _due(db: Database, now: dt.datetime) -> list[svc.DueAnchor]:
    with db.read_session() as s:
        return svc.due_anchors(session=s, now=now)


def _anchored(db: Database, due: list[svc.DueAnchor]) -> None:
    with db.session() as s:
        for item in due:
            svc.record_anchored(session=s, due=item, witnesses=["test"])


def test_milestones_and_hourly_anchors_while_active(db, mclock) -> None:
    with db.session() as s:
        iid = open_incident(session=s, title="c2", created_by="U1", channel_id="C1").id
    due = _due(db, mclock.now())
    assert [(d.anchor.milestone, d.anchor.count, d.anchor.key_id) for d in due] == [
        ("opened", 1, KEY.id)
    ]
    _anchored(db, due)
    assert _due(db, mclock.advance(hours=2)) == []  # nothing new: no hourly anchor
    with db.session() as s:
        append_event(session=s, incident=s.get(Incident, iid), actor="U1", kind="n", summary="x")
    _anchored(db, _due(db, mclock.now()))  # two hours since the last: hourly now
    with db.session() as s:
        append_event(session=s, incident=s.get(Incident, iid), actor="U1", kind="n", summary="y")
    assert _due(db, mclock.advance(minutes=59)) == []
    [hourly] = _due(db, mclock.advance(minutes=1))
    assert (hourly.anchor.milestone, hourly.anchor.count) == ("hourly", 3)
    _anchored(db, [hourly])
    for status, milestone in (("contained", "contained"), ("resolved", "resolved")):
        with db.session() as s:
            inc = s.get(Incident, iid)
            if status == "resolved":
                resolve_incident(session=s, incident=inc, actor="U1", summary="done")
            else:
                set_status(session=s, incident=inc, actor="U1", status=status)
        [d] = _due(db, mclock.advance(minutes=1))
        assert d.anchor.milestone == milestone and d.status == status
        _anchored(db, [d])
    with db.session() as s:
        close_incident(session=s, incident=s.get(Incident, iid), actor="U1", summary="closed")
    [closed] = _due(db, mclock.advance(minutes=1))
    assert closed.anchor.milestone == "closed"
    _anchored(db, [closed])
    assert _due(db, mclock.advance(hours=3)) == []  # closed: no hourly anchors


def test_s3_anchor_is_locked_in_compliance_mode_and_reads_back(db, mclock) -> None:
    # moto judges Object Lock retention on the machine's clock: so does this test's.
    mclock.set(SystemClock().now().replace(microsecond=0))
    with db.session() as s:
        open_incident(session=s, title="c2", created_by="U1")
    [due] = _due(db, mclock.now())
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="evidence", ObjectLockEnabledForBucket=True)
        uri = svc.write_s3_anchor(s3=s3, bucket="evidence", anchor=due.anchor, retain_days=30)
        key = uri.removeprefix("s3://evidence/")
        head = s3.head_object(Bucket="evidence", Key=key)
        found = svc.read_s3_anchors(s3=s3, bucket="evidence", incident_number=1)
        # Whoever holds the account cannot take the witness back before the date.
        with pytest.raises(s3.exceptions.ClientError, match="AccessDenied"):
            s3.delete_object(Bucket="evidence", Key=key, VersionId=head["VersionId"])
    assert head["ObjectLockMode"] == "COMPLIANCE"
    assert head["ObjectLockRetainUntilDate"] == mclock.now() + dt.timedelta(days=30)
    assert found.anchors == [due.anchor] and found.unlocked == []


def test_check_anchors_names_removed_rewritten_and_rekeyed(db, mclock) -> None:
    with db.session() as s:
        inc = open_incident(session=s, title="c2", created_by="U1")
        for i in range(3):
            append_event(session=s, incident=inc, actor="U1", kind="n", summary=f"{i}")
    with db.read_session() as s:
        inc = s.get(Incident, inc.id)
        chain = verify_chain(conn=s, incident=inc, key=KEY)
        good = svc.anchor_of(inc, milestone="opened", now=mclock.now())
    assert svc.check_anchors(source="S3", anchors=[good], incident=inc, chain=chain) == []
    ahead = svc.Anchor(1, 9, "a" * 64, KEY.id, "hourly", mclock.now())
    other = svc.Anchor(1, 2, "b" * 64, KEY.id, "hourly", mclock.now())
    rekeyed = svc.Anchor(1, 4, good.head, "env:0000000000000000", "hourly", mclock.now())
    problems = svc.check_anchors(
        source="S3", anchors=[ahead, other, rekeyed], incident=inc, chain=chain
    )
    assert "witnessed 9 event(s), the database has 4" in problems[0]
    assert problems[1].startswith("event #2 does not match the head")
    assert "keyed with env:0000000000000000, the database says " + KEY.id in problems[2]
    [gone] = svc.check_anchors(source="S3", anchors=[good], incident=None, chain=None)
    assert "INC-1 is missing from the database" in gone
