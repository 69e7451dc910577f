"""Tell the configured contacts: when a serious incident opens, on approvals and on outcomes.

Contacts are an SNS topic (which can fan out to e-mail, SMS, a pager), e-mail addresses sent
one message each through SES when `contacts.ses_sender` is configured, and a Slack user group
the bot mentions (the bot passes the posting in as `mention`, Slack text stays in bot/).
The timeline records exactly what happened on each channel: sent, failed (with the error),
listed but not sent (no SES sender), or not sent because of a dry run. Nothing is recorded
as notified that was not.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import select

from commands.events import record_quietly
from containment.capabilities import Permissions
from storage.db import Database
from storage.models import Incident

log = logging.getLogger(__name__)

SUBJECT_MAX = 100  # SNS limit
# Contacts are told when a serious incident opens, on approval and on outcome: the SNS
# topic, and e-mail through SES when a sender is configured.
PERMISSIONS = Permissions("contacts", "contain", ("sns:Publish", "ses:SendEmail"))
ClientFactory = Callable[[str], Any]  # region -> boto3 client
SnsFactory = ClientFactory
DEFAULT_SES_REGION = "us-east-1"
OPENED_MARK = "contacts_told_of_opening"  # in Incident.facts: the open-time notice was sent

# Per-channel outcomes (`record["channels"][name]["status"]`).
SENT = "sent"
FAILED = "failed"
DRY_RUN = "not sent (dry run)"
LISTED = "listed, not sent"


class ContactOptions(Protocol):
    """The `contacts:` configuration section (bot.settings.ContactsConfig)."""

    sns_topic_arn: str | None
    slack_usergroup: str | None
    emails: list[str]
    ses_sender: str | None
    ses_region: str | None


@dataclass(frozen=True)
class Notice:
    incident_key: str
    subject: str
    body: str
    reason: str = ""  # "opened" for the open-time notice (at most once per incident)


def default_sns(region: str) -> Any:
    from containment.clients import aws_client

    return aws_client("sns", region)


def default_ses(region: str) -> Any:
    from containment.clients import aws_client

    return aws_client("ses", region)


def topic_region(arn: str) -> str:
    parts = arn.split(":")
    return parts[3] if len(parts) > 3 and parts[3] else "us-east-1"


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


def has_contacts(contacts: ContactOptions | None) -> bool:
    return contacts is not None and bool(
        contacts.sns_topic_arn or contacts.slack_usergroup or contacts.emails
    )


def emails_sent(contacts: ContactOptions | None) -> bool:
    """Whether e-mail contacts are mailed (SES configured) or only listed in the notice."""
    return contacts is not None and bool(contacts.ses_sender)


def notify_contacts(
    *,
    database: Database,
    incident_id: int,
    notice: Notice,
    contacts: ContactOptions | None,
    dry_run: bool = False,
    sns_factory: ClientFactory = default_sns,
    ses_factory: ClientFactory = default_ses,
    mention: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Send on every configured channel and record on the timeline what each one did.

    Never raises: a notification failure is recorded as such, it must not undo a decision.
    """
    record: dict[str, Any] = {"subject": notice.subject, "dry_run": dry_run}
    if notice.reason:
        record["reason"] = notice.reason
    if contacts is None or not has_contacts(contacts):
        return record
    channels: dict[str, dict[str, Any]] = {}
    if contacts.sns_topic_arn:
        channels["sns"] = _publish(contacts.sns_topic_arn, notice, dry_run, sns_factory)
    if contacts.emails:
        channels["email"] = _mail(contacts, notice, dry_run, ses_factory)
    if contacts.slack_usergroup:
        channels["slack_usergroup"] = _mention(contacts.slack_usergroup, mention, channels)
    record["channels"] = channels
    _record(database=database, incident_id=incident_id, record=record)
    return record


def _publish(arn: str, notice: Notice, dry_run: bool, factory: ClientFactory) -> dict[str, Any]:
    out: dict[str, Any] = {"topic_arn": arn}
    if dry_run:
        return {**out, "status": DRY_RUN}
    try:
        reply = factory(topic_region(arn)).publish(
            TopicArn=arn, Subject=_subject(notice.subject), Message=notice.body
        )
    except Exception as exc:
        log.exception("SNS publish to %s failed", arn)
        return {**out, "status": FAILED, "error": _error(exc)}
    return {**out, "status": SENT, "message_id": reply.get("MessageId")}


