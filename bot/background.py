"""Work that runs after the ack, and reports its own failures.

Bolt's lazy listeners log and swallow exceptions (Dispatch moved off them for that reason,
Netflix/dispatch PR 2848). Here every job carries an `on_error` callback that tells the user
and writes the incident's timeline, and an `on_interrupt` callback for shutdown: on SIGTERM
the pool stops taking work, lets in-flight jobs finish within a grace period, and calls
`on_interrupt` for every job that was queued but never started or that is still running when
the grace period ends, so the timeline says what did not happen.

The pool is bounded: when `max_pending` jobs are waiting, `submit` raises `Busy` at once, so a
listener can answer "busy, try again" instead of queueing work nobody will see for minutes.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

ErrorHook = Callable[[BaseException], None]
InterruptHook = Callable[[], None]


class Busy(Exception):
    """The background pool is full or shutting down."""


@dataclass
class Job:
    id: int
    description: str
    fn: Callable[[], Any]
    on_error: ErrorHook | None = None
    on_interrupt: InterruptHook | None = None
    state: str = "queued"  # queued | running | done | failed | interrupted
    submitted_at: float = field(default_factory=time.monotonic)
    started_at: float | None = None
    error: BaseException | None = None


class Background:
    """A bounded thread pool whose jobs report their own errors and interruptions."""

    def __init__(self, *, max_workers: int = 8, max_pending: int = 500, name: str = "bg") -> None:
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=name)
        self._max_pending = max_pending
        self._lock = threading.Lock()
        self._jobs: dict[int, Job] = {}
        self._ids = itertools.count(1)
        self._closing = False
        self._idle = threading.Condition(self._lock)

    # -- submitting -------------------------------------------------------------------------

    def submit(
        self,
        fn: Callable[..., Any],
        *args: Any,
        description: str,
        on_error: ErrorHook | None = None,
        on_interrupt: InterruptHook | None = None,
        **kwargs: Any,
    ) -> Future[Any]:
        with self._lock:
            if self._closing:
                raise Busy("shutting down")
            queued = sum(1 for j in self._jobs.values() if j.state == "queued")
            if queued >= self._max_pending:
                raise Busy(f"{queued} jobs waiting")
            job = Job(
                id=next(self._ids),
                description=description,
                fn=lambda: fn(*args, **kwargs),
                on_error=on_error,
                on_interrupt=on_interrupt,
            )
            self._jobs[job.id] = job
            return self._pool.submit(self._run, job)

    def _run(self, job: Job) -> Any:
        with self._lock:
            if job.state != "queued":  # interrupted by shutdown before it started
                return None
            job.state = "running"
            job.started_at = time.monotonic()
        try:
            result = job.fn()
        except BaseException as exc:  # reported, never swallowed
            job.error = exc
            log.exception("background job failed: %s", job.description)
            _call_hook(job.on_error, job, exc)  # before _finish: idle means reported
            self._finish(job, "failed")
            return None
        self._finish(job, "done")
        return result

    def _finish(self, job: Job, state: str) -> None:
        with self._lock:
            if job.state == "interrupted":  # shutdown gave up on it; keep that record
                self._jobs.pop(job.id, None)
                self._idle.notify_all()
                return
            job.state = state
            self._jobs.pop(job.id, None)
            self._idle.notify_all()

    # -- observing --------------------------------------------------------------------------

    @property
    def closing(self) -> bool:
        """True once shutdown began: long-running producers should stop submitting."""
        return self._closing

    def pending(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Block until no job is queued or running (tests and shutdown use this)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._jobs:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
            return True

    # -- stopping ---------------------------------------------------------------------------

    def shutdown(self, *, grace: float = 20.0) -> list[Job]:
        """Stop taking work; finish in-flight jobs within `grace` seconds.

        Returns the jobs recorded as interrupted: those queued but never started (at once)
        and those still running when the grace period ended.
        """
        interrupted: list[Job] = []
        with self._lock:
            self._closing = True
            for job in self._jobs.values():
                if job.state == "queued":
                    job.state = "interrupted"
                    interrupted.append(job)
            for job in interrupted:
                self._jobs.pop(job.id, None)
        for job in interrupted:
            log.warning("background job interrupted before it started: %s", job.description)
            _call_hook(job.on_interrupt, job)
        self.wait_idle(grace)
        with self._lock:
            stuck = [j for j in self._jobs.values() if j.state == "running"]
            for job in stuck:
                job.state = "interrupted"
        for job in stuck:
            log.warning("background job still running at shutdown: %s", job.description)
            _call_hook(job.on_interrupt, job)
        self._pool.shutdown(wait=False, cancel_futures=True)
        return interrupted + stuck


def _call_hook(hook: Callable[..., None] | None, job: Job, *args: Any) -> None:
    if hook is None:
        return
    try:
        hook(*args)
    except Exception:  # a failing reporter must not hide the original problem
        log.exception("error hook failed for background job: %s", job.description)
