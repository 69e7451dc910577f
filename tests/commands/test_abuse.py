"""Abuse reports: Support cases through a Stubber, reminders until answered (real SQLite)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from sqlalchemy import select

from bot.views.reminders import delivery_text as said
from commands.abuse import (
    NO_SUPPORT_API,
    REMIND_EVERY,
    abuse_delivery,
    abuse_lines,
    case_answered,
    check_answers,
    is_case_id,
    mark_answered,
    open_support_case,
    parse_args,
    report_abuse,
)
from commands.deadlines import delivery as deliveries
from commands.deadlines import queue
from commands.deadlines.policy import DeadlinePolicy
from commands.errors import UserError
from commands.incidents import get_incident, open_incident
from containment.context import ActionContext
from storage.models import Reminder
from storage.timeline import latest_events
from tests.clock import TEST_CLOCK

pytestmark = pytest.mark.dates  # CI reruns these with the clock shifted (.ci/run)

T0 = dt.datetime(2026, 11, 27, 8, 0, tzinfo=dt.UTC)
CASE = "case-123456789012-muen-2026-7c1f0a3b9e2d4c55"


def prepare(session: Any, claim: queue.Claim, now: dt.datetime) -> deliveries.Delivery | None:
    return deliveries.prepare_delivery(
        session=session,
        claim=claim,
        now=now,
        policy=DeadlinePolicy(),
        kinds={"abuse": abuse_delivery},
    )


def support_client() -> tuple[Any, Stubber]:
    client = boto3.client("support", region_name="us-east-1")
    return client, Stubber(client)


def hooked(responses: list[tuple[str, Any, Any]]) -> tuple[ActionContext, list[Stubber]]:
    """An ActionContext whose Support client answers `responses` in order."""
    stubs: list[Stubber] = []

    def hook(client: Any) -> None:
        if client.meta.service_model.service_name != "support":
            return
        stub = Stubber(client)
        # CreateCase goes through the client that does not retry by itself; the rest not.
        creates = client.meta.config.retries["total_max_attempts"] == 1
        for method, response, params in responses:
            if (method == "create_case") != creates:
                continue
            if isinstance(response, Exception):
                stub.add_client_error(method, *response.args)
            else:
                stub.add_response(method, response, params)
        stub.activate()
        stubs.append(stub)

    return ActionContext(now=TEST_CLOCK.now, incident_key="-", client_hooks=(hook,)), stubs


def test_parse_args_and_case_ids() -> None:
    assert parse_args("AWS-ABUSE-8123 port scanning from 203.0.113.9") == (
        "AWS-ABUSE-8123",
        "port scanning from 203.0.113.9",
    )
    assert is_case_id(CASE) and is_case_id("1234567890")
    assert not is_case_id("AWS-ABUSE-8123")
    with pytest.raises(UserError, match="Usage"):
        parse_args("AWS-ABUSE-8123")
    with pytest.raises(UserError, match="does not look like"):
        parse_args("<@U123> spam")


def test_creates_a_support_case() -> None:
    client, stub = support_client()
    stub.add_response(
        "create_case",
        {"caseId": CASE},
        {
            "subject": "Abuse report AWS-ABUSE-8123: port scanning",
            "communicationBody": (
                "We received AWS abuse report AWS-ABUSE-8123 and are investigating it.\n\n"
                "Summary: port scanning\n\nWe will reply with our findings and the actions taken."
            ),
            "issueType": "customer-service",
            "severityCode": "high",
            "language": "en",
        },
    )
    with stub:
        out = open_support_case(support=client, reference="AWS-ABUSE-8123", summary="port scanning")
    assert (out.case_id, out.api) == (CASE, "created")


def test_lost_create_case_answer_finds_the_case_instead_of_opening_another() -> None:
    client, stub = support_client()
    once, once_stub = support_client()
    once_stub.add_client_error("create_case", "InternalServerError", "lost", 500)
    stub.add_response(
        "describe_cases",
        {"cases": [{"caseId": CASE, "subject": "Abuse report AWS-ABUSE-8123: port scanning"}]},
        {
            "afterTime": (T0 - dt.timedelta(days=1)).isoformat(),
            "includeResolvedCases": True,
            "includeCommunications": False,
        },
    )
    retries: list[dict[str, Any]] = []
    ctx = ActionContext(
        incident_key="INC-9", now=lambda: T0, sleep=lambda _: None, on_aws_retry=retries.append
    )
    with stub, once_stub:
        out = open_support_case(
            support=client,
            once=once,
            ctx=ctx,
            reference="AWS-ABUSE-8123",
            summary="port scanning",
        )
    assert (out.case_id, out.api) == (CASE, "created")
    once_stub.assert_no_pending_responses()  # one CreateCase, not a second
    assert [(r["operation"], r["after"]) for r in retries] == [
        ("CreateCase", "InternalServerError")
    ]


def test_basic_support_plan_says_so() -> None:
    client, stub = support_client()
    stub.add_client_error(
        "create_case",
        "SubscriptionRequiredException",
        "AWS Premium Support Subscription is required to use this service.",
        400,
    )
    with stub:
        out = open_support_case(support=client, reference="AWS-ABUSE-8123", summary="spam")
    assert out.api == "unavailable" and out.case_id is None
    assert out.message == NO_SUPPORT_API


def test_existing_case_is_looked_up_not_created() -> None:
    client, stub = support_client()
    stub.add_response(
        "describe_cases",
        {
            "cases": [
                {
                    "caseId": CASE,
                    "displayId": "1234567890",
                    "subject": "Abuse report",
                    "status": "pending-customer-action",
                    "serviceCode": "customer-account",
                    "categoryCode": "security",
                    "severityCode": "high",
                    "submittedBy": "abuse@amazonaws.com",
                    "timeCreated": "2026-11-27T07:55:00.000Z",
                }
            ]
        },
        {"displayId": "1234567890", "includeResolvedCases": True, "includeCommunications": False},
    )
    with stub:
        out = open_support_case(support=client, reference="1234567890", summary="spam")
    assert (out.case_id, out.api, out.status) == (CASE, "existing", "pending-customer-action")


def test_report_opens_an_incident_and_reminds_until_answered(database: Any) -> None:
    ctx, stubs = hooked([("create_case", {"caseId": CASE}, None)])
    result = report_abuse(
        db=database,
        ctx=ctx,
        reference="AWS-ABUSE-8123",
        summary="outbound SSH scanning",
        actor="U1",
        now=lambda: T0,
    )
    stubs[0].assert_no_pending_responses()
    assert result.opened and result.case_id == CASE
    assert result.reminder_due == T0 + REMIND_EVERY
    with database.read_session() as s:
        inc = get_incident(session=s, key=result.incident_key)
        assert inc.support_case_id == CASE and inc.severity == "high"
        assert inc.title == "AWS abuse report AWS-ABUSE-8123: outbound SSH scanning"
        ev = latest_events(session=s, incident=inc, limit=1)[0]
        assert ev.kind == "abuse.reported"
        assert f"Opened AWS Support case {CASE}" in ev.summary
        assert abuse_lines(inc.facts) == [f"abuse report AWS-ABUSE-8123 ({CASE}): NOT answered yet"]

    # Reported again (a second responder): same incident, no second Support case.
    again = report_abuse(
        db=database,
        ctx=ctx,
        reference="AWS-ABUSE-8123",
        summary="outbound SSH scanning",
        actor="U2",
        now=lambda: T0,
    )
    assert (again.incident_key, again.opened) == (result.incident_key, False)
    # The first report's two Support clients (reads, the create); the repeat made none.
    assert len(stubs) == 2

    # Due: the reminder posts and schedules the next one.
    due = T0 + REMIND_EVERY
    with database.session() as s:
        claims = queue.claim_due(session=s, now=due, worker_id="w1")
    assert [c.kind for c in claims] == ["abuse"]
    with database.session() as s:
        delivery = prepare(s, claims[0], due)
    assert delivery is not None
    assert "AWS abuse report AWS-ABUSE-8123" in said(delivery)
    assert f"(Support case {CASE}) has been unanswered for 4 h 0 m." in said(delivery)
    assert said(delivery).endswith(f"/incident abuse answered {result.incident_key}.")
    with database.read_session() as s:
        pending = s.scalars(select(Reminder).where(Reminder.status == "pending")).all()
        assert [(r.kind, r.due_at) for r in pending] == [("abuse", due + REMIND_EVERY)]

    mark_answered(db=database, incident_key=result.incident_key, actor="U2", note="replied")
    with database.read_session() as s:
        assert s.scalars(select(Reminder).where(Reminder.status == "pending")).all() == []
        inc = get_incident(session=s, key=result.incident_key)
        assert abuse_lines(inc.facts)[0].endswith(": answered")
        kinds = [e.kind for e in latest_events(session=s, incident=inc, limit=3)]
        assert kinds[:2] == ["reminders.cancelled", "abuse.answered"]
    with pytest.raises(UserError, match="already marked answered"):
        mark_answered(db=database, incident_key=result.incident_key, actor="U2")


def test_joins_the_incident_it_is_run_in_and_tracks_without_support_api(database: Any) -> None:
    with database.session() as s:
        open_incident(session=s, title="crypto miner", created_by="U1")
    ctx, _ = hooked(
        [("create_case", Exception("SubscriptionRequiredException", "Premium required", 400), None)]
    )
    result = report_abuse(
        db=database,
        ctx=ctx,
        reference="AWS-ABUSE-77",
        summary="mining pool traffic",
        actor="U1",
        incident_key="INC-1",
        now=lambda: T0,
    )
    assert (result.incident_key, result.opened, result.case_id) == ("INC-1", False, None)
    assert result.support.api == "unavailable"
    with database.read_session() as s:
        inc = get_incident(session=s, key="INC-1")
        assert inc.support_case_id == "AWS-ABUSE-77"
        assert NO_SUPPORT_API in latest_events(session=s, incident=inc, limit=1)[0].summary
        assert abuse_lines(inc.facts)[1].startswith("no AWS Support API")
    # An answered-by-hand report stops a reminder that was already claimed.
    mark_answered(db=database, incident_key="INC-1", actor="U1")
    with database.session() as s:
        reminder = s.scalars(select(Reminder)).one()
        reminder.status = "pending"  # as if claimed just before the answer landed
    with database.session() as s:
        claims = queue.claim_due(session=s, now=T0 + REMIND_EVERY, worker_id="w1")
        assert len(claims) == 1
    with database.session() as s:
        assert prepare(s, claims[0], T0 + REMIND_EVERY) is None


def _comm(by: str, at: str) -> dict[str, Any]:
    return {"caseId": CASE, "body": "…", "submittedBy": by, "timeCreated": at}


def _case(status: str) -> dict[str, Any]:
    return {"cases": [{"caseId": CASE, "displayId": "1234567890", "status": status}]}


@pytest.mark.parametrize(
    ("opened_by_us", "status", "comms", "answered"),
    [
        # We opened the case: answered when AWS writes back.
        (True, "opened", [_comm("ir@example.com", "2026-11-27T08:01:00Z")], False),
        (
            True,
            "pending-customer-action",
            [_comm("Amazon Web Services", "2026-11-27T09:00:00Z")],
            True,
        ),
        # AWS opened it: answered when someone on our side writes on it.
        (
            False,
            "pending-customer-action",
            [_comm("Amazon Web Services", "2026-11-27T08:05:00Z")],
            False,
        ),
        (
            False,
            "opened",
            [_comm("arn:aws:iam::123456789012:user/alice", "2026-11-27T09:30:00Z")],
            True,
        ),
        (False, "resolved", [], True),
    ],
)
def test_case_answered(opened_by_us: bool, status: str, comms: list, answered: bool) -> None:
    client, stub = support_client()
    stub.add_response(
        "describe_cases",
        _case(status),
        {"caseIdList": [CASE], "includeResolvedCases": True, "includeCommunications": False},
    )
    if status != "resolved":
        stub.add_response(
            "describe_communications",
            {"communications": comms},
            {"caseId": CASE, "afterTime": "2026-11-27T08:00:00Z"},
        )
    with stub:
        why = case_answered(support=client, case_id=CASE, since=T0, opened_by_us=opened_by_us)
        stub.assert_no_pending_responses()
    assert bool(why) is answered


def test_check_answers_marks_and_stops_reminders(database: Any) -> None:
    ctx, _ = hooked([("create_case", {"caseId": CASE}, None)])
    result = report_abuse(
        db=database,
        ctx=ctx,
        reference="AWS-ABUSE-1",
        summary="scans",
        actor="U1",
        now=lambda: T0,
    )
    with database.session() as s:  # one more report the Support API cannot see
        open_incident(session=s, title="basic plan", created_by="U1")
    basic, _ = hooked(
        [("create_case", Exception("SubscriptionRequiredException", "no", 400), None)]
    )
    report_abuse(
        db=database,
        ctx=basic,
        reference="AWS-ABUSE-2",
        summary="spam",
        actor="U1",
        incident_key="INC-2",
        now=lambda: T0,
    )

    client, stub = support_client()
    stub.add_response("describe_cases", _case("opened"), None)
    stub.add_response(
        "describe_communications",
        {"communications": [_comm("Amazon Web Services", "2026-11-27T10:00:00Z")]},
        None,
    )
    with stub:
        keys = check_answers(db=database, client_for=lambda account: client)
    assert keys == [result.incident_key]
    with database.read_session() as s:
        inc = get_incident(session=s, key=result.incident_key)
        assert inc.facts["abuse"]["answered_by"] == "system"
        ev = latest_events(session=s, incident=inc, limit=2)
        assert ev[1].summary.startswith("AWS abuse report AWS-ABUSE-1 answered: AWS wrote on")
        pending = s.scalars(
            select(Reminder).where(Reminder.status == "pending", Reminder.incident_id == inc.id)
        ).all()
        assert pending == []
    # Nothing left to check: no second round of calls.
    assert check_answers(db=database, client_for=lambda account: None) == []
