"""Drill incidents remind the responders rehearsing, never the real contacts."""

from __future__ import annotations

import datetime as dt

import pytest

from commands.deadlines import delivery as dl
from commands.deadlines import gdpr, queue
from commands.deadlines.kinds import deadline_kinds
from commands.deadlines.policy import DeadlinePolicy
from commands.incidents import open_incident

pytestmark = pytest.mark.dates  # CI reruns these with the clock shifted (.ci/run)

T0 = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)


POLICY = DeadlinePolicy()


@pytest.mark.parametrize("is_drill", [True, False])
def test_gdpr_reminders_mention_contacts_only_for_real_incidents(database, is_drill) -> None:
    with database.session() as s:
        inc = open_incident(session=s, title="pii leak", created_by="U0OWNER", is_drill=is_drill)
        gdpr.start_clock(session=s, incident=inc, actor="U0OWNER", aware_at=T0, policy=POLICY)
    later = T0 + dt.timedelta(hours=25)  # the 48-hours-before reminder is due
    with database.session() as s:
        claims = queue.claim_due(session=s, now=later, worker_id="t", limit=10)
    assert claims
    with database.session() as s:
        delivery = dl.prepare_delivery(
            session=s, claim=claims[0], now=later, policy=POLICY, kinds=deadline_kinds()
        )
    assert delivery is not None
    assert delivery.owner == "U0OWNER"
    assert delivery.mention_contacts is (not is_drill)
