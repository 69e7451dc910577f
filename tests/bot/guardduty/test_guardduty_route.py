"""POST /guardduty/events end to end: real HTTP, real WSGI app, fake Slack, moto, SQLite."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from bot.views.guardduty import FINDING_BLOCK
from storage.models import Finding, Incident, TimelineEvent
from tests.bot.guardduty.conftest import TOPIC, GuardDutyBot
from tests.bot.test_incident_commands import rich_texts
from tests.commands.findings.guardduty_fixtures import ec2_detail, load_json

Start = Callable[..., GuardDutyBot]
INSTANCE = "i-05746eb48123455e0"


def event(detail: dict[str, Any]) -> dict[str, Any]:
    """The custodian EventBridge envelope around a finding."""
    envelope = load_json("custodian__ec2-duty-event.json")
    envelope["detail"] = detail
    return envelope


def sns_notification(message: Any) -> dict[str, Any]:
    note = load_json("awsdocs-sns__http-Notification.json")
    note.update(TopicArn=TOPIC, Message=json.dumps(message), Subject="GuardDuty Finding")
    return note


def rows(gd: GuardDutyBot, model: Any) -> int:
    with gd.bot.session() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def card_posts(gd: GuardDutyBot) -> list[Any]:
    return gd.bot.slack.calls_for("chat.postMessage")


def mrkdwn_texts(blocks: list[dict[str, Any]]) -> str:
    """Every mrkdwn text of the blocks (plain_text, like the header, is never parsed)."""
    parts = []
    for block in blocks:
        for obj in [block.get("text"), *block.get("fields", []), *block.get("elements", [])]:
            if isinstance(obj, dict) and obj.get("type") == "mrkdwn":
                parts.append(obj["text"])
    return "\n".join(parts)


def section_texts(blocks: list[dict[str, Any]]) -> str:
    """What the card says: its mrkdwn texts, then its rich text (shown literally)."""
    return mrkdwn_texts(blocks) + "\n" + rich_texts(blocks)


def run_tagged_instance(tags: dict[str, str]) -> str:
    ec2 = boto3.client("ec2", region_name="us-east-1")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    spec = [{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}]
    return ec2.run_instances(
        ImageId=image, MinCount=1, MaxCount=1, InstanceType="t3.micro", TagSpecifications=spec
    )["Instances"][0]["InstanceId"]


# --- authentication and bad input ----------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "headers", "reason"),
    [
        (None, None, "missing Authorization"),
        ("wrong", None, "invalid ingest token"),
        (None, {"Authorization": "Bearer"}, "invalid ingest token"),
        (None, {"Authorization": "Basic " + base64.b64encode(b"sns:nope").decode()}, "invalid"),
    ],
)
def test_requests_without_the_token_are_refused(
    guardduty_bot: Start, token: str | None, headers: dict[str, str] | None, reason: str
) -> None:
    gd = guardduty_bot()
    response = gd.post(event(ec2_detail()), token=token, headers=headers)
    assert response.status_code == 401
    assert reason in response.json()["error"]
    assert rows(gd, Finding) == 0


def test_no_configured_token_refuses_everything(guardduty_bot: Start) -> None:
    gd = guardduty_bot()
    gd.bot.runtime.settings.env.ingest_token = None
    response = gd.post(event(ec2_detail()))
    assert response.status_code == 401
    assert "INCIDENT_BOT_INGEST_TOKEN is not set" in response.json()["error"]


def test_a_blank_token_accepts_no_blank_password(guardduty_bot: Start) -> None:
    gd = guardduty_bot()
    gd.bot.runtime.settings.env.ingest_token = SecretStr(" ")
    for credentials in (b"x: ", b"x:", b": "):
        basic = base64.b64encode(credentials).decode()
        response = gd.post(
            event(ec2_detail()), token=None, headers={"Authorization": f"Basic {basic}"}
        )
        assert response.status_code == 401, credentials
    assert gd.post(event(ec2_detail()), token=" ").status_code == 401
    assert rows(gd, Finding) == 0


def test_basic_auth_carries_the_token_for_sns_subscriptions(guardduty_bot: Start) -> None:
    gd = guardduty_bot()
    basic = base64.b64encode(b"incident-bot:ingest-token-for-tests").decode()
    response = gd.post(event(ec2_detail()), token=None, headers={"Authorization": f"Basic {basic}"})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (b"{not json", 400, "malformed JSON"),
        (b"[1, 2]", 400, "payload must be a JSON object, got list"),
        (json.dumps(event(ec2_detail(severity="high"))).encode(), 400, "severity must be a number"),
        (json.dumps(event(ec2_detail(updatedAt="soon"))).encode(), 400, "updatedAt is not a valid"),
        (json.dumps({"detail-type": "GuardDuty Finding"}).encode(), 400, "event detail must be"),
        (b'{"pad": "' + b"x" * (256 * 1024) + b'"}', 413, "the limit is 256 KB"),
    ],
)
def test_bad_input_gets_a_4xx_with_one_line_and_stores_nothing(
    guardduty_bot: Start, body: bytes, status: int, reason: str
) -> None:
    gd = guardduty_bot()
    response = gd.post(body)
    assert response.status_code == status
    error = response.json()["error"]
    assert reason in error and "\n" not in error
    assert rows(gd, Finding) == rows(gd, Incident) == 0


@pytest.mark.parametrize(
    ("detail", "reason"),
    [
        (ec2_detail(title="Miner \ud800 on web-3"), "unpaired UTF-16 surrogate"),
        (ec2_detail(service__additionalInfo={"note": "\udfff"}), "unpaired UTF-16 surrogate"),
        (ec2_detail(service__count=10**23), "count must be at most 2147483647"),
        (ec2_detail(service__count=2**40), "count must be at most 2147483647"),
        (ec2_detail(service__count=10**400), "count must be a finite number"),
        (ec2_detail(id="abc\x00def"), "id must not contain a NUL character"),
        (ec2_detail(title="a\x00b"), "title must not contain a NUL character"),
        (
            ec2_detail(resource__instanceDetails__instanceId="i-" + "0" * 250),
            "instanceId is 252 characters long; the limit is 200",
        ),
        (ec2_detail(id="f" * 100_000), "id is 100000 characters long; the limit is 200"),
        (ec2_detail(region="us-east-1" * 10), "region is 90 characters long; the limit is 30"),
    ],
)
def test_authenticated_but_unstorable_findings_get_a_400_never_a_500(
    guardduty_bot: Start, detail: dict[str, Any], reason: str
) -> None:
    """EventBridge retries a 5xx for a day: a finding the database cannot hold is refused with
    a 400 (not retried), and nothing of it is stored."""
    gd = guardduty_bot()
    response = gd.post(event(detail))
    assert response.status_code == 400, response.text
    assert reason in response.json()["error"]
    assert rows(gd, Finding) == rows(gd, Incident) == rows(gd, TimelineEvent) == 0
    # The same finding wrapped in SNS is refused for the same reason.
    signed = gd.sign(sns_notification(event(detail)))
    assert gd.post(signed).status_code == 400


def test_unstorable_bucket_names_are_left_out_not_stored(guardduty_bot: Start) -> None:
    detail = ec2_detail(
        resource__resourceType="S3Bucket",
        resource__s3BucketDetails=[{"name": "x" * 300}, {"name": "evidence\x00"}, {"name": "ok"}],
    )
    gd = guardduty_bot()
    response = gd.post(event(detail))
    assert response.status_code == 200, response.text
    with gd.bot.session() as session:
        assert session.scalars(select(Finding.resource_id)).all() == ["ok"]


def test_a_bad_finding_among_good_ones_stores_none(guardduty_bot: Start) -> None:
    gd = guardduty_bot()
    payload = {"Findings": [ec2_detail(), ec2_detail(id="second", service__count="many")]}
    response = gd.post(payload)
    assert response.status_code == 400
    assert response.json()["error"] == "Findings[1]: count must be a number, got 'many'"
    assert rows(gd, Finding) == 0


def test_other_guardduty_detail_types_are_accepted_and_ignored(guardduty_bot: Start) -> None:
    gd = guardduty_bot()
    response = gd.post(
        load_json("sumologic__aws-api-call-via-cloudtrail_CreateSampleFindings.json")
    )
    assert response.status_code == 202
    assert "AWS API Call via CloudTrail" in response.json()["ignored"]
    assert rows(gd, Finding) == 0


# --- findings to cards ---------------------------------------------------------------------


def test_first_finding_posts_one_card_with_facts_tags_and_plan_button(guardduty_bot: Start) -> None:
    instance_id = run_tagged_instance(
        {
            "Name": "payments-web-1",
            "DataClassification": "PII",
            "Criticality": "tier-1",
            "Owner": "team-payments",
        }
    )
    gd = guardduty_bot()
    detail = ec2_detail(severity=8, resource__instanceDetails__instanceId=instance_id)
    response = gd.post(event(detail))
    assert response.status_code == 200, response.text
    assert response.json()["opened"] == ["INC-1"]
    gd.settle()
    (post,) = card_posts(gd)
    assert post.args["channel"] == "C0INCIDENT"
    blocks = post.args["blocks"]
    text = section_texts(blocks)
    assert "Canary:EC2/Stateless.IntegTest" in text
    assert "8 (high)" in text
    assert f"`{instance_id}`" in text
    assert "11.111.111.1" in text  # the ENI's public IP
    assert "`0.0.0.0`" in text  # the remote IP
    for value in ("payments-web-1", "PII", "tier-1", "team-payments"):
        assert value in text
    assert "SAMPLE" not in text
    buttons = [e for b in blocks if b["type"] == "actions" for e in b["elements"]]
    plan = next(b for b in buttons if b.get("action_id") == "plan_containment")
    assert plan["value"] == f"{instance_id} INC-1"
    with gd.bot.session() as session:
        incident = session.scalars(select(Incident)).one()
        assert incident.card_ts == post.response["ts"] == incident.thread_ts
        assert incident.facts["tags_source"] == "ec2"
        kinds = session.scalars(
            select(TimelineEvent.kind).where(TimelineEvent.incident_id == incident.id)
        ).all()
    # The PII tag starts the regulator clock as the tags are read.
    assert kinds == [
        "incident.opened",
        "resource.tags",
        "incident.personal_data",
        "slack.card_posted",
    ]
    assert incident.personal_data


def test_sample_findings_are_labelled(guardduty_bot: Start) -> None:
    gd = guardduty_bot()
    detail = load_json("guardduty-waf-acl__gd2acl_test_event.json")["detail"]
    gd.post(event({**detail, "severity": 5}))
    gd.settle()
    (post,) = card_posts(gd)
    assert "[SAMPLE]" in post.args["text"]
    assert "*SAMPLE*" in section_texts(post.args["blocks"])


def test_finding_text_is_escaped_in_mrkdwn(guardduty_bot: Start) -> None:
    gd = guardduty_bot()
    hostile = "<!channel> *pwned* <https://evil.example|click> & more"
    gd.post(event(ec2_detail(title=hostile, type="Recon:EC2/<!here>")))
    gd.settle()
    (post,) = card_posts(gd)
    text = mrkdwn_texts(post.args["blocks"])
    assert "<!channel>" not in text and "<!here>" not in text and "<https://evil" not in text
    assert "*pwned*" not in text
    # The finding's type and title are rich text, which Slack shows as it is: no escaping.
    (headline,) = [b for b in post.args["blocks"] if b.get("block_id") == FINDING_BLOCK]
    assert headline["type"] == "rich_text"
    shown = rich_texts([headline])
    assert hostile in shown and "Recon:EC2/<!here>" in shown
    styles = {e["text"]: e.get("style") for e in headline["elements"][0]["elements"]}
    assert styles["Recon:EC2/<!here>"] == {"code": True}


def test_repeats_update_the_card_and_post_nothing_new(guardduty_bot: Start) -> None:
    gd = guardduty_bot(update_interval=0.2)
    gd.post(event(ec2_detail()))
    gd.settle()
    for n in range(2, 6):
        detail = ec2_detail(service__count=n, updatedAt=f"2017-11-01T00:0{n}:00Z")
        assert gd.post(event(detail)).json()["repeats"] == 1
    gd.settle()
    assert len(card_posts(gd)) == 1
    updates = gd.bot.slack.calls_for("chat.update")
    assert 1 <= len(updates) <= 2  # batched: several repeats, one or two updates
    final = gd.bot.slack.messages("C0INCIDENT")[0]
    assert "seen 5 times" in section_texts(final["blocks"])


def test_a_new_finding_joins_the_open_incident(guardduty_bot: Start) -> None:
    gd = guardduty_bot(update_interval=0.2)
    gd.post(event(ec2_detail()))
    gd.settle()
    response = gd.post(event(ec2_detail(id="spambot", type="Backdoor:EC2/Spambot", severity=8)))
    assert response.json()["joined"] == 1
    gd.settle()
    assert len(card_posts(gd)) == 1  # within the quiet window the card alone shows it
    final = section_texts(gd.bot.slack.messages("C0INCIDENT")[0]["blocks"])
    assert "Backdoor:EC2/Spambot" in final and "2 findings" in final
    with gd.bot.session() as session:
        assert session.scalars(select(Incident.severity)).one() == "high"


def test_a_join_after_a_quiet_card_is_announced_in_the_thread(guardduty_bot: Start) -> None:
    gd = guardduty_bot(update_interval=0.1)
    gd.publisher.join_quiet = 0.3
    gd.post(event(ec2_detail()))
    gd.settle()
    gd.bot.slack.reset_calls()
    import time

    time.sleep(0.35)
    gd.post(event(ec2_detail(id="later", type="Backdoor:EC2/Spambot")))
    gd.settle()
    (reply,) = card_posts(gd)
    assert reply.args["thread_ts"] == gd.bot.slack.messages("C0INCIDENT")[0]["ts"]
    assert "Backdoor:EC2/Spambot" in reply.args["text"]


def test_archived_and_low_findings_post_nothing(guardduty_bot: Start) -> None:
    gd = guardduty_bot()
    gd.post(event(ec2_detail(service__archived=True)))
    gd.post(event(ec2_detail(id="low", severity=2)))
    gd.settle()
    assert rows(gd, Finding) == 2 and rows(gd, Incident) == 0
    assert card_posts(gd) == []


def test_429_retry_after_is_obeyed_and_nothing_is_dropped(guardduty_bot: Start) -> None:
    gd = guardduty_bot()
    gd.bot.slack.rate_limit("chat.postMessage", times=2, retry_after=1)
    gd.post(event(ec2_detail()))
    gd.settle(timeout=15)
    posts = card_posts(gd)
    assert [c.status for c in posts] == [429, 429, 200] or posts[-1].status == 200
    assert posts[-1].at - posts[0].at >= 0.9  # waited for Retry-After
    with gd.bot.session() as session:
        assert session.scalars(select(Incident.card_ts)).one() is not None


def test_unposted_cards_are_posted_after_a_restart(guardduty_bot: Start) -> None:
    gd = guardduty_bot()
    gd.publisher.stop()  # the process "dies" before Slack is told
    gd.publisher._stop = True
    gd.post(event(ec2_detail()))
    assert card_posts(gd) == []
    from bot.guardduty.publisher import CardPublisher

    fresh = CardPublisher(gd.bot.runtime, update_interval=0.2)
    assert fresh.recover() == 1
    assert fresh.wait_idle(10)
    assert len(card_posts(gd)) == 1
    fresh.stop()


# --- SNS -----------------------------------------------------------------------------------


def test_signed_sns_notification_is_accepted(guardduty_bot: Start) -> None:
    gd = guardduty_bot()
    response = gd.post(gd.sign(sns_notification(event(ec2_detail()))))
    assert response.status_code == 200, response.text
    assert response.json()["opened"] == ["INC-1"]


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (lambda m: m.update(Message=m["Message"].replace("Canary", "Benign")), "does not match"),
        (lambda m: m.update(Signature="AAAA"), "does not match"),
        (
            lambda m: m.update(SigningCertURL="https://evil.example/cert.pem"),
            "SigningCertURL is not an SNS URL",
        ),
    ],
)
def test_tampered_sns_messages_are_refused(
    guardduty_bot: Start, tamper: Callable[[dict[str, Any]], None], reason: str
) -> None:
    gd = guardduty_bot()
    message = gd.sign(sns_notification(event(ec2_detail())))
    tamper(message)
    response = gd.post(message)
    assert response.status_code == 403
    assert reason in response.json()["error"]
    assert rows(gd, Finding) == 0


def test_sns_from_an_unconfigured_topic_is_refused(guardduty_bot: Start) -> None:
    gd = guardduty_bot()
    note = sns_notification(event(ec2_detail()))
    note["TopicArn"] = "arn:aws:sns:us-east-1:999999999999:someone-else"
    response = gd.post(gd.sign(note))
    assert response.status_code == 403
    assert "not in guardduty.sns_topic_arns" in response.json()["error"]


def test_subscription_is_confirmed_only_for_configured_topics(guardduty_bot: Start) -> None:
    gd = guardduty_bot()
    confirmation = load_json("awsdocs-sns__http-SubscriptionConfirmation.json")
    ours = {**confirmation, "TopicArn": TOPIC}
    response = gd.post(gd.sign(ours, version="1"))
    assert response.status_code == 200 and response.json()["confirmed"] == TOPIC
    assert gd.confirmed == [confirmation["SubscribeURL"]]
    response = gd.post(gd.sign(confirmation, version="1"))  # MyTopic is not configured
    assert response.status_code == 403
    assert gd.confirmed == [confirmation["SubscribeURL"]]


def test_lambda_records_with_placeholder_signatures_are_refused(guardduty_bot: Start) -> None:
    gd = guardduty_bot()
    response = gd.post(load_json("notify-slack__lambda-sns-record__guardduty_finding.json"))
    assert response.status_code == 403
    assert rows(gd, Finding) == 0


def test_signed_lambda_records_are_accepted(guardduty_bot: Start) -> None:
    gd = guardduty_bot()
    records = load_json("notify-slack__lambda-sns-record__guardduty_finding.json")
    sns = records["Records"][0]["Sns"]
    signed = gd.sign({**sns, "TopicArn": TOPIC, "Subject": None})
    signed["SigningCertUrl"] = signed.pop("SigningCertURL")
    records["Records"][0]["Sns"] = signed
    response = gd.post(records)
    assert response.status_code == 200, response.text
    assert response.json()["opened"] == ["INC-1"]


# --- trusted bot messages ------------------------------------------------------------------


def chatbot_message(bot_id: str | None, text: str, **extra: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "type": "message",
        "channel": "C0INCIDENT",
        "text": text,
        "ts": "1700000000.000100",
        **extra,
    }
    if bot_id:
        message.update(bot_id=bot_id, subtype="bot_message")
    else:
        message["user"] = "W111"
    return message


def slack_escaped(payload: Any) -> str:
    return json.dumps(payload).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def test_trusted_bot_messages_carrying_a_finding_open_an_incident(guardduty_bot: Start) -> None:
    gd = guardduty_bot()
    text = f"GuardDuty finding:\n```{slack_escaped(event(ec2_detail()))}```"
    response = gd.bot.sender.event(chatbot_message("B0CHATBOT", text))
    assert response.status_code == 200
    gd.settle()
    assert rows(gd, Incident) == 1
    assert len(card_posts(gd)) == 1


def test_findings_in_attachments_are_read(guardduty_bot: Start) -> None:
    gd = guardduty_bot()
    attachment = {"fallback": "finding", "text": slack_escaped(ec2_detail())}
    gd.bot.sender.event(chatbot_message("B0CHATBOT", "", attachments=[attachment]))
    gd.settle()
    assert rows(gd, Finding) == 1


@pytest.mark.parametrize(
    "message",
    [
        chatbot_message(None, json.dumps(event(ec2_detail()))),  # a person
        chatbot_message("B0OTHERBOT", json.dumps(event(ec2_detail()))),  # an untrusted bot
        {**chatbot_message("B0CHATBOT", json.dumps(event(ec2_detail()))), "channel": "C0OTHER"},
    ],
)
def test_other_messages_are_never_findings(guardduty_bot: Start, message: dict[str, Any]) -> None:
    gd = guardduty_bot()
    gd.bot.sender.event(copy.deepcopy(message))
    gd.settle()
    assert rows(gd, Finding) == 0


def test_unsigned_sns_shaped_payloads_are_refused(guardduty_bot: Start) -> None:
    gd = guardduty_bot()
    unsigned = sns_notification(event(ec2_detail()))
    for key in ("Signature", "SignatureVersion", "SigningCertURL"):
        unsigned.pop(key)
    response = gd.post(unsigned)
    assert response.status_code == 403
    assert rows(gd, Finding) == 0


def test_repeats_a_restart_left_off_the_card_are_shown_after_it(guardduty_bot: Start) -> None:
    gd = guardduty_bot(update_interval=60)  # no update would come in this test's lifetime
    gd.post(event(ec2_detail()))
    gd.settle()
    gd.post(event(ec2_detail(service__count=7, updatedAt="2017-11-01T00:00:00Z")))
    gd.publisher.stop()  # the process stops before the card was updated
    assert gd.bot.slack.calls_for("chat.update") == []
    from bot.guardduty.publisher import CardPublisher

    fresh = CardPublisher(gd.bot.runtime, update_interval=0.1)
    gd.bot.runtime.now = lambda: dt.datetime.now(dt.UTC) + dt.timedelta(minutes=2)
    assert fresh.recover() == 0  # nothing to post, one card to update
    assert fresh.wait_idle(10)
    fresh.stop()
    (update,) = gd.bot.slack.calls_for("chat.update")
    assert "seen 7 times" in section_texts(update.args["blocks"])
