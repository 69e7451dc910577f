"""CloudTrail lookups through botocore's Stubber (moto has no lookup_events)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber

from commands.errors import UserError
from commands.incidents import get_incident, open_incident
from commands.trail import lookup, parse_args, run_trail
from containment.context import ActionContext
from storage.timeline import latest_events
from tests.clock import TEST_CLOCK

pytestmark = pytest.mark.dates  # CI reruns these with the clock shifted (.ci/run)

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
INSTANCE = "i-0abc1234def567890"
KEY = "AKIAIOSFODNN7EXAMPLE"


def ct_event(
    n: int, name: str, *, minutes_ago: int, ip: str = "198.51.100.7", error: str | None = None
) -> dict[str, Any]:
    """One event as lookup_events returns it: CloudTrailEvent is a JSON string."""
    at = NOW - dt.timedelta(minutes=minutes_ago)
    record: dict[str, Any] = {
        "eventVersion": "1.08",
        "userIdentity": {
            "type": "AssumedRole",
            "principalId": "AROAEXAMPLE:i-0abc1234def567890",
            "arn": "arn:aws:sts::123456789012:assumed-role/web-role/i-0abc1234def567890",
            "accountId": "123456789012",
            "accessKeyId": "ASIAEXAMPLEKEY000001",
        },
        "eventTime": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventSource": "ec2.amazonaws.com",
        "eventName": name,
        "awsRegion": "us-east-1",
        "sourceIPAddress": ip,
        "userAgent": "aws-cli/2.15.0 Python/3.11.6 Linux/6.1",
        "requestParameters": {"instancesSet": {"items": [{"instanceId": INSTANCE}]}},
        "responseElements": None,
        "requestID": f"req-{n}",
        "eventID": f"evt-{n:04d}",
        "readOnly": name.startswith("Describe"),
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": "123456789012",
    }
    if error:
        record["errorCode"] = error
        record["errorMessage"] = "You are not authorized to perform this operation."
    return {
        "EventId": f"evt-{n:04d}",
        "EventName": name,
        "ReadOnly": "true" if name.startswith("Describe") else "false",
        "AccessKeyId": "ASIAEXAMPLEKEY000001",
        "EventTime": at,
        "EventSource": "ec2.amazonaws.com",
        "Username": "i-0abc1234def567890",
        "Resources": [{"ResourceType": "AWS::EC2::Instance", "ResourceName": INSTANCE}],
        "CloudTrailEvent": json.dumps(record),
    }


def stubbed(region: str = "us-east-1") -> tuple[Any, Stubber]:
    client = boto3.client("cloudtrail", region_name=region)
    return client, Stubber(client)


def expected(attribute: str, value: str, hours: float, token: str | None = None) -> dict:
    params: dict[str, Any] = {
        "LookupAttributes": [{"AttributeKey": attribute, "AttributeValue": value}],
        "StartTime": NOW - dt.timedelta(hours=hours),
        "EndTime": NOW,
        "MaxResults": 50,
    }
    if token:
        params["NextToken"] = token
    return params


def test_parse_args() -> None:
    assert parse_args(INSTANCE) == (INSTANCE, 24)
    assert parse_args(f"{KEY} 72h") == (KEY, 72)
    with pytest.raises(UserError, match="neither an instance id"):
        parse_args("bucket-name 4")
    with pytest.raises(UserError, match="not a number of hours"):
        parse_args(f"{INSTANCE} soon")
    with pytest.raises(UserError, match="between 1 and 2160"):
        parse_args(f"{INSTANCE} 3000")
    with pytest.raises(UserError, match="Usage"):
        parse_args("")


def test_paginates_newest_first_and_summarises() -> None:
    client, stub = stubbed()
    page1 = [ct_event(i, "DescribeInstances", minutes_ago=i) for i in range(1, 51)]
    page2 = [
        ct_event(51, "RunInstances", minutes_ago=60, ip="203.0.113.9"),
        ct_event(52, "CreateUser", minutes_ago=61, ip="203.0.113.9", error="AccessDenied"),
    ]
    stub.add_response(
        "lookup_events",
        {"Events": page1, "NextToken": "page-2"},
        expected("ResourceName", INSTANCE, 6),
    )
    stub.add_response(
        "lookup_events", {"Events": page2}, expected("ResourceName", INSTANCE, 6, "page-2")
    )
    with stub:
        result = lookup(
            clients={"us-east-1": client}, resource_id=INSTANCE, hours=6, now=lambda: NOW
        )
        stub.assert_no_pending_responses()
    assert len(result.rows) == 52 and not result.truncated
    assert result.rows[0]["event_id"] == "evt-0001"  # newest first
    assert result.rows[-1]["event_name"] == "CreateUser"
    s = result.summary
    assert s["writes"] == 2
    assert s["top_events"][0] == ("DescribeInstances", 50)
    assert dict(s["source_ips"]) == {"198.51.100.7": 50, "203.0.113.9": 2}
    assert s["errors"] == [("AccessDenied", 1)]
    assert s["last"] == "2026-11-27T11:59:00Z" and s["first"] == "2026-11-27T10:59:00Z"
    assert result.headline().startswith(
        f"CloudTrail for {INSTANCE}: 52 events in the last 6 h (2 writes, 1 errors)"
    )
    rows = list(csv.DictReader(io.StringIO(result.to_csv())))
    assert len(rows) == 52
    assert rows[-1]["error_code"] == "AccessDenied"
    assert rows[0]["principal"] == "i-0abc1234def567890"
    assert rows[0]["user_agent"].startswith("aws-cli/2.15.0")


def test_cap_stops_paging() -> None:
    client, stub = stubbed()
    page = [ct_event(i, "DescribeInstances", minutes_ago=i) for i in range(1, 51)]
    stub.add_response("lookup_events", {"Events": page, "NextToken": "more"}, None)
    with stub:
        result = lookup(
            clients={"us-east-1": client},
            resource_id=INSTANCE,
            hours=1,
            now=lambda: NOW,
            max_events=30,
        )
    assert len(result.rows) == 30 and result.truncated
    assert "30+ events" in result.headline()


def test_access_key_reads_global_region_too(database: Any) -> None:
    """An access key's IAM/STS calls are logged in us-east-1 even when the incident is elsewhere."""
    with database.session() as s:
        open_incident(
            session=s, title="key leaked", created_by="U1", resource_id=KEY, region="eu-west-1"
        )
    stubs: dict[str, Stubber] = {}

    def hook(client: Any) -> None:
        if client.meta.service_model.service_name != "cloudtrail":
            return
        region = client.meta.region_name
        stub = Stubber(client)
        minutes = 5 if region == "eu-west-1" else 3
        stub.add_response(
            "lookup_events",
            {"Events": [ct_event(minutes, f"Op-{region}", minutes_ago=minutes)]},
            {
                "LookupAttributes": [{"AttributeKey": "AccessKeyId", "AttributeValue": KEY}],
                "StartTime": ANY,
                "EndTime": ANY,
                "MaxResults": 50,
            },
        )
        stub.activate()
        stubs[region] = stub

    ctx = ActionContext(now=TEST_CLOCK.now, incident_key="INC-1", client_hooks=(hook,))
    key, result = run_trail(
        db=database,
        ctx=ctx,
        incident_key=None,
        resource_id=KEY,
        hours=24,
        actor="U1",
        now=lambda: NOW,
    )
    assert key == "INC-1"
    assert sorted(stubs) == ["eu-west-1", "us-east-1"]
    for stub in stubs.values():
        stub.assert_no_pending_responses()
    # Merged across regions, newest first.
    assert [r["event_name"] for r in result.rows] == ["Op-us-east-1", "Op-eu-west-1"]
    with database.read_session() as s:
        inc = get_incident(session=s, key="INC-1")
        ev = latest_events(session=s, incident=inc, limit=1)[0]
        assert ev.kind == "trail.lookup"
        assert ev.summary.startswith(f"CloudTrail for {KEY}: 2 events")
        details = json.loads(ev.details)
        assert details["event_ids"] == ["evt-0003", "evt-0005"]
        assert details["regions"] == ["eu-west-1", "us-east-1"]


def test_needs_an_incident(database: Any) -> None:
    with pytest.raises(UserError, match="No open incident names"):
        run_trail(
            db=database,
            ctx=ActionContext(now=TEST_CLOCK.now, incident_key="?"),
            incident_key=None,
            resource_id=INSTANCE,
            hours=1,
            actor="U1",
        )


def test_access_denied_is_a_user_error(database: Any) -> None:
    with database.session() as s:
        open_incident(session=s, title="x", created_by="U1", resource_id=INSTANCE)

    def hook(client: Any) -> None:
        if client.meta.service_model.service_name == "cloudtrail":
            stub = Stubber(client)
            stub.add_client_error("lookup_events", "AccessDeniedException", "not authorized", 400)
            stub.activate()

    with pytest.raises(UserError, match=r"cloudtrail:LookupEvents denied"):
        run_trail(
            db=database,
            ctx=ActionContext(now=TEST_CLOCK.now, incident_key="INC-1", client_hooks=(hook,)),
            incident_key="INC-1",
            resource_id=INSTANCE,
            hours=1,
            actor="U1",
        )
