"""The root-credentials checklist: what to verify, bounded in time, kept on the incident."""

from __future__ import annotations

import datetime as dt
import json

from sqlalchemy import select

from commands.approvals.root_checklist import CHECKLIST_EVENT, record_checklist, root_checklist
from commands.incidents import open_incident
from storage.db import Database
from storage.models import TimelineEvent
from storage.timeline import verify_chain


def test_cloudtrail_lookup_starts_a_day_before_the_first_sighting() -> None:
    items = root_checklist(
        account_id="123456789012", since=dt.datetime(2026, 11, 29, 8, 30, tzinfo=dt.UTC)
    )
    cloudtrail = next(i for i in items if i.key == "cloudtrail")
    assert cloudtrail.calls[0].endswith("--start-time 2026-11-28T08:30:00Z")
    assert "123456789012" in next(i for i in items if i.key == "credentials").look_for


def test_without_a_sighting_the_lookup_is_unbounded() -> None:
    items = root_checklist(account_id=None, since=None)
    assert "--start-time" not in next(i for i in items if i.key == "cloudtrail").calls[0]


def test_the_checklist_is_kept_on_the_incident_and_its_timeline(database: Database) -> None:
    items = root_checklist(account_id="123456789012", since=None)
    with database.session() as session:
        incident = open_incident(session=session, title="root used", created_by="guardduty")
        record_checklist(session=session, incident=incident, items=items, reason="root used")
    with database.read_session() as session:
        event = session.scalars(
            select(TimelineEvent).where(TimelineEvent.kind == CHECKLIST_EVENT)
        ).one()
        assert json.loads(event.details)["items"] == [i.key for i in items]
        assert "Root has MFA" in event.summary
        assert verify_chain(conn=session, incident=incident).ok
