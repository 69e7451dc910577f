"""GuardDuty polling on a timer: GetFindings per configured region every poll interval.

An APScheduler interval job (misfire_grace_time=None: a late run still runs). With several
processes (gunicorn workers, replicas) only one polls per interval: each run first claims a
lease row in the database (`cursors`), atomically under the write lock.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

from apscheduler.schedulers.background import BackgroundScheduler

from bot.guardduty.publisher import publisher_for
from bot.guardduty.writes import write_session
from commands.findings.poll import PollResult, poll_all
from containment.clients import aws_client
from storage.models import Cursor

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger(__name__)

JOB_ID = "incident-bot.guardduty.poll"
LEASE = "guardduty.poll.lease"


class GuardDutyPoller:
    def __init__(self, runtime: Runtime, *, worker_id: str = "") -> None:
        self.runtime = runtime
        self.interval = runtime.config.guardduty.poll_interval_seconds
        self.worker_id = worker_id or hex(id(self))
        self._scheduler: BackgroundScheduler | None = None

    def _client_for(self, region: str) -> Any:
        factory = self.runtime.options.guardduty_clients
        if factory is not None:
            return factory("guardduty", region)
        return aws_client("guardduty", region)

    def start(self) -> bool:
        if self.interval <= 0 or not self.runtime.config.guardduty.regions:
            return False
        self._scheduler = BackgroundScheduler(
            timezone=dt.UTC,
            daemon=True,
            job_defaults={"misfire_grace_time": None, "coalesce": True, "max_instances": 1},
        )
        self._scheduler.add_job(
            self.run_once,
            "interval",
            seconds=self.interval,
            id=JOB_ID,
            next_run_time=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=self.interval),
        )
        self._scheduler.start()
        log.info(
            "GuardDuty polling every %ss in %s",
            self.interval,
            self.runtime.config.guardduty.regions,
        )
        return True

    def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None

    def claim(self) -> bool:
        """True when this process may poll now (no other did within the interval)."""
        now = self.runtime.now().timestamp()
        with write_session(self.runtime) as session:
            lease = session.get(Cursor, LEASE, with_for_update=True)
            if lease is None:
                session.add(Cursor(name=LEASE, value=f"{now}"))
                return True
            if float(lease.value.split()[0]) > now - self.interval * 0.8:
                return False
            lease.value = f"{now} {self.worker_id}"
            return True

    def run_once(self) -> list[PollResult]:
        try:
            if not self.claim():
                return []
        except Exception:  # a concurrent first claim lost on the primary key
            log.info("GuardDuty poll lease taken by another process")
            return []
        config = self.runtime.config
        results = poll_all(
            database=self.runtime.database,
            client_for=self._client_for,
            regions=config.guardduty.regions,
            min_severity=config.guardduty.min_severity,
            channel_id=config.slack.incident_channel,
            on_recorded=publisher_for(self.runtime).submit,
        )
        for result in results:
            if result.errors:
                log.warning("GuardDuty poll in %s: %s", result.region, "; ".join(result.errors))
        return results
