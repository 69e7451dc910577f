"""Reading a resource's tags starts the regulator clock when they say it holds personal data."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from commands.deadlines.policy import DeadlinePolicy
from commands.findings.tags import store_resource_tags
from commands.incidents import open_incident
from storage.models import Incident, Reminder

pytestmark = pytest.mark.dates  # CI reruns these with the clock shifted (.ci/run)


@pytest.mark.parametrize(
    ("tags", "starts"),
    [
        ({"Name": "web-1", "DataClassification": "PII"}, True),
        ({"dataclassification": "confidential"}, True),  # keys and values case-insensitive
        ({"Name": "web-1", "DataClassification": "Public"}, False),
        ({}, False),
    ],
)
def test_pii_tag_starts_the_clock_from_when_the_incident_opened(database, tags, starts) -> None:
    with database.session() as s:
        inc = open_incident(session=s, title="c2", created_by="guardduty", resource_id="i-1")
        opened_at, incident_id = inc.created_at, inc.id
    store_resource_tags(
        database=database,
        incident_id=incident_id,
        tags=tags,
        source="ec2",
        policy=DeadlinePolicy(),
    )
    with database.read_session() as s:
        inc = s.get(Incident, incident_id)
        due = s.scalars(
            select(Reminder.due_at)
            .where(Reminder.incident_id == incident_id)
            .order_by(Reminder.due_at)
        ).all()
    assert inc.personal_data is starts
    if starts:
        assert inc.aware_at == opened_at
        assert due[-1] == opened_at + dt.timedelta(hours=72)
        assert len(due) == 5
    else:
        assert due == []
