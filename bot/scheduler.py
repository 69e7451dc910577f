"""The reminder scheduler: APScheduler 3 as an alarm clock, the database as the truth.

One `date` job is armed for the earliest pending Reminder row (never more than
`poll_seconds` ahead, so rows added by other processes are noticed). When it fires, due rows
are claimed atomically (commands.deadlines.queue.claim_due: pending -> sent in one UPDATE), each
claimed row is posted to its incident's thread mentioning the owner and the contacts, the
firing lands on the timeline, and the timer is re-armed. Scheduling a reminder anywhere in
this process wakes the timer at once (an after-commit hook on its Database).

Nothing depends on APScheduler remembering anything: at start the timer is rebuilt from the
rows, and rows that came due while no process was running are marked late and posted once.
Every job has `misfire_grace_time=None` (APScheduler's default of 1 s silently drops a job
that fires late, e.g. after a long GC pause or a suspended VM).

Posting runs in parallel across channels and in order within one (bot/reminder_lanes.py:
claimed reminders join their channel's lane, lanes run on a small pool of posting threads,
and a lane posts when the writer's budget for its channel has a token; a 429 waits its
Retry-After). So 100 reminders due at once in 100 threads of 20 channels are not posted one
after the other at Slack's latency each. While the lanes are full (a post waiting for every
posting thread, or a whole `batch`) the timer claims no more: rows stay pending for another
process to share, and nothing claimed waits in a lane for as long as recover_stalled's lease.

Several processes may run a scheduler against one database: each reminder is still posted
exactly once, because only the process whose UPDATE flipped the row posts it.

Run alone (a dedicated scheduler replica, or the tests' bot process):
`python -m bot.scheduler [--poll SECONDS]`.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor as PostingPool
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from apscheduler.executors.pool import BasePoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from slack_sdk import WebClient

from bot.reminder_kinds import ReminderKinds
from bot.reminder_lanes import UNDECIDED, PostingLanes, QueuedPost
from bot.slack_out import Pace, SlackWriter
from commands.deadlines import delivery as dl
from commands.deadlines import queue
from commands.deadlines.digest import ensure_digest
from commands.deadlines.gdpr import running_clock_keys
from commands.deadlines.policy import DeadlinePolicy
from commands.deadlines.stale import ensure_stale_checks
from storage.db import Database

if TYPE_CHECKING:
    from bot.runtime import Runtime
    from bot.settings import Settings

log = logging.getLogger(__name__)
# APScheduler logs every add/run/remove of a job at INFO; the timer re-arms all the time.
logging.getLogger("apscheduler").setLevel(logging.WARNING)

TICK_JOB = "incident-bot.reminders.tick"
MAINTAIN_JOB = "incident-bot.reminders.maintain"
UPKEEP_BATCH = 25  # incidents per upkeep transaction
UPKEEP_PAUSE = 0.05  # seconds between upkeep transactions
POST_WORKERS = 64  # reminders being posted at once (each in a different channel)
DRAIN_SECONDS = 30.0  # how long a graceful stop lets queued posts go out


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass
class ReminderStats:
    fired: int = 0
    skipped: int = 0
    failed: int = 0
    rate_limited: int = 0
    rebuild_s: float = 0.0


class _TimerJobs(BasePoolExecutor):
    """APScheduler's executor over a pool the scheduler holds, so it can wait for it."""

    def __init__(self, pool: PostingPool) -> None:
        super().__init__(pool)


