"""The pieces behind the route: message parsing, card blocks, the poller's lease and timer."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import boto3
from botocore.stub import Stubber
from sqlalchemy import select

from bot.guardduty.messages import finding_payloads, is_trusted_finding_message
from bot.guardduty.poller import GuardDutyPoller
from bot.views.guardduty import finding_blocks, plan_button
from commands.findings.ingest import record_findings
from commands.findings.normalize import normalize_finding
from storage.models import Incident
from tests.bot.guardduty.conftest import GuardDutyBot
from tests.commands.findings.guardduty_fixtures import ec2_detail, load_json

# --- trusted bot messages --------------------------------------------------------------------


def test_only_plain_messages_of_trusted_bots_in_the_channel_count() -> None:
    base = {"type": "message", "channel": "C0INC", "bot_id": "B1", "subtype": "bot_message"}
    trusted = {"trusted_bot_ids": ["B1"], "channel_id": "C0INC"}
    assert is_trusted_finding_message(base, **trusted)
    assert not is_trusted_finding_message({**base, "bot_id": "B2"}, **trusted)
    assert not is_trusted_finding_message({**base, "channel": "C0OTHER"}, **trusted)
    assert not is_trusted_finding_message({**base, "subtype": "message_changed"}, **trusted)
    no_bot = {k: v for k, v in base.items() if k not in ("bot_id", "subtype")}
    assert not is_trusted_finding_message({**no_bot, "user": "U1"}, **trusted)
    assert not is_trusted_finding_message(base, trusted_bot_ids=[], channel_id="C0INC")


def test_json_is_found_in_fences_escaped_text_links_and_fields() -> None:
    detail = ec2_detail()
    escaped = json.dumps(detail).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    # Slack turns URLs inside the JSON into <url|label> links.
    linked = escaped.replace(
        "ec2-11-111-111-1.us-east-1.compute.amazonaws.com",
        "<http://ec2-11-111-111-1.us-east-1.compute.amazonaws.com|"
        "ec2-11-111-111-1.us-east-1.compute.amazonaws.com>",
    )
    event = {
        "text": f"Alert!\n```{linked}```",
        "attachments": [
            {"fields": [{"title": "raw", "value": json.dumps({"id": "x", "type": "t"})}]},
            {"fallback": "no json here"},
        ],
    }
    found = finding_payloads(event)
    assert found[0] == detail
    assert found[1] == {"id": "x", "type": "t"}
    assert len(found) == 2


def test_messages_without_json_yield_nothing() -> None:
    assert finding_payloads({"text": "GuardDuty says hi {not json}"}) == []
    assert finding_payloads({"text": "[1, 2, 3]"}) == []


# --- card blocks -----------------------------------------------------------------------------


def card_incident(database: Any, detail: dict[str, Any]) -> Incident:
    with database.session() as session:
        (result,) = record_findings(
            session=session, findings=[normalize_finding(detail)], min_severity=1
        )
    with database.read_session() as session:
        return session.get(Incident, result.incident_id)


def test_bucket_cards_show_untagged_tags_and_a_typed_plan_button(database: Any) -> None:
    s3 = load_json("automated-response-sample__guardduty_s3_event.json")
    incident = card_incident(database, {**s3, "service": {**s3["service"], "archived": False}})
    blocks = finding_blocks(incident)
    text = json.dumps(blocks)
    assert "PenTest:S3/ParrotLinux" in text and "bucketName" in text
    assert "_not tagged_" in text  # no Name/owner... tags on the finding
    button = plan_button(incident)
    assert button is not None  # a bucket's plain name says no kind: the value names it
    assert json.loads(button["value"]) == {
        "resource_id": f"bucket:{incident.resource_id}",
        "incident": incident.key,
    }


def test_access_key_cards_offer_containment(database: Any) -> None:
    iam = load_json("custodian__iam-duty-event.json")["detail"]
    incident = card_incident(database, iam)
    button = plan_button(incident)
    assert button is not None
    assert button["action_id"] == "plan_containment"
    assert button["value"] == f"GeneratedFindingAccessKeyId {incident.key}"
    assert "GeneratedFindingUserName" in json.dumps(finding_blocks(incident))


def test_other_incidents_get_no_guardduty_blocks(database: Any) -> None:
    from commands.incidents import open_incident

    with database.session() as session:
        incident = open_incident(session=session, title="Manual", created_by="U1")
    assert finding_blocks(incident) == []
    assert plan_button(incident) is None


def test_configured_tag_keys_are_used(database: Any) -> None:
    detail = ec2_detail(resource__instanceDetails__tags=[{"key": "team", "value": "payments"}])
    incident = card_incident(database, detail)
    text = json.dumps(finding_blocks(incident, tag_keys={"owner": "team"}))
    assert "*Owner*\\npayments" in text


# --- polling ---------------------------------------------------------------------------------


def stubbed_guardduty(detector_ids: list[str]) -> Any:
    client = boto3.client("guardduty", region_name="us-east-1")
    stubber = Stubber(client)
    stubber.add_response("list_detectors", {"DetectorIds": detector_ids})
    stubber.activate()
    return client


def test_the_lease_lets_one_process_poll_per_interval(
    guardduty_bot: Callable[..., GuardDutyBot],
) -> None:
    gd = guardduty_bot({"guardduty": {"poll_interval_seconds": 60}})
    runtime = gd.bot.runtime
    first, second = GuardDutyPoller(runtime, worker_id="a"), GuardDutyPoller(runtime, worker_id="b")
    assert first.claim() is True
    assert second.claim() is False
    assert first.claim() is False  # not again within the interval
    later = runtime.now() + dt.timedelta(seconds=61)
    runtime.now = lambda: later
    assert second.claim() is True


def test_run_once_polls_every_region_and_feeds_the_cards(
    guardduty_bot: Callable[..., GuardDutyBot],
) -> None:
    gd = guardduty_bot({"guardduty": {"poll_interval_seconds": 60, "regions": ["us-east-1"]}})
    runtime = gd.bot.runtime
    client = boto3.client("guardduty", region_name="us-east-1")
    stubber = Stubber(client)
    stubber.add_response("list_detectors", {"DetectorIds": ["det1"]})
    stubber.add_response("list_findings", {"FindingIds": ["c2c40bf921b79794d9bd0f4559ec6ace"]})
    finding = json.loads(json.dumps(_stix_finding()))
    stubber.add_response("get_findings", {"Findings": [finding]})
    stubber.activate()
    ec2 = boto3.client("ec2", region_name="us-east-1")  # moto: the instance is unknown
    runtime.options.guardduty_clients = lambda service, region: (
        client if service == "guardduty" else ec2
    )
    results = GuardDutyPoller(runtime).run_once()
    assert [r.region for r in results] == ["us-east-1"]
    assert [x.outcome for x in results[0].results] == ["opened"]
    gd.settle()
    assert len(gd.bot.slack.calls_for("chat.postMessage")) == 1
    with gd.bot.session() as session:
        assert session.scalars(select(Incident.resource_id)).one() == "i-0999999999999999"


def test_polling_is_off_with_a_zero_interval(guardduty_bot: Callable[..., GuardDutyBot]) -> None:
    gd = guardduty_bot({"guardduty": {"poll_interval_seconds": 0}})
    assert GuardDutyPoller(gd.bot.runtime).start() is False


def _stix_finding() -> dict[str, Any]:
    from tests.commands.findings.guardduty_fixtures import GUARDDUTY_DIR, payloads

    path = GUARDDUTY_DIR / "stix-shifter__test_aws_guardduty_transmission.py.txt"
    finding = dict(payloads(path))["line 30"]["Findings"][0]
    finding["Service"]["Archived"] = False
    finding["Service"]["Action"]["NetworkConnectionAction"]["Blocked"] = False
    finding["Severity"] = 8
    return finding


def test_assumed_role_cards_offer_the_role_plan(database: Any) -> None:
    iam = load_json("custodian__iam-duty-event.json")["detail"]
    details = iam["resource"]["accessKeyDetails"]
    iam["resource"]["accessKeyDetails"] = {**details, "userType": "AssumedRole"}
    incident = card_incident(database, iam)
    button = plan_button(incident)
    assert button is not None
    assert json.loads(button["value"]) == {
        "resource_id": "role:GeneratedFindingUserName",
        "incident": incident.key,
    }
