"""Slack side of GuardDuty intake: one card per incident, batched updates, Retry-After obeyed.

Findings are recorded before the sender gets its answer; Slack work happens here, after, on
two worker threads per process (cards; the storm card), so an alert storm never blocks
intake, and no card's AWS read or 429 wait ever holds the storm card back:

- an incident GuardDuty opened gets exactly one message, its card (which is also the root
  of its thread); the resource's tags are read from AWS first;
- repeats and joins mark the card stale; a stale card is updated with `chat.update` at most
  once per `update_interval` seconds, however many findings arrived meanwhile;
- a finding joining an incident whose card has been quiet for `join_quiet` seconds is also
  announced in the thread; during a storm the card alone carries it (and the timeline);
- more new incidents than the channel can take one card at a time (a storm): one storm card
  lists them all at once, grouped, and their own cards follow, most severe first
  (bot/guardduty/storm.py);
- every write keeps to Slack's rate limits (the writer's `budget`): the next job is one
  whose budget is free, the storm card first, then new cards, then card updates;
- a 429 is retried after its `Retry-After`, for as long as it takes: nothing is dropped;
- at start, incidents GuardDuty opened whose card was never posted (a crash between
  recording and posting) are posted.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from bot.contacts import notify_opened
from bot.guardduty.follow_up import propose_for_finding
from bot.guardduty.storm import StormWatch, permalink, storm_view
from bot.guardduty.writes import intake_is_hot, write_session, write_turn
from bot.slack_out import Stats, card_id, card_metadata
from bot.views.guardduty import add_to_card, findings_joined_message
from bot.views.storm import storm_message
from commands.findings.ingest import ACTOR, Ingested, sync_incident
from commands.findings.normalize import NormalizedFinding, normalize_finding
from commands.findings.tags import read_resource_tags, store_resource_tags
from commands.people import start_unowned_pings
from containment.clients import aws_client
from storage.facts import GUARDDUTY, tags_source
from storage.models import Finding, Incident
from storage.timeline import append_event

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger(__name__)

UPDATE_INTERVAL = 10.0  # seconds between card updates of one incident
JOIN_QUIET = 300.0  # a join is announced in the thread only after this much card silence
STORM_PACE = 1.0  # seconds between Slack jobs while findings are being recorded


class CardPublisher:
    """See the module docstring. Thread-safe `submit`; a card worker and a storm card worker."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        update_interval: float = UPDATE_INTERVAL,
        join_quiet: float = JOIN_QUIET,
        clock: Callable[[], float] = time.monotonic,
        storm: dict[str, float] | None = None,  # StormWatch's threshold, window, refresh
    ) -> None:
        self.runtime = runtime
        self.update_interval = update_interval
        self.join_quiet = join_quiet
        self.clock = clock
        self.stats = Stats()
        self._cond = threading.Condition()
        self._new: dict[int, float] = {}  # cards to post: incident id -> severity
        self.storms = StormWatch(clock=clock, now=runtime.now, **(storm or {}))
        self._workspace_url: str | None = None
        self._workspace_read = False
        self._queued: set[int] = set()
        self._dirty: set[int] = set()
        self._joined: dict[int, list[str]] = {}
        self._due: dict[int, float] = {}  # earliest next update of each stale card
        self._clients: dict[tuple[str, str | None], Any] = {}  # the card worker's only
        self._busy = 0  # workers in a job
        self._last_job = 0.0
        self._stop = False
        self._threads: list[threading.Thread] = []

    # -- feeding ----------------------------------------------------------------------------

    def submit(self, results: Iterable[Ingested]) -> None:
        with self._cond:
            news = False
            for result in results:
                incident_id = result.incident_id
                if incident_id is None or not result.card_stale:
                    continue
                if result.outcome == "opened":
                    if incident_id not in self._queued:
                        self._queued.add(incident_id)
                        self._new[incident_id] = result.severity
                        self.storms.opened(incident_id)
                        news = True
                else:
                    if result.outcome == "joined" and self.storms.in_storm(incident_id):
                        self.storms.touched(incident_id)
                        news = True
                    if incident_id not in self._dirty:
                        self._dirty.add(incident_id)
                        news = True
                    if result.outcome == "joined":
                        self._joined.setdefault(incident_id, []).append(result.finding_id)
            # A card already stale is already scheduled: during a storm most deliveries are
            # such repeats, and waking the worker for each would only cost the intake CPU.
            if news:
                self._ensure_started()
                self._cond.notify_all()

    def mark_stale(self, incident_id: int) -> None:
        """Another feature changed what the card shows (its blast radius, say): update it
        within the same pacing as findings' updates, so a storm stays within Slack's limits."""
        self.submit([Ingested("", "repeat", None, incident_id, None)])

    def recover(self) -> int:
        """Queue what a restart left undone: unposted cards, and posted cards whose facts
        lag behind their findings (repeats recorded after the last card write).

        Returns the number of cards queued for posting.
        """
        live = (Incident.created_by == ACTOR, Incident.status.in_(("open", "contained")))
        with self.runtime.database.read_session() as session:
            unposted = session.scalars(
                select(Incident.id)
                .where(*live, Incident.card_ts.is_(None))
                .order_by(Incident.number)
            ).all()
            totals = session.execute(
                select(Incident.id, func.count(Finding.id), func.sum(Finding.count))
                .join(Finding, Finding.incident_id == Incident.id)
                .where(*live, Incident.card_ts.is_not(None))
                .group_by(Incident.id)
            ).all()
            shown = dict(
                session.execute(
                    select(Incident.id, Incident.facts).where(*live, Incident.card_ts.is_not(None))
                ).all()
            )
        stale = [
            incident_id
            for incident_id, distinct, occurrences in totals
            if _shown_totals(shown.get(incident_id)) != (distinct, occurrences)
        ]
        self.submit(Ingested("", "opened", None, incident_id, None) for incident_id in unposted)
        self.submit(Ingested("", "repeat", None, incident_id, None) for incident_id in stale)
        if unposted or stale:
            log.warning(
                "after a restart: posting %d GuardDuty card(s), updating %d",
                len(unposted),
                len(stale),
            )
        return len(unposted)

    # -- lifecycle --------------------------------------------------------------------------

    def _ensure_started(self) -> None:
        if self._threads or self._stop:
            return
        workers = (
            ("guardduty-cards", self._next_card_job, self._card_wait, True),
            ("guardduty-storm", self._next_storm_job, self._storm_wait, False),
        )
        for name, next_job, wait_time, yields in workers:
            thread = threading.Thread(
                target=self._run, args=(next_job, wait_time, yields), name=name, daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def wait_idle(self, timeout: float = 10.0, *, include_updates: bool = True) -> bool:
        """Block until nothing is queued (and, by default, no stale card waits)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while (
                self._new
                or self._busy
                or (include_updates and (self._dirty or self.storms.due() is not None))
            ):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.05))
            return True

    def stop(self, timeout: float = 5.0) -> None:
        """Post what is queued (within `timeout`), then end the worker.

        Cards still unposted are posted by `recover` at the next start.
        """
        self.wait_idle(timeout, include_updates=False)
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout)
        stats = self.stats
        if stats.posts or stats.updates:
            log.info(
                "guardduty cards: %d posted, %d updated, %d thread replies, %d rate-limited, "
                "%d failed",
                stats.posts,
                stats.updates,
                stats.thread_replies,
                stats.rate_limited,
                stats.failures,
            )

    # -- the worker -------------------------------------------------------------------------

    def _run(
        self,
        next_job: Callable[[], tuple[str, int] | None],
        wait_time: Callable[[], float],
        yields: bool,  # to intake, before picking: the pick is then the most urgent job
    ) -> None:
        while True:
            if yields:
                self._yield_to_intake()
            with self._cond:
                job = next_job()
                while job is None and not self._stop:
                    self._cond.wait(wait_time())
                    job = next_job()
                if job is None:
                    return
                self._busy += 1
                if yields:
                    self._last_job = time.monotonic()
            kind, incident_id = job
            try:
                if kind == "storm":  # the storm card is what keeps a storm visible: never late
                    self._write_storm()
                elif kind == "post":
                    self._post(incident_id)
                else:
                    self._update(incident_id)
            except Exception:  # reported here: nothing else would see it
                self.stats.failures += 1
                log.exception("GuardDuty card %s for incident %s failed", kind, incident_id)
            finally:
                with self._cond:
                    self._busy -= 1
                    if kind == "post":
                        self._queued.discard(incident_id)
                    self._cond.notify_all()

    def _yield_to_intake(self) -> None:
        """During a storm, recording findings comes first: Slack work runs at most every
        `STORM_PACE` seconds while deliveries are being written. That is Slack's own pace
        (about one message per second per channel), and each card costs the intake process
        an AWS call, a render and two Slack round trips it would otherwise spend recording."""
        deadline = self._last_job + STORM_PACE
        while time.monotonic() < deadline and intake_is_hot(self.runtime) and not self._stop:
            time.sleep(0.01)

    def _post_key(self) -> str | None:
        channel = self.runtime.config.slack.incident_channel
        return self.runtime.slack.budget.key("chat_postMessage", {"channel": channel})

    def _next_storm_job(self) -> tuple[str, int] | None:
        """Under the lock: the storm card's write, when due and Slack's budget allows."""
        storm = self.storms.storm
        storm_due = self.storms.due()
        if storm_due is None or storm is None or storm_due > 0:
            return None
        key = self._post_key() if storm.ts is None else "chat_update"
        return ("storm", 0) if self.runtime.slack.budget.ready_in(key) == 0 else None

    def _storm_wait(self) -> float:
        """Seconds until the storm card may be written (at most 1 s, to notice stop)."""
        storm_due = self.storms.due()
        storm = self.storms.storm
        if storm_due is None or storm is None:
            return 1.0
        key = self._post_key() if storm.ts is None else "chat_update"
        return max(0.01, min(1.0, max(storm_due, self.runtime.slack.budget.ready_in(key))))

    def _next_card_job(self) -> tuple[str, int] | None:
        """Under the lock: the most urgent card job Slack's budget allows now (None: wait)."""
        budget = self.runtime.slack.budget
        post_key = self._post_key()
        if self._new and not self._storm_unposted() and budget.ready_in(post_key) == 0:
            # Most severe first (then the oldest): in a storm, the cards that matter most.
            pick = max(self._new, key=lambda i: (self._new[i], -i))
            del self._new[pick]
            return "post", pick
        # A card update leaves the storm card a token: it is what keeps a storm visible.
        spare = 1.0 if self.storms.due() is not None else 0.0
        if self._dirty and budget.ready_in("chat_update", spare=spare) == 0:
            now = self.clock()
            for incident_id in sorted(self._dirty):
                if incident_id in self._queued:
                    continue  # its post will render the latest state
                if now >= self._due.get(incident_id, -1e18):
                    self._dirty.discard(incident_id)
                    return "update", incident_id
        return None

    def _storm_unposted(self) -> bool:
        """Under the lock: a storm card is due and not posted yet. It takes the channel's next
        post, since it shows every card still queued."""
        storm = self.storms.storm
        return storm is not None and storm.ts is None and self.storms.due() is not None

    def _card_wait(self) -> float:
        """Seconds until the next card job may run (at most 1 s, to notice stop)."""
        budget = self.runtime.slack.budget
        waits = [1.0]
        if self._new and not self._storm_unposted():  # its post wakes this worker
            waits.append(budget.ready_in(self._post_key()))
        due = [self._due.get(i, -1e18) for i in self._dirty if i not in self._queued]
        if due:
            waits.append(max(min(due) - self.clock(), budget.ready_in("chat_update")))
        return max(0.01, min(waits))

    # -- the storm card ---------------------------------------------------------------------

    def _write_storm(self) -> None:
        """Post or refresh the storm card (see bot/guardduty/storm.py)."""
        with self._cond:
            storm = self.storms.storm
            if storm is None:
                return
            storm.dirty = False
            live = self.storms.live() is not None
            members = list(storm.members)
        with self.runtime.database.read_session() as session:
            view = storm_view(session, storm, members, live=live, link=self._link)
        message = storm_message(view)
        slack = self.runtime.slack
        try:
            if storm.ts is None:
                channel = self.runtime.config.slack.incident_channel
                posted = slack.call(
                    "chat_postMessage", patient=True, stats=self.stats, channel=channel, **message
                )
                with self._cond:
                    storm.channel, storm.ts = str(posted["channel"]), str(posted["ts"])
            else:
                with slack.card_lock(card_id("storm", storm.ts)):
                    slack.call(
                        "chat_update",
                        patient=True,
                        stats=self.stats,
                        channel=storm.channel,
                        ts=storm.ts,
                        **message,
                    )
        except Exception:
            with self._cond:
                storm.dirty = True  # try again at the next refresh
                storm.last_write = self.clock()
            raise
        with self._cond:
            storm.last_write = self.clock()
            storm.shown_live = live
            newly = [m for m in members if m not in storm.listed]
            storm.listed.update(newly)
            if not live and view.posted == view.count and not storm.dirty:
                storm.done = True
        if newly:
            self._record_listed(newly, str(storm.channel), str(storm.ts))

    def _record_listed(self, incident_ids: list[int], channel: str, ts: str) -> None:
        """On each incident's timeline: where Slack shows it until its own card is posted."""
        with write_session(self.runtime) as session:
            for incident in session.scalars(select(Incident).where(Incident.id.in_(incident_ids))):
                append_event(
                    session=session,
                    incident=incident,
                    actor="system",
                    kind="slack.storm_listed",
                    summary=f"Listed on the GuardDuty storm card in the channel ({channel})",
                    details={"channel": channel, "ts": ts},
                )

    def _link(self, channel: str, ts: str) -> str | None:
        """A card's permalink; the workspace URL is asked of Slack once (auth.test)."""
        if not self._workspace_read:
            self._workspace_read = True
            try:
                self._workspace_url = str(self.runtime.client.auth_test().get("url") or "")
            except Exception:
                log.warning("auth.test failed: storm card entries are not linked", exc_info=True)
        return permalink(self._workspace_url, channel, ts)

    # -- posting ----------------------------------------------------------------------------

    def _post(self, incident_id: int) -> None:
        with self.runtime.database.read_session() as session:
            incident = session.get(Incident, incident_id)
            if incident is None or incident.card_ts:
                return  # gone, or posted by an earlier attempt
            finding = _first_finding(session, incident_id)
            key = incident.key
        if finding is not None and tags_source(incident) is None:
            try:
                tags, source = read_resource_tags(finding=finding, client_for=self._client_for)
            except Exception:  # the card matters more than its tags
                log.exception("reading the tags of %s failed", finding.resource_id)
                tags, source = dict(finding.tags), "finding"
            with write_turn(self.runtime):
                store_resource_tags(
                    database=self.runtime.database,
                    incident_id=incident_id,
                    tags=tags,
                    source=source,
                    policy=self.runtime.deadline_policy,
                )
        channel = self._channel(incident)
        self._sync(incident_id)
        slack = self.runtime.slack
        # No card lock: nothing can update a card before its ts is stored, and a 429 here
        # may sleep for a while.
        posted = slack.call(
            "chat_postMessage",
            patient=True,
            stats=self.stats,
            channel=channel,
            # A post that timed out is looked for by this before it is sent again.
            metadata=card_metadata(key),
            **self._render(key),
        )
        channel, ts = str(posted["channel"]), str(posted["ts"])
        with write_session(self.runtime) as session:
            incident = session.get(Incident, incident_id)
            assert incident is not None
            slack.record_card(
                session,
                incident,
                channel=channel,
                ts=ts,
                thread_ts=ts,
                summary=f"GuardDuty card posted in the incident channel ({channel})",
            )
            # Nobody owns what GuardDuty opened: on-call is pinged until someone takes it,
            # starting in the same transaction as the card, so a crash cannot skip it.
            oncall = self.runtime.config.oncall
            if oncall.slack_usergroup:
                start_unowned_pings(
                    session=session,
                    incident=incident,
                    every=dt.timedelta(minutes=oncall.ping_every_minutes),
                )
        with self._cond:
            self._wrote(incident_id)
            self._joined.pop(incident_id, None)  # the card shows them
            self.storms.touched(incident_id)  # its storm card entry links to it now
        # Once per incident: the card is posted once, and the notice is claimed once.
        notify_opened(self.runtime, key)
        propose_for_finding(self.runtime, incident_id, key, finding, on_change=self.mark_stale)

    def _update(self, incident_id: int) -> None:
        with self.runtime.database.read_session() as session:
            incident = session.get(Incident, incident_id)
            if incident is None or incident.status == "closed":
                return
            if not (incident.channel_id and incident.card_ts):
                # Another process opened it and has not posted the card yet: look again.
                self._later(incident_id, self.update_interval)
                return
            channel, ts, key = incident.channel_id, incident.card_ts, incident.key
        slack = self.runtime.slack
        card = card_id("incident", key)
        # The last write time lives in the database, so several processes (gunicorn workers,
        # replicas) together still update a card at most once per interval, and agree on how
        # long it has been quiet.
        wait, silent_for = slack.claim_turn(
            card, self.update_interval, session=lambda: write_session(self.runtime)
        )
        if wait > 0:
            self._later(incident_id, wait)
            return
        with self._cond:
            joined = self._joined.pop(incident_id, [])
        quiet = silent_for >= self.join_quiet
        self._sync(incident_id)
        with slack.card_lock(card):
            slack.call(
                "chat_update",
                patient=True,
                stats=self.stats,
                channel=channel,
                ts=ts,
                **self._render(key),
            )
        with self._cond:
            self._wrote(incident_id)
        if joined and quiet:
            with self.runtime.database.read_session() as session:
                types = _finding_types(session, joined)
            slack.call(
                "chat_postMessage",
                patient=True,
                stats=self.stats,
                channel=channel,
                thread_ts=ts,
                **findings_joined_message(key, types),
            )

    def _wrote(self, incident_id: int) -> None:
        """Under the lock: a post or update of this card just happened."""
        now = self.clock()
        self._due[incident_id] = now + self.update_interval

    def _later(self, incident_id: int, wait: float) -> None:
        with self._cond:
            self._dirty.add(incident_id)
            self._due[incident_id] = self.clock() + wait
            self._cond.notify_all()

    def _sync(self, incident_id: int) -> None:
        """Fold the repeats recorded since the last card write into facts and timeline."""
        with write_session(self.runtime) as session:
            incident = session.get(Incident, incident_id)
            if incident is not None:
                sync_incident(session=session, incident=incident)

    def _render(self, key: str) -> dict[str, Any]:
        from bot.listeners.incident_posts import render_card

        incident, card = render_card(self.runtime, key)
        return add_to_card(card, incident, tag_keys=self.runtime.config.impact.tag_keys)

    def _channel(self, incident: Incident) -> str:
        channel = incident.channel_id or self.runtime.config.slack.incident_channel
        if not channel:
            raise RuntimeError("slack.incident_channel is not configured")
        return channel

    def _client_for(self, service: str, region: str | None) -> Any:
        """One client per service and region: creating a boto3 client costs milliseconds."""
        key = (service, region)
        client = self._clients.get(key)
        if client is None:
            factory = self.runtime.options.guardduty_clients
            client = (
                factory(service, region) if factory is not None else aws_client(service, region)
            )
            self._clients[key] = client
        return client


def _shown_totals(facts: Any) -> tuple[int, int] | None:
    summary = GUARDDUTY.get(facts) if isinstance(facts, dict) else None
    if not summary:
        return None
    return summary.get("distinct"), summary.get("occurrences")


def _first_finding(session: Any, incident_id: int) -> NormalizedFinding | None:
    row = session.scalars(
        select(Finding).where(Finding.incident_id == incident_id).order_by(Finding.id)
    ).first()
    if row is None:
        return None
    try:
        return normalize_finding(row.raw, region=row.region, account_id=row.account_id)
    except Exception:
        return None


def _finding_types(session: Any, finding_ids: Sequence[str]) -> list[str]:
    rows = session.scalars(select(Finding.type).where(Finding.finding_id.in_(finding_ids))).all()
    return list(dict.fromkeys(rows))


def publisher_for(runtime: Runtime) -> CardPublisher:
    """The process's publisher (created on first use)."""
    services = runtime.services
    with services.create_lock:
        if services.publisher is None:
            services.publisher = CardPublisher(runtime)
            runtime.on_shutdown(services.publisher.stop)
        return services.publisher
