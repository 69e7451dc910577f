"""GetFindings polling with botocore's Stubber (moto has no GuardDuty findings)."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from sqlalchemy import func, select

from commands.findings.poll import cursor_name, poll_all, poll_region, read_cursor
from storage.db import Database
from storage.models import Finding, Incident
from tests.commands.findings.guardduty_fixtures import GUARDDUTY_DIR, payloads

pytestmark = pytest.mark.dates  # CI reruns these with the clock shifted (.ci/run)

DETECTOR = "6ab6e6dd780ed494f3b7ca50acdc04tg"
NOW = dt.datetime(2023, 5, 15, 12, 0, tzinfo=dt.UTC)
SORT = {"AttributeName": "updatedAt", "OrderBy": "ASC"}


def stix_finding() -> dict[str, Any]:
    """The boto3-shaped finding from stix-shifter's mocked get_findings response.

    Its booleans are the strings 'false'; boto3 hands back real booleans, so those two are
    fixed for the Stubber's response validation.
    """
    path = GUARDDUTY_DIR / "stix-shifter__test_aws_guardduty_transmission.py.txt"
    finding = copy.deepcopy(dict(payloads(path))["line 30"]["Findings"][0])
    finding["Service"]["Archived"] = False
    finding["Service"]["Action"]["NetworkConnectionAction"]["Blocked"] = False
    finding["Severity"] = 8  # high enough to open an incident
    return finding


def finding(finding_id: str, updated: str, **changes: Any) -> dict[str, Any]:
    base = stix_finding()
    base.update(Id=finding_id, UpdatedAt=updated, **changes)
    return base


def ms(text: str) -> int:
    return int(dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def list_params(since: int, token: str | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {
        "DetectorId": DETECTOR,
        "FindingCriteria": {"Criterion": {"updatedAt": {"GreaterThanOrEqual": since}}},
        "SortCriteria": SORT,
        "MaxResults": 50,
    }
    if token:
        params["NextToken"] = token
    return params


def stub_page(
    stubber: Stubber,
    since: int,
    findings: list[dict[str, Any]],
    token: str | None = None,
    next_token: str | None = None,
) -> None:
    listing: dict[str, Any] = {"FindingIds": [f["Id"] for f in findings]}
    if next_token:
        listing["NextToken"] = next_token
    stubber.add_response("list_findings", listing, list_params(since, token))
    if findings:
        stubber.add_response(
            "get_findings",
            {"Findings": findings},
            {
                "DetectorId": DETECTOR,
                "FindingIds": [f["Id"] for f in findings],
                "SortCriteria": SORT,
            },
        )


def guardduty() -> tuple[Any, Stubber]:
    client = boto3.client("guardduty", region_name="us-east-1")
    return client, Stubber(client)


def poll(database: Database, client: Any) -> Any:
    return poll_region(
        database=database,
        client=client,
        region="us-east-1",
        min_severity=4.0,
        channel_id="C0INC",
        now=lambda: NOW,
    )


def rows(database: Database, model: Any) -> int:
    with database.read_session() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def test_first_poll_looks_back_a_day_and_stores_the_cursor(database: Database) -> None:
    client, stubber = guardduty()
    stubber.add_response("list_detectors", {"DetectorIds": [DETECTOR]})
    first = finding("f-1", "2023-05-14T05:48:48.485Z")
    second = finding("f-2", "2023-05-14T06:00:00.000Z", Severity=2)
    since = int((NOW - dt.timedelta(hours=24)).timestamp() * 1000)
    stub_page(stubber, since, [first], next_token="page-2")
    stub_page(stubber, since, [second], token="page-2")
    with stubber:
        result = poll(database, client)
        stubber.assert_no_pending_responses()
    assert result.fetched == 2
    assert [r.outcome for r in result.results] == ["opened", "recorded"]
    assert result.results[0].resource_id == "i-0999999999999999"
    assert read_cursor(database=database, name=cursor_name("us-east-1", DETECTOR)) == ms(
        "2023-05-14T06:00:00.000Z"
    )
    with database.read_session() as session:
        incident = session.scalars(select(Incident)).one()
        assert (incident.severity, incident.region, incident.account_id) == (
            "high",
            "us-east-1",
            "9799797979797",
        )


def test_next_poll_resumes_from_the_cursor(database: Database) -> None:
    client, stubber = guardduty()
    stubber.add_response("list_detectors", {"DetectorIds": [DETECTOR]})
    since = int((NOW - dt.timedelta(hours=24)).timestamp() * 1000)
    stub_page(stubber, since, [finding("f-1", "2023-05-14T05:48:48.485Z")])
    # Second poll: from the cursor; the boundary finding comes back (>=) plus a repeat of it.
    cursor = ms("2023-05-14T05:48:48.485Z")
    stubber.add_response("list_detectors", {"DetectorIds": [DETECTOR]})
    repeat = finding("f-1", "2023-05-14T07:00:00.000Z")
    repeat["Service"]["Count"] = 30
    stub_page(stubber, cursor, [repeat])
    stubber.add_response("list_detectors", {"DetectorIds": [DETECTOR]})
    stub_page(stubber, ms("2023-05-14T07:00:00.000Z"), [repeat])
    with stubber:
        poll(database, client)
        second = poll(database, client)
        third = poll(database, client)
        stubber.assert_no_pending_responses()
    assert [r.outcome for r in second.results] == ["repeat"]
    assert [r.outcome for r in third.results] == ["unchanged"]
    assert rows(database, Finding) == 1 and rows(database, Incident) == 1
    with database.read_session() as session:
        assert session.scalars(select(Finding.count)).one() == 30


def test_an_empty_poll_keeps_the_cursor(database: Database) -> None:
    client, stubber = guardduty()
    stubber.add_response("list_detectors", {"DetectorIds": [DETECTOR]})
    since = int((NOW - dt.timedelta(hours=24)).timestamp() * 1000)
    stub_page(stubber, since, [])
    with stubber:
        result = poll(database, client)
    assert result.fetched == 0
    assert read_cursor(database=database, name=cursor_name("us-east-1", DETECTOR)) is None


def test_an_unreadable_finding_is_skipped_and_reported(database: Database) -> None:
    client, stubber = guardduty()
    stubber.add_response("list_detectors", {"DetectorIds": [DETECTOR]})
    since = int((NOW - dt.timedelta(hours=24)).timestamp() * 1000)
    broken = finding("f-bad", "not a time")
    stub_page(stubber, since, [broken, finding("f-ok", "2023-05-14T05:30:00.000Z")])
    with stubber:
        result = poll(database, client)
    assert [r.finding_id for r in result.results] == ["f-ok"]
    assert result.errors == ["f-bad: updatedAt is not a valid time: 'not a time'"]


def test_one_region_failing_does_not_stop_the_others(database: Database) -> None:
    clients = {}
    for region in ("eu-west-1", "us-east-1"):
        client = boto3.client("guardduty", region_name=region)
        stubber = Stubber(client)
        if region == "eu-west-1":
            stubber.add_client_error("list_detectors", "AccessDeniedException", "no")
        else:
            stubber.add_response("list_detectors", {"DetectorIds": []})
        stubber.activate()
        clients[region] = client
    results = poll_all(
        database=database,
        client_for=clients.__getitem__,
        regions=["eu-west-1", "us-east-1"],
        min_severity=4.0,
    )
    assert [r.region for r in results] == ["eu-west-1", "us-east-1"]
    assert "AccessDeniedException" in results[0].errors[0]
    assert results[1].errors == []


@pytest.mark.parametrize("callback", [True, False])
def test_recorded_batches_are_handed_on(database: Database, callback: bool) -> None:
    client, stubber = guardduty()
    stubber.add_response("list_detectors", {"DetectorIds": [DETECTOR]})
    since = int((NOW - dt.timedelta(hours=24)).timestamp() * 1000)
    stub_page(stubber, since, [finding("f-1", "2023-05-14T05:48:48.485Z")])
    seen: list[Any] = []
    with stubber:
        poll_region(
            database=database,
            client=client,
            region="us-east-1",
            min_severity=4.0,
            now=lambda: NOW,
            on_recorded=seen.extend if callback else None,
        )
    assert [r.outcome for r in seen] == (["opened"] if callback else [])