class ReminderScheduler(PostingLanes):
    """Fires due Reminder rows exactly once across processes; see the module docstring."""

    def __init__(
        self,
        *,
        database: Database,
        settings: Settings,
        kinds: ReminderKinds,
        policy: DeadlinePolicy | None = None,
        client: WebClient | None = None,
        slack: SlackWriter | None = None,
        worker_id: str | None = None,
        poll_seconds: float = 10.0,
        maintain_seconds: float = 60.0,
        batch: int = 50,
        refresh_card: Callable[[str], None] | None = None,
        maintain_at_start: bool = True,
        card_refresh_seconds: float = 900.0,
        post_workers: int = POST_WORKERS,
    ) -> None:
        self.database = database
        self.settings = settings
        self.config = settings.config
        self.policy = policy or DeadlinePolicy.from_options(settings.config.deadlines)
        self.kinds = kinds
        self._unhook: Callable[[], None] | None = None
        if client is None:
            from bot.runtime import make_client

            client = make_client(settings)
        self.client = client
        # Reminders reach Slack through the app's writer when there is one (its card locks).
        pace = Pace() if settings.config.slack.pace else None
        self.slack = slack or SlackWriter(client, database, pace=pace)
        self.worker_id = worker_id or new_worker_id()
        self.poll = dt.timedelta(seconds=poll_seconds)
        self.maintain_seconds = maintain_seconds
        self.batch = batch
        # Lanes full: every posting thread has a post waiting (or a whole batch does).
        self.lanes_full = max(batch, post_workers)
        self.clock = database.clock
        self.now = database.clock.now
        self.refresh_card = refresh_card
        self.maintain_at_start = maintain_at_start
        self.card_refresh_seconds = card_refresh_seconds
        self._card_refreshed: dict[str, float] = {}
        self.stats = ReminderStats()
        self._arm_lock = threading.Lock()
        self._armed_at: dt.datetime | None = None
        self._tick_lock = threading.Lock()
        self._again = threading.Event()
        self._posting = PostingPool(post_workers, thread_name_prefix="reminder-post")
        self._lanes: dict[str, deque[QueuedPost]] = {}  # channel -> posts waiting, in due order
        self._held: dict[str, float] = {}  # channel -> monotonic time a 429 said to wait for
        self._lanes_lock = threading.Condition()
        self._queued = 0  # posts in lanes or being posted
        self._backlogged = False  # the timer stopped claiming while lanes were full
        # Posted, to be recorded: (delivery, channel, ts, when Slack answered).
        self._unrecorded: deque[tuple[dl.Delivery, str, str | None, dt.datetime]] = deque()
        self._recording = 0
        self._recorder_stop = False
        self._recorder_guard = threading.Lock()
        self._recorder = threading.Thread(
            target=self._record_posts, name="reminder-recorder", daemon=True
        )
        self._running = False
        self._stopping = False
        # The timer's jobs run here; shutdown waits for them itself (see `shutdown`).
        self._jobs = PostingPool(4, thread_name_prefix="reminder-timer")
        self._scheduler = BackgroundScheduler(
            timezone=dt.UTC,
            executors={"default": _TimerJobs(self._jobs)},
            # Explicit, never APScheduler's 1 s default: a late wake-up must still run.
            job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 8},
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> float:
        """Start the clock and rebuild the timer from the rows; returns the rebuild time (s)."""
        self._scheduler.start()
        self._start_recorder()
        self._running = True
        self._unhook = self.database.on_commit(self._committed)
        elapsed = self.rebuild()
        delay = 0.5 if self.maintain_at_start else self.maintain_seconds
        self._scheduler.add_job(
            self.maintain,
            "interval",
            seconds=self.maintain_seconds,
            id=MAINTAIN_JOB,
            replace_existing=True,
            next_run_time=self._wall(self.now() + dt.timedelta(seconds=delay)),
            misfire_grace_time=None,
            coalesce=True,
            max_instances=1,
        )
        log.info(
            "reminder scheduler %s started; rebuilt in %.1f ms", self.worker_id, elapsed * 1000
        )
        return elapsed

    def rebuild(self) -> float:
        """Mark what came due while no process ran as late, then arm the timer."""
        t0 = time.perf_counter()
        started = self.now()
        with self.database.session() as session:
            late = queue.mark_late(session=session, before=started)
        if late:
            log.warning("%d reminder(s) came due while the bot was down: posting them now", late)
        self._arm()
        self._scheduler.add_job(  # off the start path; upkeep repeats it
            self.recover, "date", run_date=self._wall(started), misfire_grace_time=None
        )
        self.stats.rebuild_s = time.perf_counter() - t0
        return self.stats.rebuild_s

    def shutdown(self, *, wait: bool = True) -> None:
        if not self._running:
            return
        self._running = False
        self._stopping = True
        if self._unhook is not None:
            self._unhook()
            self._unhook = None
        # Never wait inside APScheduler's shutdown: it holds its job-store lock while it waits,
        # and a tick that is running re-arms the timer through that lock (a deadlock). Once
        # stopped, the re-arm is only noted; then the running jobs are waited for here.
        self._scheduler.shutdown(wait=False)
        if wait:
            self._jobs.shutdown(wait=True)
        if wait and not self.drain(DRAIN_SECONDS):
            # Claimed and not posted: recover_stalled posts them once its lease runs out.
            log.warning("stopping with %d reminder post(s) still queued", self._queued)
        self._posting.shutdown(wait=wait, cancel_futures=True)
        with self._lanes_lock:  # what was posted is still recorded
            self._recorder_stop = True
            self._lanes_lock.notify_all()
        if wait:
            self._recorder.join()

    def _start_recorder(self) -> None:
        with self._recorder_guard:
            if not self._recorder.is_alive() and not self._recorder_stop:
                self._recorder.start()

    def drain(self, timeout: float) -> bool:
        """Wait until no post is queued or in flight; False if some still were at `timeout`."""
        deadline = time.monotonic() + timeout
        with self._lanes_lock:
            while self._queued or self._unrecorded or self._recording:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lanes_lock.wait(remaining)
        return True

    def idle(self) -> bool:
        """Nothing being claimed, queued or posted right now."""
        with self._lanes_lock:
            busy = self._queued or self._unrecorded or self._recording
            return not busy and not self._tick_lock.locked()

    @property
    def running(self) -> bool:
        return self._running

    # -- the one timer ------------------------------------------------------------------------

    def wake(self, due_at: dt.datetime) -> None:
        """A reminder due at `due_at` was just committed: fire earlier if it is the earliest."""
        if not self._running:
            return
        with self._arm_lock:
            if self._armed_at is None or due_at < self._armed_at:
                self._set_timer(due_at)

    def _committed(self, session: Any) -> None:
        due = queue.scheduled_due(session)
        if due is not None:
            self.wake(due)

    def _arm(self) -> None:
        """Re-arm for the earliest pending row (reads under the lock so no wake is lost).
        Before `start` (a rebuild on its own, as the benchmark times it) the job waits in
        APScheduler's pending list; after `shutdown` nothing is armed."""
        if self._stopping:
            return
        with self._arm_lock:
            cap = self.now() + self.poll
            try:
                with self.database.read_session() as session:
                    nxt = queue.next_due(session=session)
            except Exception:  # database unreachable: look again after a poll interval
                log.exception("could not read the next due reminder; retrying in %s", self.poll)
                nxt = None
            # Lanes full: the rows already due wait for the lanes to drain (which wakes the
            # timer) or for another replica; firing now would only find the lanes full again.
            backlogged = self._backlogged
            self._set_timer(cap if nxt is None or backlogged else min(nxt, cap))

    def _set_timer(self, at: dt.datetime) -> None:
        at = max(at, self.now())
        self._armed_at = at
        try:
            self._scheduler.add_job(
                self._tick,
                "date",
                run_date=self._wall(at),
                id=TICK_JOB,
                replace_existing=True,
                misfire_grace_time=None,
            )
        except Exception:  # the scheduler is shutting down
            if self._running:
                raise

    def _wall(self, at: dt.datetime) -> dt.datetime:
        """The wall-clock instant APScheduler waits for, `at` being on the injected clock.

        Due times are decided on the injected clock; only the waiting uses the machine's.
        """
        return dt.datetime.now(dt.UTC) + (at - self.now())

    def _tick(self) -> None:
        with self._arm_lock:
            self._armed_at = None  # this date job is spent
        if not self._tick_lock.acquire(blocking=False):
            self._again.set()  # the running tick loops once more
            return
        try:
            while self._running:
                self._again.clear()
                with self._lanes_lock:
                    if self._queued >= self.lanes_full:  # claim more once they drain
                        self._backlogged = True
                        break
                drained = self.run_due()
                if drained < self.batch and not self._again.is_set():
                    break
        except Exception:
            log.exception("reminder tick failed; retrying at the next wake-up")
        finally:
            self._tick_lock.release()
            self._arm()

    # -- claiming and posting ----------------------------------------------------------------

    def run_due(self) -> int:
        """Claim one batch of due reminders and queue their posts; returns how many were
        claimed. The posts go out on the posting threads (see the module docstring)."""
        now = self.now()
        with self.database.session() as session:
            claims = queue.claim_due(
                session=session, now=now, worker_id=self.worker_id, limit=self.batch
            )
        for claim, delivery in self._prepare(claims):
            self._dispatch(claim, delivery)
        return len(claims)

    def _prepare(self, claims: list[queue.Claim]) -> list[tuple[queue.Claim, Any]]:
        """What each claimed reminder says, decided in one transaction for the batch (a
        hundred reminders due at once must not queue behind a hundred commits); if any
        fails, each is decided on its own so one bad row cannot hold back the others."""
        if len(claims) > 1:
            try:
                with self.database.session() as session:
                    return [(claim, self._decide(session, claim)) for claim in claims]
            except Exception:
                log.exception("could not prepare %d reminders together; one by one", len(claims))
        return [(claim, UNDECIDED) for claim in claims]

    def _decide(self, session: Any, claim: queue.Claim) -> dl.Delivery | None:
        return dl.prepare_delivery(
            session=session,
            claim=claim,
            now=self.now(),
            policy=self.policy,
            kinds=self.kinds.deliver,
        )

    # -- periodic upkeep ---------------------------------------------------------------------

    def recover(self) -> int:
        """Post reminders a dead process claimed but never posted (see recover_stalled)."""
        try:
            with self.database.session() as session:
                claims = queue.recover_stalled(
                    session=session, now=self.now(), worker_id=self.worker_id
                )
        except Exception:
            log.exception("could not look for stalled reminders")
            return 0
        for claim in claims:
            log.warning("reminder %s was claimed by a process that died: posting it", claim.id)
            self._dispatch(claim)
        return len(claims)

    def maintain(self) -> None:
        """Keep a digest and a stale check pending for every live incident (idempotent)."""
        self.recover()
        try:
            now = self.now()
            with self.database.session() as session:
                ensure_digest(session=session, now=now, policy=self.policy)
            while not self._stopping:  # short transactions: due reminders never wait long
                with self.database.session() as session:
                    added = ensure_stale_checks(
                        session=session, now=now, policy=self.policy, limit=UPKEEP_BATCH
                    )
                if added < UPKEEP_BATCH:
                    break
                # Let a claim waiting on SQLite's write lock in before the next batch (its
                # busy handler sleeps and would keep losing the race for the lock), and
                # stand aside while due reminders are being claimed and prepared.
                time.sleep(UPKEEP_PAUSE)
                while self._tick_lock.locked() and not self._stopping:
                    time.sleep(UPKEEP_PAUSE)
        except Exception:
            log.exception("reminder upkeep failed; trying again next round")
        self.refresh_clock_cards()

    def refresh_clock_cards(self) -> int:
        """Re-render cards whose regulator clock runs, so the time left they show stays true."""
        if self.refresh_card is None:
            return 0
        try:
            with self.database.read_session() as session:
                keys = running_clock_keys(session=session)
        except Exception:
            log.exception("could not list running regulator clocks")
            return 0
        done = 0
        for key in keys:
            last = self._card_refreshed.get(key)
            if last is not None and time.monotonic() - last < self.card_refresh_seconds:
                continue
            self._card_refreshed[key] = time.monotonic()
            try:
                self.refresh_card(key)
                done += 1
            except Exception:
                log.exception("could not refresh the card of %s", key)
        return done


