"""Sending a contacts notice from the bot: SNS and SES (commands.approvals.contacts), and the
Slack message in the incident's thread mentioning the user group, recorded per channel.

`notify_opened` tells contacts once per incident when it opens at (or is raised to) high or
critical; drills page no one.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from slack_sdk.errors import SlackApiError

from bot.views import blocks as bk
from bot.views.contacts import notice_text, opened_notice_texts
from commands import incidents as svc
from commands.approvals import contacts

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger(__name__)

SERIOUS = ("high", "critical")


def send_notice(
    runtime: Runtime,
    *,
    incident_id: int,
    notice: contacts.Notice,
    drill: bool,
    dry_run: bool,
    line: str,
    channel: str | None,
    thread_ts: str | None,
) -> dict[str, Any]:
    """Tell the contacts (not in a drill) and post `line` in the thread, saying who was told."""
    if drill:
        # A drill rehearses the responders; it never pages the real contacts.
        contacts.note_not_paged(database=runtime.database, incident_id=incident_id, notice=notice)
        _post(runtime, channel, thread_ts, line)
        return {}
    cfg = runtime.config.contacts
    posted: list[bool] = []

    def mention(channels: dict[str, Any]) -> None:
        posted.append(True)
        if not channel:
            raise RuntimeError("the incident has no Slack message to mention the group in")
        text = notice_text(line, usergroup=cfg.slack_usergroup, channels=channels)
        runtime.slack.reply(channel, thread_ts, bk.message(text))

    kwargs: dict[str, Any] = {}
    if runtime.options.sns_factory:
        kwargs["sns_factory"] = runtime.options.sns_factory
    if runtime.options.ses_factory:
        kwargs["ses_factory"] = runtime.options.ses_factory
    record = contacts.notify_contacts(
        database=runtime.database,
        incident_id=incident_id,
        notice=notice,
        contacts=cfg,
        dry_run=dry_run,
        mention=mention,
        **kwargs,
    )
    if not posted:  # no user group: the line (and what the e-mails did) still goes out
        text = notice_text(line, usergroup=None, channels=record.get("channels") or {})
        _post(runtime, channel, thread_ts, text)
    return record


def _post(runtime: Runtime, channel: str | None, thread_ts: str | None, text: str) -> None:
    if not channel:
        return
    try:
        runtime.slack.reply(channel, thread_ts, bk.message(text))
    except SlackApiError:
        log.exception("could not post a contacts notice in %s", channel)


def notify_opened(runtime: Runtime, key: str) -> None:
    """Tell the contacts a high or critical incident is open, at most once per incident."""
    try:
        with runtime.database.read_session() as session:
            incident = svc.get_incident(session=session, key=key)
            if incident.severity not in SERIOUS:
                return
            incident_id, drill = incident.id, incident.is_drill
            channel, thread_ts = incident.channel_id, incident.thread_ts
            subject, body, line = opened_notice_texts(incident)
        if not drill and not contacts.has_contacts(runtime.config.contacts):
            return  # nobody to tell; the card already says it is open
        if not contacts.claim_opened_notice(database=runtime.database, incident_id=incident_id):
            return  # told already (a repeat finding, a second raise to high)
        notice = contacts.Notice(key, subject, body, reason="opened")
        if drill:
            contacts.note_not_paged(
                database=runtime.database, incident_id=incident_id, notice=notice
            )
            return
        send_notice(
            runtime,
            incident_id=incident_id,
            notice=notice,
            drill=False,
            # A dry-run deployment rehearses: the timeline says what would have been sent.
            dry_run=runtime.config.containment.dry_run,
            line=line,
            channel=channel,
            thread_ts=thread_ts,
        )
    except Exception:  # telling contacts must never break opening the incident
        log.exception("could not notify contacts of %s opening", key)
