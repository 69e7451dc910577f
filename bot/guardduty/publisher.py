"""Slack side of GuardDuty intake: one card per incident, batched updates, Retry-After obeyed.

Findings are recorded before the sender gets its answer; Slack work happens here, after, on
one worker thread per process, so an alert storm never blocks intake:

- an incident GuardDuty opened gets exactly one message, its card (which is also the root
  of its thread); the resource's tags are read from AWS first;
- repeats and joins mark the card stale; a stale card is updated with `chat.update` at most
  once per `update_interval` seconds, however many findings arrived meanwhile;
- a finding joining an incident whose card has been quiet for `join_quiet` seconds is also
  announced in the thread; during a storm the card alone carries it (and the timeline);
- a 429 is retried after its `Retry-After`, for as long as it takes: nothing is dropped;
- at start, incidents GuardDuty opened whose card was never posted (a crash between
  recording and posting) are posted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from bot.contacts import notify_opened
from bot.guardduty.cards import add_to_card
from bot.guardduty.writes import intake_is_hot, write_session, write_turn
from bot.slack_out import Stats, card_id, card_metadata
from bot.views import blocks as bk
from bot.views.checklist import root_checklist_message
from commands.approvals.plans import finding_target_kind
from commands.approvals.root_checklist import record_checklist, root_checklist
from commands.errors import UserError
from commands.findings.ingest import ACTOR, Ingested, sync_incident
from commands.findings.normalize import NormalizedFinding, normalize_finding
from commands.findings.tags import read_resource_tags, store_resource_tags
from containment.clients import aws_client
from storage.facts import GUARDDUTY, NOT_AUTOMATIC, tags_source
from storage.models import Finding, Incident
from storage.timeline import append_event

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger(__name__)

UPDATE_INTERVAL = 10.0  # seconds between card updates of one incident
JOIN_QUIET = 300.0  # a join is announced in the thread only after this much card silence
STORM_PACE = 1.0  # seconds between Slack jobs while findings are being recorded


class CardPublisher:
    """See the module docstring. Thread-safe `submit`; one worker thread."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        update_interval: float = UPDATE_INTERVAL,
        join_quiet: float = JOIN_QUIET,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.runtime = runtime
        self.update_interval = update_interval
        self.join_quiet = join_quiet
        self.clock = clock
        self.stats = Stats()
        self._cond = threading.Condition()
        self._new: deque[int] = deque()
        self._queued: set[int] = set()
        self._dirty: set[int] = set()
        self._joined: dict[int, list[str]] = {}
        self._due: dict[int, float] = {}  # earliest next update of each stale card
        self._clients: dict[tuple[str, str | None], Any] = {}  # the worker thread's only
        self._busy = False
        self._last_job = 0.0
        self._stop = False
        self._thread: threading.Thread | None = None

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
                        self._new.append(incident_id)
                        news = True
                else:
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
        if self._thread is None and not self._stop:
            self._thread = threading.Thread(target=self._run, name="guardduty-cards", daemon=True)
            self._thread.start()

    def wait_idle(self, timeout: float = 10.0, *, include_updates: bool = True) -> bool:
        """Block until nothing is queued (and, by default, no stale card waits)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._new or self._busy or (include_updates and self._dirty):
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
        if self._thread is not None:
            self._thread.join(timeout)
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

    def _run(self) -> None:
        while True:
            with self._cond:
                job = self._next_job()
                while job is None and not self._stop:
                    self._cond.wait(self._wait_time())
                    job = self._next_job()
                if job is None:
                    return
                self._busy = True
            kind, incident_id = job
            self._yield_to_intake()
            try:
                if kind == "post":
                    self._post(incident_id)
                else:
                    self._update(incident_id)
            except Exception:  # reported here: nothing else would see it
                self.stats.failures += 1
                log.exception("GuardDuty card %s for incident %s failed", kind, incident_id)
            finally:
                with self._cond:
                    self._busy = False
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
        self._last_job = time.monotonic()

    def _next_job(self) -> tuple[str, int] | None:
        if self._new:
            return "post", self._new.popleft()
        now = self.clock()
        for incident_id in sorted(self._dirty):
            if incident_id in self._queued:
                continue  # its post will render the latest state
            if now >= self._due.get(incident_id, -1e18):
                self._dirty.discard(incident_id)
                return "update", incident_id
        return None

    def _wait_time(self) -> float:
        """Seconds until the next stale card may be updated (at most 1 s, to notice stop)."""
        due = [self._due.get(i, -1e18) for i in self._dirty if i not in self._queued]
        if not due:
            return 1.0
        return max(0.01, min(1.0, min(due) - self.clock()))

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
        with self._cond:
            self._wrote(incident_id)
            self._joined.pop(incident_id, None)  # the card shows them
        # Once per incident: the card is posted once, and the notice is claimed once.
        notify_opened(self.runtime, key)
        self._propose(incident_id, key, finding)

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
            listed = ", ".join(f"`{bk.esc_cut(t, 150)}`" for t in types[:10])
            slack.call(
                "chat_postMessage",
                patient=True,
                stats=self.stats,
                channel=channel,
                thread_ts=ts,
                **bk.message(f"New GuardDuty finding(s) joined {key}: {listed}"),
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

    def _propose(self, incident_id: int, key: str, finding: NormalizedFinding | None) -> None:
        """Ask for containment of a high/critical, real finding's resource: its instance,
        access key (the role, for assumed-role credentials), bucket, function or database."""
        threshold = self.runtime.config.approvals.auto_request_min_severity
        if (
            finding is None
            or threshold is None
            or not self.runtime.options.guardduty_propose
            or finding.sample
            or finding.severity < threshold
            or not finding.resource_id
        ):
            return
        kind = finding_target_kind(finding.resource_kind, finding.user_type)
        if kind is None and finding.user_type == "Root":
            self._root_checklist(incident_id, key, finding)
            return
        resource_id = finding.user_name if kind == "role" else finding.resource_id
        if kind is None or not resource_id:
            return
        try:
            from bot.approvals import propose

            propose(
                self.runtime,
                resource_id=resource_id,
                kind=kind,
                incident_key=key,
                requested_by=ACTOR,
                reason=f"GuardDuty {finding.type} ({finding.severity:g})",
                region=finding.region,
                account_id=finding.account_id,
                finding_id=finding.id,
            )
        except UserError as exc:
            # The finding names something containment cannot act on (its id fails
            # validation): nothing broke, so one line here and the reason on the card.
            log.warning("%s: containment not proposed automatically: %s", key, exc.message)
            self._not_automatic(incident_id, "containment", exc.message)
        except Exception:
            log.exception("proposing containment for %s failed", key)

    def _root_checklist(self, incident_id: int, key: str, finding: NormalizedFinding) -> None:
        """Root credentials: the plan is a checklist to verify, on the timeline and in the
        incident's thread (once per incident)."""
        items = root_checklist(account_id=finding.account_id, since=finding.first_seen)
        with write_session(self.runtime) as session:
            incident = session.get(Incident, incident_id)
            if incident is None or (incident.facts or {}).get("checklist"):
                return
            record_checklist(
                session=session,
                incident=incident,
                items=items,
                reason=f"GuardDuty {finding.type} ({finding.severity:g}) on root credentials",
            )
            channel, thread = incident.channel_id, incident.thread_ts
        if channel:
            try:
                self.runtime.slack.reply(channel, thread, root_checklist_message(key, items))
            except Exception:
                log.exception("posting the root checklist for %s failed", key)
        self.mark_stale(incident_id)

    def _not_automatic(self, incident_id: int, what: str, reason: str) -> None:
        """Record on the incident (card and timeline) what the bot could not do by itself."""
        with write_session(self.runtime) as session:
            incident = session.get(Incident, incident_id)
            if incident is None:
                return
            NOT_AUTOMATIC.update(incident, **{what: reason})
            append_event(
                session=session,
                incident=incident,
                actor="system",
                kind=f"{what}.not_automatic",
                summary=f"{what.capitalize()} was not proposed automatically: {reason}",
                details={"reason": reason},
            )
        self.mark_stale(incident_id)


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