# -- wiring into the app (bot/server.py serve() calls these) -------------------------------


def start_for_runtime(
    runtime: Runtime, *, kinds: ReminderKinds, **kwargs: Any
) -> ReminderScheduler:
    """Start a scheduler sharing the app's database and writer (runtime.services.scheduler)."""

    def refresh(key: str) -> None:
        from bot.guardduty.publisher import ACTOR, publisher_for
        from bot.listeners.incident_posts import refresh_incident
        from commands.incidents import get_incident

        with runtime.database.read_session() as session:
            incident = get_incident(session=session, key=key)
            incident_id, from_guardduty = incident.id, incident.created_by == ACTOR
        if from_guardduty:
            # GuardDuty cards are paced by their publisher (a storm stays within Slack's limits).
            publisher_for(runtime).mark_stale(incident_id)
        else:
            refresh_incident(runtime, key)

    scheduler = ReminderScheduler(
        database=runtime.database,
        settings=runtime.settings,
        kinds=kinds,
        policy=runtime.deadline_policy,
        client=runtime.client,
        slack=runtime.slack,
        refresh_card=refresh,
        **kwargs,
    )
    scheduler.start()
    runtime.services.scheduler = scheduler
    return scheduler


def stop_for_runtime(runtime: Runtime) -> None:
    scheduler, runtime.services.scheduler = runtime.services.scheduler, None
    if scheduler is not None:
        scheduler.shutdown()


if __name__ == "__main__":
    # `python -m bot.scheduler`: the standalone process is built where the app is.
    from bot.wiring import scheduler_main

    sys.exit(scheduler_main())
