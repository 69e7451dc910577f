"""Security Hub intake and the write-back on close, end to end: an ASFF event posted to
/guardduty/events opens the incident; `/incident close` archives its GuardDuty findings and
resolves them in Security Hub. moto has no GuardDuty findings API and no BatchUpdateFindings:
botocore Stubbers answer with the APIs' real response shapes (validated against the models)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from sqlalchemy import select

from storage.models import Finding, Incident, TimelineEvent
from tests.bot.guardduty.conftest import GuardDutyBot
from tests.bot.guardduty.test_guardduty_route import event, run_tagged_instance
from tests.bot.test_incident_commands import ack_json
from tests.commands.findings.guardduty_fixtures import ec2_detail
from tests.commands.findings.test_findings_asff import GD_ID, imported

Start = Callable[..., GuardDutyBot]
DETECTOR = "12abc34d567e8fa901bc2d34e56789f0"
GD_ARN = f"arn:aws:guardduty:us-east-1:123456789012:detector/{DETECTOR}/finding/{GD_ID}"
GD_PRODUCT = "arn:aws:securityhub:us-east-1::product/aws/guardduty"
CONFIG = {"guardduty": {"archive_on_close": True}, "securityhub": {"enabled": True}}


class Stubs:
    """Stubbed clients the bot's write-back gets, one per service; all answers queued."""

    def __init__(self) -> None:
        self.clients: dict[str, Any] = {}
        self.stubbers: dict[str, Stubber] = {}
        for service in ("guardduty", "securityhub"):
            client = boto3.client(service, region_name="us-east-1")
            self.clients[service] = client
            self.stubbers[service] = Stubber(client)

    def factory(self, service: str, region: str | None) -> Any:
        assert region == "us-east-1", region
        return self.clients[service]

    def __enter__(self) -> Stubs:
        for stub in self.stubbers.values():
            stub.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        for stub in self.stubbers.values():
            stub.deactivate()


def timeline(gd: GuardDutyBot) -> list[TimelineEvent]:
    with gd.bot.session() as session:
        return list(session.scalars(select(TimelineEvent).order_by(TimelineEvent.seq)))


def close(gd: GuardDutyBot, summary: str = "rebuilt from a clean image") -> None:
    assert ack_json(gd.bot.command(f"close INC-1 {summary}")) == {}
    gd.bot.slack.wait_for("chat.update")
    gd.bot.idle()


def test_asff_event_opens_the_incident_and_close_writes_back(guardduty_bot: Start) -> None:
    instance = run_tagged_instance({"Name": "checkout-web-1"})
    payload = imported()
    payload["detail"]["findings"] = payload["detail"]["findings"][:1]
    text = json.dumps(payload).replace("i-0abcd1234ef567890", instance)
    gd = guardduty_bot(CONFIG)
    response = gd.post(json.loads(text))
    assert response.status_code == 200, response.text
    assert response.json()["opened"] == ["INC-1"]
    gd.settle()
    with gd.bot.session() as session:
        incident = session.scalars(select(Incident)).one()
        assert incident.resource_id == instance and incident.severity == "high"
        assert incident.facts["source"] == "securityhub"

    stubs = Stubs()
    stubs.stubbers["guardduty"].add_response(
        "archive_findings", {}, {"DetectorId": DETECTOR, "FindingIds": [GD_ID]}
    )
    stubs.stubbers["securityhub"].add_response(
        "batch_update_findings",
        {
            "ProcessedFindings": [{"Id": GD_ARN, "ProductArn": GD_PRODUCT}],
            "UnprocessedFindings": [],
        },
        {
            "FindingIdentifiers": [{"Id": GD_ARN, "ProductArn": GD_PRODUCT}],
            "Workflow": {"Status": "RESOLVED"},
            "Note": {
                "Text": "Resolved by incident-bot: INC-1 closed. rebuilt from a clean image",
                "UpdatedBy": "incident-bot",
            },
        },
    )
    gd.bot.runtime.options.writeback_clients = stubs.factory
    with stubs:
        close(gd)
        for stub in stubs.stubbers.values():
            stub.assert_no_pending_responses()

    events = timeline(gd)
    kinds = [e.kind for e in events]
    assert kinds[-3:] == ["incident.status", "findings.archived", "securityhub.resolved"]
    assert "bot.error" not in kinds
    assert json.loads(events[-2].details)["finding_ids"] == [GD_ID]
    with gd.bot.session() as session:
        assert session.scalars(select(Finding.archived)).one() is True
    line = gd.bot.slack.wait_for("chat.postMessage", lambda c: "🗄️" in c.args.get("text", ""))
    assert "1 finding(s) archived" in line.args["text"]
    assert "1 finding(s) RESOLVED" in line.args["text"]


def test_refusals_are_recorded_as_refusals(guardduty_bot: Start) -> None:
    gd = guardduty_bot(CONFIG)
    detail = ec2_detail(severity=8, arn=GD_ARN, id=GD_ID)
    assert gd.post(event(detail)).status_code == 200
    gd.settle()
    stubs = Stubs()
    stubs.stubbers["guardduty"].add_client_error(
        "archive_findings", "AccessDeniedException", "not allowed", 403
    )
    stubs.stubbers["securityhub"].add_response(
        "batch_update_findings",
        {
            "ProcessedFindings": [],
            "UnprocessedFindings": [
                {
                    "FindingIdentifier": {"Id": GD_ARN, "ProductArn": GD_PRODUCT},
                    "ErrorCode": "FindingNotFound",
                    "ErrorMessage": "Finding not found",
                }
            ],
        },
    )
    gd.bot.runtime.options.writeback_clients = stubs.factory
    with stubs:
        close(gd, "false positive")
    kinds = [e.kind for e in timeline(gd)]
    assert kinds[-3:] == ["incident.status", "findings.archive_failed", "securityhub.unprocessed"]
    assert "findings.archived" not in kinds and "securityhub.resolved" not in kinds
    with gd.bot.session() as session:
        assert session.scalars(select(Finding.archived)).one() is False
    line = gd.bot.slack.wait_for("chat.postMessage", lambda c: "🗄️" in c.args.get("text", ""))
    assert "AccessDeniedException" in line.args["text"]
    assert "FindingNotFound" in line.args["text"]


@pytest.mark.parametrize("config", [None, {"securityhub": {"enabled": False}}])
def test_off_by_default_no_aws_call(guardduty_bot: Start, config: Any) -> None:
    gd = guardduty_bot(config)
    assert gd.post(event(ec2_detail(severity=8, arn=GD_ARN, id=GD_ID))).status_code == 200
    gd.settle()
    stubs = Stubs()  # nothing queued: any call would fail the close's write-back
    gd.bot.runtime.options.writeback_clients = stubs.factory
    with stubs:
        close(gd)
    kinds = [e.kind for e in timeline(gd)]
    assert kinds[-1] == "incident.status" and "bot.error" not in kinds
