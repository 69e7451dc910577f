"""Contacts are told exactly what the timeline says: SES e-mail or "listed, not sent", each
channel's failure recorded; serious incidents are announced once when they open."""

from __future__ import annotations

import json
from typing import Any

import boto3
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends
from sqlalchemy import select

from storage.models import Incident, TimelineEvent
from tests.bot import test_containment_flow as flow
from tests.bot.conftest import BotUnderTest

env = flow.env  # the containment flow's world: moto EC2/IAM/SNS, fake Slack, signed requests
SENDER = "incident-bot@example.com"


def contacts_events(bot: BotUnderTest) -> list[TimelineEvent]:
    return [e for e in flow.timeline(bot) if e.kind.startswith("contacts.")]


def details(event: TimelineEvent) -> dict[str, Any]:
    return json.loads(event.details)


def sent_mail() -> list[Any]:
    return list(ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages)


def thread_texts(bot: BotUnderTest) -> list[str]:
    return [c.args.get("text", "") for c in bot.slack.calls_for("chat.postMessage")]


def approve(env: flow.Env, bot: BotUnderTest) -> None:
    request_id, _ = flow.contain(bot, f"{env.world.instance_id} beaconing")
    assert flow.click(bot, "containment_approve", request_id, flow.APPROVER1) == 200
    flow.wait_status(bot, request_id)


def test_without_ses_emails_are_listed_not_sent(env: flow.Env) -> None:
    bot = env.start()
    approve(env, bot)
    events = contacts_events(bot)
    assert events
    for e in events:
        assert details(e)["channels"]["email"]["status"] == "listed, not sent"
        assert "1 e-mail contact(s) listed, not sent (SES not configured)" in e.summary
        assert "SNS topic published" in e.summary  # SNS really was
    assert sent_mail() == []
    assert any("listed, not sent: SES is not configured" in t for t in thread_texts(bot))


def test_emails_go_through_ses_when_configured(env: flow.Env) -> None:
    boto3.client("ses", region_name="us-east-1").verify_email_identity(EmailAddress=SENDER)
    bot = env.start({"contacts": {"ses_sender": SENDER}})
    approve(env, bot)
    mails = sent_mail()
    assert mails and all(m.destinations["ToAddresses"] == ["security@example.com"] for m in mails)
    assert any("approved by U0APPROVER1" in m.subject for m in mails)
    events = contacts_events(bot)
    assert events and all(e.kind == "contacts.notified" for e in events)
    assert all("1 e-mail(s) sent via SES" in e.summary for e in events)
    assert any("E-mailed through SES: security@example.com" in t for t in thread_texts(bot))


def test_a_failed_email_is_recorded_as_failed(env: flow.Env) -> None:
    # The sender was never verified: SES refuses it (MessageRejected).
    bot = env.start({"contacts": {"ses_sender": "unverified@example.net"}})
    approve(env, bot)
    events = contacts_events(bot)
    assert events and all(e.kind == "contacts.notify_failed" for e in events)
    for e in events:
        assert "1 e-mail(s) failed" in e.summary and "sent via SES" not in e.summary
        failed = details(e)["channels"]["email"]["failed"]
        assert "MessageRejected" in failed["security@example.com"]
    assert any("E-mail failed: security@example.com" in t for t in thread_texts(bot))


def test_a_failed_sns_publish_is_not_called_notified(env: flow.Env) -> None:
    bot = env.start({"contacts": {"sns_topic_arn": env.topic_arn + "-gone"}})
    approve(env, bot)
    events = contacts_events(bot)
    assert events and all(e.kind == "contacts.notify_failed" for e in events)
    assert all("SNS topic failed" in e.summary for e in events)
    assert all("NotFound" in details(e)["channels"]["sns"]["error"] for e in events)


def test_serious_incident_tells_contacts_once_when_it_opens(env: flow.Env) -> None:
    bot = env.start()
    assert bot.command("open Odd logins on the VPN").status_code == 200
    bot.idle()
    assert env.published == []  # medium: nobody paged
    assert bot.command("severity INC-1 high").status_code == 200
    bot.idle()
    opened = [p for p in env.published if "high incident opened" in p["Subject"]]
    assert len(opened) == 1 and opened[0]["Subject"].startswith("INC-1")
    assert bot.command("severity INC-1 critical").status_code == 200
    bot.idle()
    assert bot.command("severity INC-1 high").status_code == 200
    bot.idle()
    assert len(env.published) == 1  # raised again: not told twice
    with bot.session() as session:
        thread_ts = session.scalars(select(Incident)).one().thread_ts
    mention = [
        c
        for c in bot.slack.calls_for("chat.postMessage")
        if "<!subteam^S0SECURITY>" in c.args.get("text", "")
    ]
    assert len(mention) == 1 and mention[0].args.get("thread_ts") == thread_ts
    [event] = [e for e in contacts_events(bot) if details(e).get("reason") == "opened"]
    assert event.kind == "contacts.notified"


def test_containment_request_opening_a_high_incident_tells_contacts(env: flow.Env) -> None:
    bot = env.start()
    approve(env, bot)
    subjects = [p["Subject"] for p in env.published]
    assert sum("high incident opened" in s for s in subjects) == 1
    assert subjects.index(next(s for s in subjects if "opened" in s)) == 0  # before approval
