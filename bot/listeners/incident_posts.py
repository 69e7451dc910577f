"""Posting incidents to Slack: the card, its thread or channel, and in-place updates.

Other features call `refresh_incident(runtime, key, line=...)` after they change an incident
(containment finished, regulator notified): the card is re-rendered from the database and
updated with chat.update, and `line` is posted in the incident's thread (or its own channel).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from slack_sdk.errors import SlackApiError

from bot.slack_out import card_id, card_metadata
from bot.views import blocks as bk
from bot.views import replies
from bot.views.card_recovery import missed_phrase
from bot.views.cards import incident_card
from bot.views.channel_names import channel_name, channel_name_candidate
from commands.incidents import get_incident
from commands.overview import IncidentOverview, overview
from storage.models import Incident
from storage.timeline import append_event

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from bot.runtime import Runtime

log = logging.getLogger(__name__)

# Tries of a card update or thread line someone waits on (429s wait their Retry-After).
FOLLOW_UP_ATTEMPTS = 4


@dataclass(frozen=True)
class Posted:
    channel_id: str
    card_ts: str
    thread_ts: str | None
    created_channel: bool


def overview_of(runtime: Runtime, session: Session, incident: Incident) -> IncidentOverview:
    return overview(
        session=session, incidents=[incident], gdpr_hours=runtime.config.deadlines.gdpr_hours
    )[0]


def render_card(runtime: Runtime, key: str) -> tuple[Incident, dict[str, Any]]:
    with runtime.database.read_session() as session:
        incident = get_incident(session=session, key=key)
        card = incident_card(
            overview_of(runtime, session, incident), now=runtime.now(), parts=runtime.card_parts
        )
    return incident, card


def post_new_incident(
    runtime: Runtime, key: str, *, opener: str, fallback_channel: str, patient: bool = False
) -> Posted:
    """Post the card of a just-opened incident and start its thread (or its own channel).

    An incident already given its own channel (a first attempt that failed after creating
    it) keeps that channel. `patient`: wait out 429s (background workers only)."""
    slack = runtime.slack
    cfg = runtime.config.slack
    incident, card = render_card(runtime, key)
    if cfg.channel_per_incident:
        channel_id = incident.channel_id or _open_channel(runtime, incident, opener)
    else:
        channel_id = cfg.incident_channel or fallback_channel
    with slack.card_lock(card_id("incident", key)):
        posted = slack.call(
            "chat_postMessage",
            patient=patient,
            channel=channel_id,
            metadata=card_metadata(key),
            **card,
        )
    return record_new_card(
        runtime, key, opener=opener, channel=str(posted["channel"]), ts=str(posted["ts"])
    )


def record_new_card(
    runtime: Runtime, key: str, *, opener: str, channel: str, ts: str, found: bool = False
) -> Posted:
    """Store a new incident's card and start its thread. `found`: the card was posted
    earlier but its answer never arrived; the sweep found it in the channel's history."""
    slack = runtime.slack
    cfg = runtime.config.slack
    created_channel = bool(cfg.channel_per_incident)
    thread_ts = None if created_channel else ts
    with runtime.database.session() as session:
        incident = get_incident(session=session, key=key)
        where = "its own channel" if created_channel else "the incident channel"
        how = "found in" if found else "posted in"
        slack.record_card(
            session,
            incident,
            channel=channel,
            ts=ts,
            thread_ts=thread_ts,
            summary=f"Card {how} {where} ({channel})",
        )
        title = incident.title
    result = Posted(channel, ts, thread_ts, created_channel)
    if thread_ts:
        slack.reply(
            channel,
            thread_ts,
            bk.message(replies.thread_opener(key, opener)),
        )
    elif cfg.incident_channel and cfg.incident_channel != channel:
        # Let the incident channel know where the new channel is.
        slack.post(
            cfg.incident_channel,
            bk.message(replies.channel_pointer(key, opener, title, channel)),
        )
    return result


def _open_channel(runtime: Runtime, incident: Incident, opener: str) -> str:
    """The incident's own channel, created and recorded at once (if anything after fails,
    the incident still knows it), with the opener invited."""
    channel_id = _create_channel(runtime, incident)
    with runtime.database.session() as session:
        target = get_incident(session=session, key=incident.key)
        target.channel_id = channel_id
        append_event(
            session=session,
            incident=target,
            actor="system",
            kind="slack.channel_created",
            summary=f"Channel {channel_name(incident)} created ({channel_id})",
            details={"channel": channel_id},
        )
    if bk.is_user_id(opener):
        try:
            runtime.client.conversations_invite(channel=channel_id, users=opener)
        except SlackApiError as exc:
            if exc.response.get("error") != "already_in_channel":
                raise
    return channel_id


def _create_channel(runtime: Runtime, incident: Incident) -> str:
    name = channel_name(incident)
    for attempt in range(5):
        candidate = channel_name_candidate(name, attempt)
        try:
            created = runtime.client.conversations_create(name=candidate)
        except SlackApiError as exc:
            if exc.response.get("error") == "name_taken":
                continue
            raise
        return str(created["channel"]["id"])
    raise RuntimeError(f"channel names {name}(-2..-5) are all taken")


def refresh_incident(runtime: Runtime, key: str, *, line: str | None = None) -> list[str]:
    """Re-render the card in place and post `line` (already mrkdwn-escaped) in its thread.

    The change is saved before this runs, so Slack failing does not fail it: a brief failure
    (429, 5xx, a timeout) is retried a few times; what Slack still did not show is logged,
    written on the timeline (`slack.not_shown`) and returned, for the reply to say."""
    missed: list[tuple[str, BaseException]] = []
    with runtime.slack.card_lock(card_id("incident", key)):
        incident, card = render_card(runtime, key)
        if incident.channel_id and incident.card_ts:
            try:
                runtime.slack.update(
                    incident.channel_id, incident.card_ts, card, attempts=FOLLOW_UP_ATTEMPTS
                )
            except (SlackApiError, OSError) as exc:
                missed.append(("the card update", exc))
    if line and incident.channel_id:
        try:
            post_line(runtime, incident, line, attempts=FOLLOW_UP_ATTEMPTS)
        except (SlackApiError, OSError) as exc:
            missed.append(("the thread line", exc))
    return not_shown(runtime, key, missed)


def not_shown(runtime: Runtime, key: str, missed: list[tuple[str, BaseException]]) -> list[str]:
    """Log and record on `key`'s timeline what Slack did not show; the escaped phrases."""
    if not missed:
        return []
    phrases = [missed_phrase(what, exc) for what, exc in missed]
    log.warning("Slack did not show parts of %s: %s", key, "; ".join(phrases))
    try:
        with runtime.database.session() as session:
            append_event(
                session=session,
                incident=get_incident(session=session, key=key),
                actor="system",
                kind="slack.not_shown",
                summary="Slack did not show " + "; ".join(phrases),
                details={"parts": [what for what, _ in missed]},
            )
    except Exception:  # the database may be what fails too; the log line above stays
        log.exception("could not record on %s that Slack did not show it", key)
    return phrases


def post_line(runtime: Runtime, incident: Incident, line: str, **kwargs: Any) -> None:
    assert incident.channel_id is not None
    runtime.slack.reply(incident.channel_id, incident.thread_ts, bk.message(line), **kwargs)
