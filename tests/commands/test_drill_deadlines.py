"""Drill incidents remind the responders rehearsing, never the real contacts."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from commands import deadlines as dl
from commands.incidents import mark_personal_data, open_incident

pytestmark = pytest.mark.dates  # CI reruns these with the clock shifted (.ci/run)

T0 = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def _policy() -> Iterator[None]:
    previous = dl.configure(dl.DeadlinePolicy())
    yield
    dl.configure(previous)


@pytest.mark.parametrize("is_drill", [True, False])
def test_gdpr_reminders_mention_contacts_only_for_real_incidents(database, is_drill) -> None:
    with database.session() as s:
        inc = open_incident(session=s, title="pii leak", created_by="U0OWNER", is_drill=is_drill)
        mark_personal_data(session=s, incident=inc, actor="U0OWNER", aware_at=T0)
    later = T0 + dt.timedelta(hours=25)  # the 48-hours-before reminder is due
    with database.session() as s:
        claims = dl.claim_due(session=s, now=later, worker_id="t", limit=10)
    assert claims
    with database.session() as s:
        delivery = dl.prepare_delivery(session=s, claim=claims[0], now=later)
    assert delivery is not None
    assert delivery.owner == "U0OWNER"
    assert delivery.mention_contacts is (not is_drill)
