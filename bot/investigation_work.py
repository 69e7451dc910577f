"""Investigation work beside the listeners: card refreshes paced for engine progress, the
clean-room and wipe engines approval requests run on, the new-incident impact sweeper and
the abuse-report watcher (`start(runtime)`, serving processes only; each is off when its
`options` seconds are 0 or None).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from typing import TYPE_CHECKING

from sqlalchemy import select

from bot.guardduty.publisher import ACTOR as GUARDDUTY_ACTOR
from bot.guardduty.publisher import publisher_for
from bot.guardduty.writes import intake_is_hot
from bot.listeners.incident_posts import refresh_incident
from bot.listeners.investigation import aws_context, default_region
from bot.periodic import Periodic
from bot.slack_out import card_id
from bot.views.investigation import abuse_case_answered_line
from commands import abuse as abuse_svc
from commands import forensics as forensics_svc
from commands import impact as impact_svc
from commands import wipe as wipe_svc
from containment.targets import Target
from storage.facts import IMPACT
from storage.models import Incident

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger(__name__)

CARD_INTERVAL = 1.0  # seconds between card refreshes driven by engine progress
RECENT = dt.timedelta(days=2)  # the sweeper looks at incidents opened this recently


class CardRefresher:
    """Re-render an incident's card after engine progress, at most once a second per card
    (the writer's shared pace); a refresh that must wait is done once, when its turn comes,
    carrying the latest state."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._pending: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, key: str) -> None:
        with self._lock:
            if key in self._pending:
                return  # the trailing refresh already scheduled will show this too
        try:
            turn = self.runtime.slack.claim_turn(card_id("incident", key), CARD_INTERVAL)
        except Exception:
            log.exception("could not pace the card of %s", key)
            return
        if turn.wait <= 0:
            self._refresh(key)
            return
        with self._lock:
            if key in self._pending:
                return
            self._pending.add(key)
        timer = threading.Timer(turn.wait, self._flush, args=(key,))
        timer.daemon = True
        timer.start()

    def _flush(self, key: str) -> None:
        with self._lock:
            self._pending.discard(key)
        try:
            self.runtime.slack.stamp(card_id("incident", key))
        except Exception:
            log.exception("could not pace the card of %s", key)
        self._refresh(key)

    def _refresh(self, key: str) -> None:
        try:
            refresh_incident(self.runtime, key)
        except Exception:
            log.exception("could not refresh the card of %s", key)


class ImpactSweeper(Periodic):
    """Estimates the blast radius of recent incidents that name a resource and have none."""

    name = "impact-sweeper"

    def __init__(self, runtime: Runtime, every: float) -> None:
        super().__init__(every)
        self.runtime = runtime
        self._done: set[int] = set()  # tried in this process (AWS trouble becomes notes)

    def tick(self) -> list[str]:
        return self.sweep()

    def due(self) -> list[tuple[str, int, bool]]:
        """(key, id, whether its card is the GuardDuty publisher's) of incidents to estimate."""
        since = self.runtime.now() - RECENT
        with self.runtime.database.read_session() as session:
            rows = session.scalars(
                select(Incident).where(
                    Incident.status.in_(("open", "contained")),
                    Incident.resource_id.is_not(None),
                    Incident.created_at >= since,
                )
            ).all()
            keys = []
            for i in rows:
                if i.id in self._done or IMPACT.present(i):
                    continue
                self._done.add(i.id)
                keys.append((i.key, i.id, i.created_by == GUARDDUTY_ACTOR))
            return keys

    def _wait_for_quiet_intake(self) -> bool:
        """In a finding storm, estimates wait: intake's CPU and database lock come first.
        False when the sweeper was stopped meanwhile."""
        while intake_is_hot(self.runtime, within=1.0):
            if self._stop.wait(0.25):
                return False
        return not self._stop.is_set()

    def sweep(self) -> list[str]:
        due = self.due()
        for key, incident_id, from_guardduty in due:
            if not self._wait_for_quiet_intake():
                break
            impact = impact_svc.impact_for_new_incident(
                db=self.runtime.database,
                incident_key=key,
                ctx=aws_context(self.runtime, key),
                tag_keys=self.runtime.config.impact.tag_keys,
                default_region=default_region(self.runtime),
            )
            if impact is None:
                continue
            if from_guardduty:
                # The publisher paces GuardDuty cards (one update per 10 s, across processes).
                publisher_for(self.runtime).mark_stale(incident_id)
                continue
            try:
                refresh_incident(self.runtime, key)
            except Exception:
                log.exception("could not refresh the card of %s", key)
        return [key for key, _, _ in due]


def add_engines(runtime: Runtime) -> None:
    """The clean-room and wipe engines their approval requests run on (bot.wiring calls it
    for every app: any process may run an approved request)."""
    refresher = CardRefresher(runtime)
    clean_room = forensics_svc.CleanRoomEngine(database=runtime.database, on_facts=refresher)
    engines = runtime.services.engines
    engines.setdefault(forensics_svc.ENGINE, clean_room)
    engines.setdefault(
        wipe_svc.ENGINE,
        wipe_svc.WipeEngine(database=runtime.database, clean_room=clean_room, on_facts=refresher),
    )


class AbuseWatcher(Periodic):
    """Marks abuse reports answered when their Support case shows the answer."""

    name = "abuse-watcher"

    def __init__(self, runtime: Runtime, every: float) -> None:
        super().__init__(every)
        self.runtime = runtime

    def tick(self) -> list[str]:
        return self.check()

    def client_for(self, account_id: str | None) -> object:
        ctx = aws_context(self.runtime, "abuse")
        target = Target("instance", "-", abuse_svc.SUPPORT_REGION, account_id)
        return ctx.client("support", target)

    def check(self) -> list[str]:
        keys = abuse_svc.check_answers(db=self.runtime.database, client_for=self.client_for)
        for key in keys:
            try:
                refresh_incident(self.runtime, key, line=abuse_case_answered_line())
            except Exception:
                log.exception("could not refresh the card of %s", key)
        return keys


def start(runtime: Runtime) -> None:
    """Serving processes only (bot.server.start_services): the new-incident impact sweeper
    and the abuse-report watcher (their `options` seconds at 0 or None turn either off)."""
    options, services = runtime.options, runtime.services
    with services.create_lock:
        if options.impact_sweep_seconds and services.impact_sweeper is None:
            sweeper = services.impact_sweeper = ImpactSweeper(
                runtime, float(options.impact_sweep_seconds)
            )
            sweeper.start()
            runtime.on_shutdown(sweeper.stop)
        if options.abuse_check_seconds and services.abuse_watcher is None:
            watcher = services.abuse_watcher = AbuseWatcher(
                runtime, float(options.abuse_check_seconds)
            )
            watcher.start()
            runtime.on_shutdown(watcher.stop)
