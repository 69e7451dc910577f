"""The reminder scheduler's posting lanes: claimed reminders are posted in parallel across
channels and in order within one.

Each claimed reminder joins its channel's lane, lanes run on a small pool of posting threads,
and a lane posts when the writer's budget for its channel has a token (bot/slack_pace.py:
Slack's pace of about one message per second per channel, short bursts, shared by every
process; a 429 waits its Retry-After and the post stays first in its lane). What was posted
is recorded by one recorder thread, in one transaction for everything posted since its last
write.

`PostingLanes` is mixed into `bot.scheduler.ReminderScheduler`, which sets up the state
declared below in its `__init__` and supplies `_decide` (what a claim says) and `wake`.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from slack_sdk.errors import SlackApiError
from sqlalchemy.exc import OperationalError

from bot.reminder_kinds import ReminderKinds
from bot.slack_out import PERMANENT_ERRORS, SlackWriter, retry_after, slack_error
from bot.views.reminders import delivery_text, reminder_text
from commands.deadlines import delivery as dl
from commands.deadlines import queue
from storage.db import Database

if TYPE_CHECKING:
    from bot.scheduler import ReminderStats

# The scheduler's logger: its records read as one component's, as before the split.
log = logging.getLogger("bot.scheduler")

MAX_RATE_LIMITED = 10  # 429s one reminder may get before it is handed back for a later retry
UNDECIDED = object()  # a claim whose delivery is still to be prepared


@dataclass
class QueuedPost:
    claim: queue.Claim
    delivery: dl.Delivery
    rate_limited: int = 0


class PostingLanes:
    """Channel lanes, the posting pool and the recorder of a ReminderScheduler."""

    database: Database
    config: Any
    kinds: ReminderKinds
    slack: SlackWriter
    stats: ReminderStats
    now: Callable[[], dt.datetime]
    refresh_card: Callable[[str], None] | None
    batch: int
    lanes_full: int  # posts waiting at which the timer stops claiming
    _posting: ThreadPoolExecutor
    _lanes: dict[str, deque[QueuedPost]]  # channel -> posts waiting, in due order
    _held: dict[str, float]  # channel -> monotonic time a 429 said to wait for
    _lanes_lock: threading.Condition
    _queued: int  # posts in lanes or being posted
    _backlogged: bool  # the timer stopped claiming while lanes were full
    # Posted, to be recorded: (delivery, channel, ts, when Slack answered).
    _unrecorded: deque[tuple[dl.Delivery, str, str | None, dt.datetime]]
    _recording: int
    _recorder_stop: bool

    if TYPE_CHECKING:  # the scheduler's

        def _decide(self, session: Any, claim: queue.Claim) -> dl.Delivery | None: ...

        def wake(self, due_at: dt.datetime) -> None: ...

        def _start_recorder(self) -> None: ...

    def _dispatch(self, claim: queue.Claim, delivery: Any = UNDECIDED) -> None:
        """Queue a claimed reminder in its channel's lane; what it says is decided here
        unless `_prepare` decided it already."""
        if delivery is UNDECIDED:
            try:
                with self.database.session() as session:
                    delivery = self._decide(session, claim)
            except Exception as exc:
                log.exception("could not prepare reminder %s", claim.id)
                self._failed(claim.id, f"{type(exc).__name__}: {exc}", retry=True)
                return
        if delivery is None:
            self.stats.skipped += 1
            return
        channel = delivery.channel or self.config.slack.incident_channel
        if not channel:
            self._failed(claim.id, "no channel: set slack.incident_channel", retry=False)
            return
        with self._lanes_lock:
            lane = self._lanes.get(channel)
            idle = lane is None
            if lane is None:
                lane = self._lanes[channel] = deque()
            lane.append(QueuedPost(claim, delivery))
            self._queued += 1
        if idle:
            self._next_in_lane(channel)

    def _next_in_lane(self, channel: str) -> None:
        """Run the lane's next post now, or when the channel's pace allows it: the writer's
        budget (shared with everything else this process posts there) or a 429's wait."""
        budget = self.slack.budget
        wait = max(
            budget.ready_in(budget.key("chat_postMessage", {"channel": channel})),
            self._held.get(channel, 0.0) - time.monotonic(),
        )
        try:
            if wait > 0:
                timer = threading.Timer(wait, self._next_in_lane, (channel,))
                timer.daemon = True
                timer.start()
            else:
                self._posting.submit(self._lane_step, channel)
        except RuntimeError:  # stopping: the pool takes no more work
            with self._lanes_lock:
                self._queued -= len(self._lanes.pop(channel, ()))
                self._lanes_lock.notify_all()

    def _lane_step(self, channel: str) -> None:
        with self._lanes_lock:
            post = self._lanes[channel][0]
        limited = False
        try:
            limited = self._deliver(post, channel)
        except Exception:  # _deliver records its own failures; never lose the lane
            log.exception("posting reminder %s failed", post.claim.id)
        with self._lanes_lock:
            lane = self._lanes[channel]
            if not limited:
                lane.popleft()
                self._queued -= 1
            more = bool(lane)
            if not more:
                del self._lanes[channel]
            wake = self._backlogged and self._queued < self.lanes_full
            if wake:
                self._backlogged = False
            self._lanes_lock.notify_all()
        if more:
            self._next_in_lane(channel)
        if wake:
            self.wake(self.now())

    def _deliver(self, post: QueuedPost, lane: str) -> bool:
        """Post one prepared reminder and record it; True when Slack said to wait (429): the
        post stays first in its lane, which resumes after the Retry-After."""
        claim, delivery = post.claim, post.delivery
        try:
            ts, channel = self._post(delivery, lane)
        except SlackApiError as exc:
            response = exc.response
            if response is not None and response.status_code == 429:
                self.stats.rate_limited += 1
                post.rate_limited += 1
                if post.rate_limited <= MAX_RATE_LIMITED:
                    self._held[lane] = time.monotonic() + retry_after(response.headers)
                    return True
            error = str(exc.response.get("error") or exc)
            log.error("posting reminder %s failed: %s", claim.id, error)
            self._failed(claim.id, error, retry=error not in PERMANENT_ERRORS)
            return False
        except Exception as exc:  # connection errors after the client's own retries
            log.exception("posting reminder %s failed", claim.id)
            self._failed(claim.id, f"{type(exc).__name__}: {exc}", retry=True)
            return False
        self.stats.fired += 1
        with self._lanes_lock:  # recorded by the recorder thread, with the others just posted
            self._start_recorder()  # a scheduler driven by run_due alone records them too
            self._unrecorded.append((delivery, channel, ts, self.now()))
            self._lanes_lock.notify_all()
        self._follow_up(delivery, channel, ts)
        return False

    def _record_posts(self) -> None:
        """Write what was posted (the row's ts, the timeline event) for every post since the
        last write, in one transaction: a hundred posts landing together are not a hundred
        commits for the next claim to queue behind, and a lane moves on once Slack answered."""
        while True:
            with self._lanes_lock:
                while not self._unrecorded and not self._recorder_stop:
                    self._lanes_lock.wait()
                if not self._unrecorded:
                    return
                # By incident (stable, so each incident's posts keep their order): replicas'
                # recorders lock incidents' timeline tails in one order, never in two that
                # deadlock on PostgreSQL.
                batch = sorted(self._unrecorded, key=lambda fired: fired[0].incident_id or 0)
                self._recording = len(batch)
                self._unrecorded.clear()
            try:
                try:
                    with self.database.session() as session:
                        for fired in batch:
                            self._record_fired(session, *fired, alone=False)
                except Exception:  # a second try, each alone: what was lost is said below
                    log.warning(
                        "recording %d posted reminders together failed; one by one now",
                        len(batch),
                        exc_info=True,
                    )
                    for fired in batch:  # one bad record must not lose the others
                        with self.database.session() as session:
                            self._record_fired(session, *fired)
            except Exception:
                log.exception("reminder(s) were posted but recording them failed")
            finally:
                with self._lanes_lock:
                    self._recording = 0
                    self._lanes_lock.notify_all()

    def _record_fired(
        self,
        session: Any,
        delivery: dl.Delivery,
        channel: str,
        ts: str | None,
        at: dt.datetime,
        *,
        alone: bool = True,
    ) -> None:
        """Record one posted reminder. In a batch (`alone=False`) an error the database raised
        ends the batch: it may have aborted the whole transaction (a deadlock, a lost
        connection), which the savepoint cannot undo, so the caller records each again alone."""
        try:
            with session.begin_nested():
                dl.record_fired(
                    session=session,
                    delivery=delivery,
                    text=delivery_text(delivery),
                    now=at,
                    channel=channel,
                    ts=ts,
                )
        except Exception as exc:
            if not alone and isinstance(exc, OperationalError):
                raise
            log.exception("reminder %s was posted but recording it failed", delivery.reminder_id)

    def _post(self, delivery: dl.Delivery, channel: str) -> tuple[str | None, str]:
        text = self._text(delivery)
        kwargs: dict[str, Any] = {
            "channel": channel,
            "text": text,
            "metadata": {
                "event_type": "incident_bot_reminder",
                "event_payload": {"reminder_id": delivery.reminder_id, "kind": delivery.kind},
            },
        }
        if delivery.thread_ts:
            kwargs["thread_ts"] = delivery.thread_ts
        # The lane asked the budget's mirror; the reservation may learn that another process
        # posted here meanwhile: it waits for that token (about a second), then tries once.
        try:
            resp = self.slack.call("chat_postMessage", keep_pace=True, **kwargs)
        except SlackApiError as exc:
            # The thread's parent was deleted: the reminder still matters, post it top-level.
            if slack_error(exc) != "thread_not_found" or "thread_ts" not in kwargs:
                raise
            kwargs.pop("thread_ts")
            resp = self.slack.call("chat_postMessage", keep_pace=True, **kwargs)
        return resp.get("ts"), str(resp.get("channel") or channel)

    def _text(self, delivery: dl.Delivery) -> str:
        return reminder_text(
            delivery,
            usergroup=self.config.contacts.slack_usergroup,
            oncall=self.config.oncall.slack_usergroup,
        )

    def _failed(self, reminder_id: int, error: str, *, retry: bool) -> None:
        self.stats.failed += 1
        try:
            with self.database.session() as session:
                dl.record_failed(
                    session=session,
                    reminder_id=reminder_id,
                    now=self.now(),
                    error=error,
                    retry=retry,
                )
        except Exception:
            log.exception("could not record the failure of reminder %s", reminder_id)

    def _follow_up(self, delivery: dl.Delivery, channel: str, ts: str | None) -> None:
        if delivery.refresh_card and delivery.incident_key and self.refresh_card:
            try:
                self.refresh_card(delivery.incident_key)  # the card's time left
            except Exception:
                log.exception("could not refresh the card of %s", delivery.incident_key)
        for hook in self.kinds.after_post.get(delivery.kind, ()):
            try:
                hook(self, delivery, channel, ts)
            except Exception:
                log.exception("after-post hook for %s failed", delivery.kind)
