"""Record normalised findings and hand the results to the card publisher.

Shared by the HTTP route, trusted-bot channel messages and polling. A delivery's findings
are stored before `intake` returns, so the sender's 200 means they are durable; Slack work
happens afterwards on the publisher's thread.

Group commit: concurrent deliveries in one process are written together. Each caller queues
its findings and waits; one writer thread takes everything queued and records it in a single
transaction (a storm of 20 concurrent senders costs one transaction, one timeline append
and one card-facts refresh per incident per batch, not per delivery). If a batch fails, each
delivery in it is retried alone, so one delivery's failure is only ever its own.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError, OperationalError

from bot.guardduty.publisher import publisher_for
from bot.guardduty.writes import write_session
from commands.findings.ingest import Ingested, record_findings
from commands.findings.normalize import NormalizedFinding

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger(__name__)

ATTEMPTS = 3  # a concurrent first insert (PostgreSQL) or a lock timeout (SQLite) is retried
MAX_BATCH = 1000  # findings per transaction
WAIT_SECONDS = 60.0  # how long a delivery waits for its batch before giving up
HOT_WINDOW = 0.05  # a batch finished this recently: deliveries are streaming in
GATHER_SECONDS = 0.004  # then wait this long for more before writing (measured: 2-12 ms)


def intake(runtime: Runtime, findings: Sequence[NormalizedFinding]) -> list[Ingested]:
    """Record the findings (durably, before returning) and queue their Slack work."""
    if not findings:
        return []
    results = writer_for(runtime).record(list(findings))
    publisher_for(runtime).submit(results)
    return results


def writer_for(runtime: Runtime) -> BatchWriter:
    services = runtime.services
    with services.create_lock:
        if services.intake_writer is None:
            services.intake_writer = BatchWriter(runtime)
            runtime.on_shutdown(services.intake_writer.stop)
        return services.intake_writer


class BatchWriter:
    """One writer thread per process; see the module docstring."""

    def __init__(self, runtime: Runtime, *, max_batch: int = MAX_BATCH) -> None:
        self.runtime = runtime
        self.max_batch = max_batch
        self._cond = threading.Condition()
        self._queue: list[tuple[list[NormalizedFinding], Future[list[Ingested]]]] = []
        self._thread: threading.Thread | None = None
        self._stopped = False
        self.batches = 0
        self.last_write = 0.0  # monotonic time the last batch finished
        self.findings = 0
        self.write_seconds = 0.0

    def record(self, findings: list[NormalizedFinding]) -> list[Ingested]:
        future: Future[list[Ingested]] = Future()
        with self._cond:
            if self._stopped:
                return self._write(findings)  # shutting down: write inline
            self._queue.append((findings, future))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="guardduty-writer", daemon=True
                )
                self._thread.start()
            self._cond.notify()
        return future.result(timeout=WAIT_SECONDS)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(10)
        if self.batches:
            log.info(
                "guardduty writer: %d findings in %d batches, %.2f s writing",
                self.findings,
                self.batches,
                self.write_seconds,
            )

    def _take(self) -> list[tuple[list[NormalizedFinding], Future[list[Ingested]]]]:
        with self._cond:
            while not self._queue and not self._stopped:
                self._cond.wait()
            if time.monotonic() - self.last_write < HOT_WINDOW:
                # Under load, gather a few more deliveries first: a transaction's fixed cost
                # dominates, so fuller batches raise throughput (a lone delivery never waits).
                deadline = time.monotonic() + GATHER_SECONDS
                while not self._stopped and self._queued() < self.max_batch:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
            taken, size = [], 0
            while self._queue and (not taken or size + len(self._queue[0][0]) <= self.max_batch):
                item = self._queue.pop(0)
                taken.append(item)
                size += len(item[0])
            return taken

    def _queued(self) -> int:
        return sum(len(findings) for findings, _ in self._queue)

    def _run(self) -> None:
        while True:
            batch = self._take()
            if not batch:
                return  # stopped and drained
            self.batches += 1
            flat = [f for findings, _ in batch for f in findings]
            self.findings += len(flat)
            started = time.perf_counter()
            try:
                results = self._write(flat)
            except Exception:
                # Retry each delivery alone: a failure belongs to its own delivery only.
                for findings, future in batch:
                    try:
                        future.set_result(self._write(findings))
                    except Exception as exc:
                        future.set_exception(exc)
                continue
            finally:
                self.write_seconds += time.perf_counter() - started
                self.last_write = time.monotonic()
            at = 0
            for findings, future in batch:
                future.set_result(results[at : at + len(findings)])
                at += len(findings)

    def _write(self, findings: list[NormalizedFinding]) -> list[Ingested]:
        config = self.runtime.config
        for attempt in range(1, ATTEMPTS + 1):
            try:
                with write_session(self.runtime) as session:
                    return record_findings(
                        session=session,
                        findings=findings,
                        min_severity=config.guardduty.min_severity,
                        channel_id=config.slack.incident_channel,
                        now=self.runtime.now(),
                        defer_repeats=True,  # the publisher syncs before each card write
                    )
            except (IntegrityError, OperationalError) as exc:
                if attempt == ATTEMPTS:
                    raise
                log.warning("recording findings failed (%s); retrying", type(exc).__name__)
                time.sleep(0.05 * attempt)
        raise AssertionError("unreachable")
