"""A high GuardDuty finding tells the contacts once when it opens its incident; repeats don't."""

from __future__ import annotations

import json
from collections.abc import Callable

import boto3
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends
from moto.sns.models import sns_backends
from sqlalchemy import select

from storage.models import TimelineEvent
from tests.bot.guardduty.conftest import GuardDutyBot
from tests.bot.guardduty.test_guardduty_route import event
from tests.commands.findings.guardduty_fixtures import ec2_detail

Start = Callable[..., GuardDutyBot]
SENDER = "incident-bot@example.com"


def published(topic: str) -> list[str]:
    """Subjects of what the SNS topic received."""
    backend = sns_backends[DEFAULT_ACCOUNT_ID]["us-east-1"]
    return [str(m[2]) for m in backend.topics[topic].sent_notifications]


def test_high_finding_tells_contacts_once(guardduty_bot: Start) -> None:
    sns = boto3.client("sns", region_name="us-east-1")
    topic = sns.create_topic(Name="security-contacts")["TopicArn"]
    boto3.client("ses", region_name="us-east-1").verify_email_identity(EmailAddress=SENDER)
    gd = guardduty_bot(
        {
            "contacts": {
                "sns_topic_arn": topic,
                "emails": ["soc@example.com"],
                "ses_sender": SENDER,
            }
        }
    )
    gd.post(event(ec2_detail(severity=8)))
    gd.settle()
    for n in range(2, 4):
        detail = ec2_detail(severity=8, service__count=n, updatedAt=f"2017-11-01T00:0{n}:00Z")
        assert gd.post(event(detail)).json()["repeats"] == 1
    gd.settle()
    subjects = published(topic)
    assert len(subjects) == 1 and "INC-1: high incident opened" in subjects[0]
    mails = ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages
    assert [m.destinations["ToAddresses"] for m in mails] == [["soc@example.com"]]
    with gd.bot.session() as session:
        events = session.scalars(
            select(TimelineEvent).where(TimelineEvent.kind.like("contacts.%"))
        ).all()
    assert [e.kind for e in events] == ["contacts.notified"]
    assert json.loads(events[0].details)["reason"] == "opened"
    assert "SNS topic published; 1 e-mail(s) sent via SES" in events[0].summary


def test_medium_finding_tells_no_one(guardduty_bot: Start) -> None:
    topic = boto3.client("sns", region_name="us-east-1").create_topic(Name="c")["TopicArn"]
    gd = guardduty_bot({"contacts": {"sns_topic_arn": topic}})
    gd.post(event(ec2_detail(severity=5)))
    gd.settle()
    assert published(topic) == []