def _mail(
    contacts: ContactOptions, notice: Notice, dry_run: bool, factory: ClientFactory
) -> dict[str, Any]:
    """One message per address, so each address's outcome is known (and none sees the others)."""
    emails = list(contacts.emails)
    sender = contacts.ses_sender
    if not sender:
        return {"status": LISTED, "listed": emails}
    if dry_run:
        return {"status": DRY_RUN, "listed": emails}
    region = contacts.ses_region or DEFAULT_SES_REGION
    sent: dict[str, str] = {}
    failed: dict[str, str] = {}
    try:
        ses = factory(region)
    except Exception as exc:
        log.exception("no SES client for %s", region)
        return {"status": FAILED, "error": _error(exc), "failed": dict.fromkeys(emails, "")}
    for address in emails:
        try:
            reply = ses.send_email(
                Source=sender,
                Destination={"ToAddresses": [address]},
                Message={
                    "Subject": {"Data": _subject(notice.subject), "Charset": "UTF-8"},
                    "Body": {"Text": {"Data": notice.body, "Charset": "UTF-8"}},
                },
            )
            sent[address] = str(reply.get("MessageId"))
        except Exception as exc:
            log.warning("SES send to %s failed: %s", address, exc)
            failed[address] = _error(exc)
    status = SENT if not failed else FAILED if not sent else "partly sent"
    return {"status": status, "sender": sender, "region": region, "sent": sent, "failed": failed}


def _mention(
    group: str,
    mention: Callable[[dict[str, Any]], None] | None,
    channels: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """Post the mention (it reports what the other channels did, so it goes last)."""
    if mention is None:
        return {"group": group, "status": "not mentioned (no Slack message)"}
    try:
        mention(channels)
    except Exception as exc:
        log.exception("could not mention the Slack user group %s", group)
        return {"group": group, "status": FAILED, "error": _error(exc)}
    return {"group": group, "status": SENT}


def _subject(text: str) -> str:
    # SNS subjects: ASCII-ish, no newlines, at most 100 characters.
    text = " ".join(text.split())
    return text if len(text) <= SUBJECT_MAX else text[: SUBJECT_MAX - 3] + "..."


def _describe(name: str, channel: dict[str, Any]) -> str:
    status = channel["status"]
    if name == "sns":
        what = "SNS topic"
        return f"{what} published" if status == SENT else f"{what} {status}"
    if name == "slack_usergroup":
        what = "Slack user group"
        return f"{what} mentioned" if status == SENT else f"{what} {status}"
    n_sent, n_failed = len(channel.get("sent") or {}), len(channel.get("failed") or {})
    if status in (SENT, FAILED, "partly sent") and (n_sent or n_failed):
        parts = [f"{n_sent} e-mail(s) sent via SES"] if n_sent else []
        parts += [f"{n_failed} e-mail(s) failed"] if n_failed else []
        return ", ".join(parts)
    if status == FAILED:
        return "e-mail failed"
    listed = len(channel.get("listed") or [])
    why = " (SES not configured)" if status == LISTED else ""
    return f"{listed} e-mail contact(s) {status}{why}"


def _record(*, database: Database, incident_id: int, record: dict[str, Any]) -> None:
    channels: dict[str, dict[str, Any]] = record["channels"]
    reached = [n for n, c in channels.items() if c["status"] in (SENT, "partly sent")]
    failed = any(c["status"] in (FAILED, "partly sent") for c in channels.values())
    kind = (
        "contacts.notify_failed"
        if failed
        else "contacts.notified"
        if reached
        else "contacts.not_sent"
    )
    parts = "; ".join(_describe(n, c) for n, c in channels.items())
    _append(
        database=database,
        incident_id=incident_id,
        kind=kind,
        summary=f"Contacts: {parts}: {record['subject']}",
        details=record,
    )


def _append(
    *, database: Database, incident_id: int, kind: str, summary: str, details: dict[str, Any]
) -> None:
    """Record who was (or was not) told; never raises, a record must not undo a decision."""
    record_quietly(database, incident_id=incident_id, kind=kind, summary=summary, details=details)


def claim_opened_notice(*, database: Database, incident_id: int) -> bool:
    """True once per incident: whoever gets it sends the open-time notice.

    The incident row is locked for the check-and-mark (SQLite write sessions already queue),
    so a repeat finding racing a severity change cannot tell the contacts twice.
    """
    with database.session() as session:
        incident = session.execute(
            select(Incident).where(Incident.id == incident_id).with_for_update()
        ).scalar_one_or_none()
        if incident is None or (incident.facts or {}).get(OPENED_MARK):
            return False
        incident.facts = {**(incident.facts or {}), OPENED_MARK: True}
    return True


def note_not_paged(*, database: Database, incident_id: int, notice: Notice) -> None:
    """Record that a drill's notice went to no one (the timeline shows it was deliberate)."""
    details = {"subject": notice.subject}
    if notice.reason:
        details["reason"] = notice.reason
    _append(
        database=database,
        incident_id=incident_id,
        kind="contacts.not_paged",
        summary=f"DRILL: contacts not paged: {notice.subject}",
        details=details,
    )
