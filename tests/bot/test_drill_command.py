"""`/incident drill` over signed HTTP: sandbox resources in moto, GuardDuty through Stubber."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws
from sqlalchemy import select

from commands.drills.sandbox import Sandbox, build_sandbox
from storage.models import ContainmentRequest, Incident, TimelineEvent
from tests.slack_signing import block_actions_payload, interactivity_body


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with mock_aws():
        yield build_sandbox(region="us-east-1")


def _guardduty(detectors: list[str], sample_type: str | None) -> Any:
    client = boto3.client("guardduty", region_name="us-east-1")
    stub = Stubber(client)
    stub.add_response("list_detectors", {"DetectorIds": detectors}, {})
    if detectors and sample_type:
        stub.add_response(
            "create_sample_findings",
            {},
            {"DetectorId": detectors[0], "FindingTypes": [sample_type]},
        )
    stub.activate()
    client.stubber = stub  # type: ignore[attr-defined]
    return client


def _start(bot_factory: Any, sandbox: Sandbox | None, guardduty: Any, **drills: Any) -> Any:
    config: dict[str, Any] = {
        "approvals": {"approvers": ["U0APPROVER1", "U0APPROVER2"]},
        "contacts": {"slack_usergroup": "S0SECOPS"},
        "guardduty": {"poll_interval_seconds": 0},
    }
    if sandbox is not None:
        config["drills"] = {"instance_id": sandbox.instance_id, **drills}
    bot = bot_factory(config)

    def clients(service: str, region: str) -> Any:
        return guardduty if service == "guardduty" else boto3.client(service, region_name=region)

    bot.runtime.options.drill_clients = clients
    return bot


def test_drill_opens_a_drill_incident_with_a_dry_run_plan_and_pages_no_one(
    bot_factory: Any, sandbox: Sandbox
) -> None:
    gd = _guardduty(["det-1"], "Backdoor:EC2/C&CActivity.B!DNS")
    bot = _start(bot_factory, sandbox, gd)
    r = bot.command("drill ec2-c2")
    assert r.status_code == 200
    assert "Starting DRILL ec2-c2" in r.json()["text"]
    done = bot.slack.wait_for("response_url", lambda c: "started" in c.args["text"], timeout=20)
    assert "INC-1" in done.args["text"] and "dry run" in done.args["text"]
    assert "requested on detector det-1" in done.args["text"]
    gd.stubber.assert_no_pending_responses()

    card = bot.slack.wait_for("chat.postMessage", lambda c: "INC-1" in str(c.args), timeout=20)
    assert "DRILL" in str(card.args.get("blocks")) or "DRILL" in card.args.get("text", "")
    approval = bot.slack.wait_for(
        "chat.postMessage", lambda c: "containment_approve" in str(c.args), timeout=20
    )
    assert "[DRILL] [DRY RUN]" in str(approval.args["blocks"])
    bot.idle(10)
    with bot.session() as s:
        incident = s.scalars(select(Incident)).one()
        request = s.scalars(select(ContainmentRequest)).one()
    assert incident.is_drill
    assert request.dry_run, "a drill never changes the sandbox unless drills.allow_changes"

    # A second responder approves; the dry run finishes and no real contact is paged.
    payload = block_actions_payload(
        "containment_approve",
        str(request.id),
        user_id="U0APPROVER2",
        message_ts=approval.response["ts"],
        response_url=bot.slack.response_url("approve"),
    )
    assert bot.sender.post(interactivity_body(payload)).status_code == 200
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with bot.session() as s:
            if s.get(ContainmentRequest, request.id).finished_at:
                break
        time.sleep(0.1)
    bot.idle(10)
    with bot.session() as s:
        finished = s.get(ContainmentRequest, request.id)
        kinds = s.scalars(
            select(TimelineEvent.kind).where(TimelineEvent.incident_id == incident.id)
        ).all()
    assert finished.status == "succeeded" and finished.decided_by == "U0APPROVER2"
    assert "contacts.not_paged" in kinds and "contacts.notified" not in kinds
    with bot.session() as s:
        not_paged = s.scalars(
            select(TimelineEvent.summary).where(TimelineEvent.kind == "contacts.not_paged")
        ).all()
    assert any("high incident opened" in summary for summary in not_paged)  # opening too
    assert "S0SECOPS" not in str(bot.slack.calls)
    ec2 = boto3.client("ec2", region_name="us-east-1")
    enis = ec2.describe_network_interfaces(NetworkInterfaceIds=sandbox.eni_ids)
    assert all(
        [g["GroupId"] for g in e["Groups"]] == [sandbox.web_group_id]
        for e in enis["NetworkInterfaces"]
    ), "a dry-run drill leaves the sandbox as it was"


def test_without_sandbox_resources_the_answer_says_what_to_configure(bot_factory: Any) -> None:
    with mock_aws():
        bot = _start(bot_factory, None, _guardduty([], None))
        bot.command("drill ssh-brute-force")
        answer = bot.slack.wait_for("response_url", lambda c: "drills." in c.args["text"])
    assert "Set drills.instance_id" in answer.args["text"]
    assert "incident-bot drill --scenario ssh-brute-force" in answer.args["text"]
    with bot.session() as s:
        assert s.scalars(select(Incident)).all() == []


def test_unknown_scenario_is_one_sentence(bot_factory: Any, sandbox: Sandbox) -> None:
    bot = _start(bot_factory, sandbox, _guardduty([], None))
    r = bot.command("drill zombies")
    assert r.status_code == 200
    assert "There is no drill 'zombies': choose one of ec2-c2" in r.json()["text"]


def test_guardduty_off_is_said_plainly(bot_factory: Any, sandbox: Sandbox) -> None:
    bot = _start(bot_factory, sandbox, _guardduty([], None))
    bot.command("drill")
    done = bot.slack.wait_for("response_url", lambda c: "started" in c.args["text"], timeout=20)
    assert "GuardDuty is not enabled here" in done.args["text"]


def test_offline_only_scenarios_say_how_to_run_them(bot_factory: Any, sandbox: Sandbox) -> None:
    bot = _start(bot_factory, sandbox, _guardduty([], None))
    bot.command("drill s3-public")
    answer = bot.slack.wait_for("response_url", lambda c: "offline" in c.args["text"])
    assert "incident-bot drill --scenario s3-public" in answer.args["text"]
    with bot.session() as s:
        assert s.scalars(select(Incident)).all() == []
