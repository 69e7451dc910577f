"""The card sweep: every live incident gets its card, even when Slack failed or the process
died between saving the incident and posting it.

`/incident open` (and a containment request that opens an incident) saves the incident first
and posts its card after. Slack failing (429s past the client's retries, a 500, an archived
channel) or a kill -9 in between leaves an incident with no card link. Every `every` seconds
this sweep takes each such incident older than `grace` (so it never races a post still in
flight), and

- first looks for the card in the channel's history: a post whose answer was lost (a read
  timeout, a kill after Slack took it) left the card there, named in its message metadata;
  that card is adopted, never posted twice;
- otherwise posts it (bot/listeners/incident_posts.py), then tells whoever opened the
  incident, in a DM, where the card is.

Several processes may sweep: each incident is claimed for `LEASE` seconds in the database
(a `Cursor` row) before it is touched. GuardDuty's cards are the publisher's (it posts its own
and re-queues its leftovers); the sweep hands it the ones still missing.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.contacts import notify_opened
from bot.guardduty.publisher import publisher_for
from bot.listeners.incident_posts import Posted, post_new_incident, record_new_card
from bot.periodic import Periodic
from bot.slack_out import CARD_EVENT
from bot.views import blocks as bk
from bot.views.card_recovery import card_recovered_text
from commands.findings.ingest import ACTOR as GUARDDUTY
from commands.findings.ingest import Ingested
from commands.incidents import get_incident
from storage.models import Cursor, Incident, TimelineEvent

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger(__name__)

EVERY = 30.0  # seconds between sweeps
GRACE = 120.0  # an incident this young may still have its first post in flight
LEASE = 300.0  # seconds one process owns an incident's re-post
HISTORY = 200  # newest messages searched for a card whose post went unanswered
CLAIM_CURSOR = "slack.card_sweep:"  # + incident key: when a process claimed its re-post


@dataclass(frozen=True)
class Swept:
    key: str
    channel_id: str
    found: bool  # adopted from the channel's history rather than posted again


def cardless(session: Session, *, before: dt.datetime) -> list[Incident]:
    """Live incidents opened before `before` whose card was never recorded."""
    return list(
        session.scalars(
            select(Incident)
            .where(
                Incident.status.in_(("open", "contained")),
                Incident.card_ts.is_(None),
                Incident.created_at <= before,
            )
            .order_by(Incident.number)
        )
    )


def sweep_cards(runtime: Runtime, *, grace: float = GRACE) -> list[Swept]:
    """One round (see the module docstring); what it posted or found."""
    before = runtime.now() - dt.timedelta(seconds=grace)
    with runtime.database.read_session() as session:
        pending = [(i.id, i.key, i.created_by) for i in cardless(session, before=before)]
    guardduty = [incident_id for incident_id, _, by in pending if by == GUARDDUTY]
    if guardduty:
        publisher_for(runtime).submit(
            Ingested("", "opened", None, incident_id, None) for incident_id in guardduty
        )
    done: list[Swept] = []
    for _, key, opener in pending:
        if opener == GUARDDUTY or not claim(runtime, key):
            continue
        try:
            done.append(repost(runtime, key, opener=opener))
        except Exception as exc:  # Slack still failing: the next round tries again
            log.warning("the card of %s is still not posted: %s", key, exc, exc_info=True)
    return done


def claim(runtime: Runtime, key: str) -> bool:
    """Take `key`'s re-post for `LEASE` seconds, unless another process holds it."""
    name = CLAIM_CURSOR + key
    now = runtime.now().timestamp()
    with runtime.database.session() as session:
        row = session.get(Cursor, name, with_for_update=True)
        if row is not None and now - float(row.value) < LEASE:
            return False
        if row is None:
            session.add(Cursor(name=name, value=repr(now)))
        else:
            row.value = repr(now)
    return True


def repost(runtime: Runtime, key: str, *, opener: str) -> Swept:
    """Adopt the card if Slack has it, post it if not; then tell the opener."""
    with runtime.database.read_session() as session:
        incident = get_incident(session=session, key=key)
        if incident.card_ts:  # posted meanwhile (the first attempt finished after all)
            return Swept(key, incident.channel_id or "", found=True)
        # Where it was opened: the channel `/incident open` was typed in, or the one a
        # feature opened it for (an abuse report's).
        opened_in = _opened_in(session, incident) or incident.channel_id
        cfg = runtime.config.slack
        channel = incident.channel_id if cfg.channel_per_incident else None
        channel = channel or cfg.incident_channel or opened_in
    found_ts = find_card(runtime, channel, key) if channel else None
    if found_ts is not None:
        assert channel is not None
        posted: Posted = record_new_card(
            runtime, key, opener=opener, channel=channel, ts=found_ts, found=True
        )
    else:
        posted = post_new_incident(runtime, key, opener=opener, fallback_channel=opened_in or "")
    log.warning("card of %s %s by the card sweep", key, "found" if found_ts else "re-posted")
    notify_opened(runtime, key)  # once per incident; skipped if the first attempt sent it
    if bk.is_user_id(opener):
        try:
            text = card_recovered_text(key, posted.channel_id, found=found_ts is not None)
            runtime.slack.post(opener, bk.message(text))
        except Exception as exc:  # the card is what matters; the DM is a courtesy
            log.warning("could not tell %s that %s's card is posted: %s", opener, key, exc)
    return Swept(key, posted.channel_id, found=found_ts is not None)


def find_card(runtime: Runtime, channel: str, key: str) -> str | None:
    """The ts of `key`'s card among the channel's newest messages (None: not there)."""
    page: Any = runtime.client.conversations_history(
        channel=channel, limit=HISTORY, include_all_metadata=True
    )
    for message in page.get("messages") or []:
        meta = message.get("metadata") or {}
        payload = meta.get("event_payload") or {}
        if meta.get("event_type") == CARD_EVENT and payload.get("incident") == key:
            return str(message["ts"])
    return None


def _opened_in(session: Session, incident: Incident) -> str | None:
    """The channel `/incident open` was typed in (its `incident.opened` event says)."""
    event = session.scalars(
        select(TimelineEvent)
        .where(TimelineEvent.incident_id == incident.id, TimelineEvent.kind == "incident.opened")
        .limit(1)
    ).first()
    try:
        details = json.loads(event.details) if event is not None else {}
    except ValueError:
        details = {}
    value = details.get("opened_in") if isinstance(details, dict) else None
    return value if isinstance(value, str) and value else None


class CardSweeper(Periodic):
    name = "card-sweep"

    def __init__(self, runtime: Runtime, every: float, grace: float) -> None:
        super().__init__(every)
        self.runtime = runtime
        self.grace = grace

    def tick(self) -> list[Swept]:
        return sweep_cards(self.runtime, grace=self.grace)


def start(runtime: Runtime) -> None:
    """Serving processes only (bot.wiring.STARTS): one sweeper per process."""
    every = runtime.options.card_sweep_seconds
    if not every:
        return
    worker = CardSweeper(runtime, float(every), runtime.options.card_grace_seconds)
    worker.start()
    runtime.on_shutdown(worker.stop)
