"""Tell the configured contacts about approvals and outcomes.

Contacts are an SNS topic (which can fan out to e-mail, SMS, a pager) and a Slack user
group; configured e-mail addresses are listed in the message so whoever reads it knows who
else was told (subscribe them to the topic to mail them). The SNS part lives here; the bot
posts the Slack mention with the same text. In a dry run nothing is published to SNS: the
timeline records what would have been.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from commands.events import record_quietly
from containment.capabilities import Permissions
from storage.db import Database

log = logging.getLogger(__name__)

SUBJECT_MAX = 100  # SNS limit
# Contacts are told on containment approval and outcome.
PERMISSIONS = Permissions("contacts", "contain", ("sns:Publish",))
SnsFactory = Callable[[str], Any]  # region -> boto3 SNS client


class ContactOptions(Protocol):
    """The `contacts:` configuration section (bot.settings.ContactsConfig)."""

    sns_topic_arn: str | None
    slack_usergroup: str | None
    emails: list[str]


@dataclass(frozen=True)
class Notice:
    incident_key: str
    subject: str
    body: str


def default_sns(region: str) -> Any:
    from containment.clients import aws_client

    return aws_client("sns", region)


def topic_region(arn: str) -> str:
    parts = arn.split(":")
    return parts[3] if len(parts) > 3 and parts[3] else "us-east-1"


def notify_contacts(
    *,
    database: Database,
    incident_id: int,
    notice: Notice,
    contacts: ContactOptions | None,
    dry_run: bool = False,
    sns_factory: SnsFactory = default_sns,
) -> dict[str, Any]:
    """Publish to the SNS topic (unless dry run) and record who was told on the timeline.

    Never raises: a notification failure is recorded as such, it must not undo a decision.
    """
    record: dict[str, Any] = {"subject": notice.subject, "dry_run": dry_run}
    if contacts is None or not (
        contacts.sns_topic_arn or contacts.slack_usergroup or contacts.emails
    ):
        return record
    record["emails"] = list(contacts.emails)
    record["slack_usergroup"] = contacts.slack_usergroup
    arn = contacts.sns_topic_arn
    if arn:
        record["sns_topic_arn"] = arn
        if dry_run:
            record["sns"] = "not published (dry run)"
        else:
            try:
                sns = sns_factory(topic_region(arn))
                reply = sns.publish(
                    TopicArn=arn,
                    Subject=_subject(notice.subject),
                    Message=notice.body,
                )
                record["sns_message_id"] = reply.get("MessageId")
            except Exception as exc:
                log.exception("SNS publish to %s failed", arn)
                record["sns_error"] = f"{type(exc).__name__}: {exc}"[:500]
    _record(database=database, incident_id=incident_id, record=record)
    return record


def _subject(text: str) -> str:
    # SNS subjects: ASCII-ish, no newlines, at most 100 characters.
    text = " ".join(text.split())
    return text if len(text) <= SUBJECT_MAX else text[: SUBJECT_MAX - 3] + "..."


def _record(*, database: Database, incident_id: int, record: dict[str, Any]) -> None:
    told: list[str] = []
    if record.get("sns_message_id"):
        told.append("SNS topic")
    if record.get("slack_usergroup"):
        told.append("Slack user group")
    if record.get("emails"):
        told.append(f"{len(record['emails'])} e-mail contact(s)")
    failed = " (SNS publish failed)" if record.get("sns_error") else ""
    would = " (dry run: SNS not published)" if record.get("sns") else ""
    _append(
        database=database,
        incident_id=incident_id,
        kind="contacts.notified" if not failed else "contacts.notify_failed",
        summary=f"Notified {', '.join(told) or 'nobody'}: {record['subject']}" + failed + would,
        details=record,
    )


def _append(
    *, database: Database, incident_id: int, kind: str, summary: str, details: dict[str, Any]
) -> None:
    """Record who was (or was not) told; never raises, a record must not undo a decision."""
    record_quietly(database, incident_id=incident_id, kind=kind, summary=summary, details=details)


@dataclass(frozen=True)
class _NoContacts:
    sns_topic_arn: str | None = None
    slack_usergroup: str | None = None
    emails: tuple[str, ...] = ()


NO_CONTACTS = _NoContacts()


def note_not_paged(*, database: Database, incident_id: int, notice: Notice) -> None:
    """Record that a drill's notice went to no one (the timeline shows it was deliberate)."""
    _append(
        database=database,
        incident_id=incident_id,
        kind="contacts.not_paged",
        summary=f"DRILL: contacts not paged: {notice.subject}",
        details={"subject": notice.subject},
    )


def recipients_line(contacts: ContactOptions | None) -> str:
    if contacts is None or not contacts.emails:
        return ""
    return "Contacts: " + ", ".join(contacts.emails)
