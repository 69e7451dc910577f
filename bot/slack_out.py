"""The one path from the bot to Slack's chat API: cards, thread replies, reminders, files.

Every message the bot writes goes through a `SlackWriter` (one per process, on the runtime):

- `card_lock(card)`: one lock per card ("incident:INC-7", "approval:12"), held from render to
  chat.update, so an older render never lands after a newer one;
- `call(method, ...)`: the Web API call; with `patient=True` (background workers) a 429 is
  retried after its Retry-After and brief failures after a short backoff, as long as it
  takes, while `PERMANENT_ERRORS` give up at once (retrying cannot help them);
- `claim_turn(card, interval)` / `wait_turn(card, interval)`: pacing of card updates,
  kept in the database (a `Cursor` row per card) so every process (gunicorn workers, the
  standalone scheduler, replicas) shares one pace per card; `wait_turn` reserves successive
  slots, so writers that arrive together land an interval apart, and a second waiter in one
  process leaves the write to the first (which renders after it wakes);
- `upload(channel, thread_ts, files, ...)`: files into a thread (files_upload_v2);
- `record_card(...)`: the card's channel and ts stored on the incident, and its one
  `slack.card_posted` timeline event;
- `budget` (bot/slack_pace.py's `Budget`, at `Pace`): Slack's published rate limits kept
  before Slack has to enforce them: chat.postMessage about one per second per channel, the
  Tier 3 methods (chat.update...) about 50 a minute per method. Kept in the database like
  the cards' slots, so every process draws on one budget per channel and per method, as
  Slack counts them. A patient call (or one that asks to `keep_pace`) waits for its turn;
  any call takes one; a 429 holds the method (or channel) for everyone for its Retry-After.
  Features with several kinds of work ask `budget.ready_in` (in memory) to pick what to do
  next.

Rendering stays in bot/views; what to post, and when, stays with the features.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, NamedTuple

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from sqlalchemy.orm import Session

from bot.slack_pace import Budget, Pace, SharedBuckets
from storage.db import Database
from storage.models import Cursor, Incident
from storage.timeline import append_event

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 30  # 429s and transient errors per patient call before giving up on it
TURN_CURSOR = "slack.card_written:"  # + card id: when the card was last written (epoch s)
# + card id: when Slack last answered a write of the card. A write reserved in time may land
# late (a slow call): the next one keeps a whole interval after it lands, not after it began.
LANDED_CURSOR = "slack.card_landed:"
# Slack answers these the same way however often we retry: give up at once, loudly.
PERMANENT_ERRORS = frozenset(
    {
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "invalid_auth",
        "account_inactive",
        "token_revoked",
        "msg_too_long",
        "no_text",
        "invalid_blocks",
        "restricted_action",
        "not_authed",
        "message_not_found",
        "cant_update_message",
    }
)

HISTORY = 200  # newest messages searched for a post whose answer never came
DEFAULT_PACE = Pace()  # frozen: one default shared safely


class Unconfirmed(TimeoutError):
    """A post timed out: Slack may or may not show it, and sending it again could show it
    twice."""

    def __init__(self, method: str) -> None:
        super().__init__(f"Slack did not confirm {method} in time (it may or may not show)")


SessionScope = Callable[[], AbstractContextManager[Session]]


@dataclass
class Stats:
    """What one writer (or one feature's worker) did, for its shutdown log line."""

    posts: int = 0
    updates: int = 0
    thread_replies: int = 0
    rate_limited: int = 0
    failures: int = 0
    uploads: int = 0


class Turn(NamedTuple):
    wait: float  # seconds until the card may be written; 0: written now, the turn is ours
    silent_for: float  # seconds since the card was last written (inf: never)


def card_id(kind: str, ident: object) -> str:
    """The id a card's lock and pace go by: `card_id("incident", "INC-7")`."""
    return f"{kind}:{ident}"


CARD_EVENT = "incident_card"  # the card's message metadata: how a lost post is found again


def card_metadata(key: str) -> dict[str, Any]:
    """Message metadata naming the incident a card belongs to. A post whose answer was lost
    (a timeout, a kill) still left the card in Slack; this is how it is found again."""
    return {"event_type": CARD_EVENT, "event_payload": {"incident": key}}


def slack_error(exc: SlackApiError) -> str:
    response = exc.response
    return str((response.get("error") if response is not None else None) or exc)


def retry_after(headers: Any) -> float:
    """Seconds a 429 asks us to wait (1 when the header is missing or unreadable)."""
    value = None
    if headers:
        value = headers.get("Retry-After") or headers.get("retry-after")
    if isinstance(value, list):
        value = value[0] if value else None
    try:
        return max(0.0, float(value)) if value is not None else 1.0
    except (TypeError, ValueError):
        return 1.0


class SlackWriter:
    """See the module docstring. Thread-safe."""

    def __init__(
        self,
        client: WebClient,
        database: Database,
        *,
        sleep: Callable[[float], None] = time.sleep,
        max_attempts: int = MAX_ATTEMPTS,
        pace: Pace | None = DEFAULT_PACE,
    ) -> None:
        self.client = client
        self.budget = Budget(pace, shared=SharedBuckets(database) if pace else None)
        self.database = database
        self.sleep = sleep
        self.max_attempts = max_attempts
        self.stats = Stats()
        self._locks_guard = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._waiting: set[str] = set()  # cards a thread of this process waits to write

    # -- locks ------------------------------------------------------------------------------

    def card_lock(self, card: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(card, threading.Lock())

    # -- calls ------------------------------------------------------------------------------

    def call(
        self,
        method: str,
        *,
        patient: bool = False,
        keep_pace: bool = False,
        attempts: int | None = None,
        stats: Stats | None = None,
        **kwargs: Any,
    ) -> Any:
        """Call `method` of the Web API; see the module docstring for `patient`. `keep_pace`:
        wait for the budget's token, as a patient call does, yet try once (a worker that
        handles its own 429s). `attempts`: a bound on the tries for work someone waits on (a
        command's follow-up). `stats`: a feature's own counters (the writer's by default).

        A chat.postMessage that timed out may have been posted: it is never sent again
        blindly. A message carrying metadata (a card) is looked for in the channel and its
        copy there is the answer; any other post gives up (`Unconfirmed`), since a line
        shown twice in an incident thread misleads as much as a line missing."""
        stats = stats if stats is not None else self.stats
        fn = getattr(self.client, method)
        tries = attempts or (self.max_attempts if patient else 1)
        key = self.budget.key(method, kwargs)
        due = self.budget.reserve(key)  # an impatient call takes its token and goes
        if (patient or keep_pace) and due > 0:
            self.sleep(due)
        for attempt in range(1, tries + 1):
            try:
                response = fn(**kwargs)
            except SlackApiError as exc:
                response = exc.response
                is_429 = response is not None and response.status_code == 429
                if is_429:
                    self.budget.hold(key, retry_after(response.headers))
                if attempt == tries:
                    raise
                if is_429:
                    stats.rate_limited += 1
                    wait = retry_after(response.headers)
                    log.info("Slack %s rate-limited; retrying in %.1fs", method, wait)
                    self.sleep(wait)
                    continue
                if slack_error(exc) in PERMANENT_ERRORS:
                    raise
                self.sleep(min(30.0, 0.5 * attempt))
            except TimeoutError as exc:
                if method == "chat_postMessage" and not kwargs.get("metadata"):
                    raise Unconfirmed(method) from exc
                if attempt == tries:
                    raise
                if method == "chat_postMessage":
                    # Give a slow Slack another timeout's length to land it, then look.
                    self.sleep(float(self.client.timeout))
                    found = self._posted_meanwhile(kwargs)
                    if found is not None:
                        _count(stats, method, kwargs)
                        return found
                else:
                    self.sleep(min(30.0, 0.5 * attempt))
            except OSError:
                if attempt == tries:
                    raise
                self.sleep(min(30.0, 0.5 * attempt))
            else:
                _count(stats, method, kwargs)
                return response
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _posted_meanwhile(self, kwargs: dict[str, Any]) -> dict[str, Any] | None:
        """The message a timed-out post left in its channel, found by its metadata."""
        meta = kwargs.get("metadata")
        if not isinstance(meta, dict) or not kwargs.get("channel"):
            return None
        try:
            page = self.client.conversations_history(
                channel=kwargs["channel"], limit=HISTORY, include_all_metadata=True
            )
        except (SlackApiError, OSError) as exc:
            log.warning("could not look for an unconfirmed post: %s", exc)
            return None
        for message in page.get("messages") or []:
            if message.get("metadata") == meta:
                return {"ok": True, "channel": kwargs["channel"], "ts": message["ts"]}
        return None

    def post(self, channel: str, message: dict[str, Any], **kwargs: Any) -> Any:
        return self.call("chat_postMessage", channel=channel, **message, **kwargs)

    def reply(
        self, channel: str, thread_ts: str | None, message: dict[str, Any], **kwargs: Any
    ) -> Any:
        """Post `message` in the thread of `thread_ts` (top-level when there is none)."""
        if thread_ts:
            kwargs["thread_ts"] = thread_ts
        return self.call("chat_postMessage", channel=channel, **message, **kwargs)

    def update(self, channel: str, ts: str, message: dict[str, Any], **kwargs: Any) -> Any:
        return self.call("chat_update", channel=channel, ts=ts, **message, **kwargs)

    def upload(
        self,
        channel: str,
        thread_ts: str | None,
        files: list[dict[str, Any]],
        *,
        initial_comment: str,
        patient: bool = True,
    ) -> Any:
        """Upload `files` ({"filename", "title", "content"}) in the thread of `thread_ts`
        (top-level when there is none) with files_upload_v2: getUploadURLExternal, the
        upload, completeUploadExternal. A retry starts the flow again; an upload that was
        never completed is not shared, so nothing shows twice."""
        kwargs: dict[str, Any] = {"thread_ts": thread_ts} if thread_ts else {}
        return self.call(
            "files_upload_v2",
            patient=patient,
            channel=channel,
            file_uploads=files,
            initial_comment=initial_comment,
            **kwargs,
        )

    # -- pacing -----------------------------------------------------------------------------

    def claim_turn(
        self, card: str, interval: float, *, session: SessionScope | None = None
    ) -> Turn:
        """Take the card's turn to be written if `interval` seconds passed since the last write
        (by any process); otherwise say how long to wait. `session` is the transaction to
        claim in (a feature that queues its writes passes its own)."""
        name = TURN_CURSOR + card
        now = self.database.clock.now().timestamp()
        with (session or self.database.session)() as db:
            row = db.get(Cursor, name, with_for_update=True)
            if row is None:
                db.add(Cursor(name=name, value=repr(now)))
                return Turn(0.0, float("inf"))
            last = float(row.value)
            wait = last + interval - now
            if wait > 0:
                return Turn(wait, now - last)
            row.value = repr(now)
            return Turn(0.0, now - last)

    def wait_turn(self, card: str, interval: float) -> bool:
        """Reserve the card's next write slot (after the last write or reservation, by any
        process) and sleep until it: two writers never land within `interval` of each other.
        Sleeps at most one `interval`, outside the card's lock.

        False: another thread of this process already waits to write the card. It renders
        after it wakes, so it shows this caller's (already committed) change: skip the write.
        """
        with self._locks_guard:
            if card in self._waiting:
                return False
            self._waiting.add(card)
        try:
            wait = self._reserve(card, interval)
            if wait > 0:
                self.sleep(min(wait, interval))
            late = self._landed(card) + interval - self.database.clock.now().timestamp()
            if late > 0:
                self.sleep(min(late, interval))
        finally:
            with self._locks_guard:
                self._waiting.discard(card)  # before the caller renders
        return True

    def landed(self, card: str) -> None:
        """Record that Slack just answered a write of the card (see `wait_turn`)."""
        with self.database.session() as db:
            _set_cursor(db, LANDED_CURSOR + card, self.database.clock.now().timestamp())

    def _landed(self, card: str) -> float:
        with self.database.read_session() as db:
            row = db.get(Cursor, LANDED_CURSOR + card)
            return float(row.value) if row is not None else 0.0

    def _reserve(self, card: str, interval: float) -> float:
        name = TURN_CURSOR + card
        now = self.database.clock.now().timestamp()
        with self.database.session() as db:
            row = db.get(Cursor, name, with_for_update=True)
            if row is None:
                db.add(Cursor(name=name, value=repr(now)))
                return 0.0
            slot = max(now, float(row.value) + interval)
            row.value = repr(slot)
            return slot - now

    def stamp(self, card: str, *, session: Session | None = None) -> None:
        """Record that the card was written just now (a post counts as a write)."""
        if session is not None:
            _set_cursor(session, TURN_CURSOR + card, self.database.clock.now().timestamp())
            return
        with self.database.session() as db:
            _set_cursor(db, TURN_CURSOR + card, self.database.clock.now().timestamp())

    # -- the record of a posted card ---------------------------------------------------------

    def record_card(
        self,
        session: Session,
        incident: Incident,
        *,
        channel: str,
        ts: str,
        thread_ts: str | None,
        summary: str,
    ) -> None:
        """Store where an incident's card is, and the one timeline event that says so."""
        incident.channel_id = channel
        incident.card_ts = ts
        incident.thread_ts = thread_ts
        self.stamp(card_id("incident", incident.key), session=session)
        append_event(
            session=session,
            incident=incident,
            actor="system",
            kind="slack.card_posted",
            summary=summary,
            details={"channel": channel, "ts": ts},
        )


def _count(stats: Stats, method: str, kwargs: dict[str, Any]) -> None:
    if method == "files_upload_v2":
        stats.uploads += 1
    elif method == "chat_update":
        stats.updates += 1
    elif method == "chat_postMessage":
        if kwargs.get("thread_ts"):
            stats.thread_replies += 1
        else:
            stats.posts += 1


def _set_cursor(session: Session, name: str, value: float) -> None:
    row = session.get(Cursor, name)
    if row is None:
        session.add(Cursor(name=name, value=repr(value)))
    else:
        row.value = repr(value)
