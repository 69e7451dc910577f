"""What a containment run writes as it goes: each step's start and result (one recorder
thread, batched and in order, off the executor's critical path) and the request's heartbeat."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import select, update

from commands.errors import NotFound
from containment.registry import StepResult
from storage.db import Database
from storage.models import ActionStep, ContainmentRequest, Incident
from storage.timeline import append_event

log = logging.getLogger(__name__)

Progress = Callable[[int], None]  # called with the request id after each recorded change


def error_text(error: Any) -> str | None:
    if not error:
        return None
    if isinstance(error, Mapping):
        code = error.get("code") or "Error"
        op = f" in {error['operation']}" if error.get("operation") else ""
        return f"{code}{op}: {error.get('message') or ''}".strip()
    return str(error)


def step_state(result: StepResult | None) -> str:
    """The ActionStep status for an executor result."""
    return str(result.status or "failed") if result is not None else "failed"


class StepWriter:
    """Persists step starts/results as they happen; thread-safe.

    The executor calls it from the step's path (before a step's AWS calls, and before the
    steps waiting on it are started), so it only notes the event and its time and returns:
    one recorder thread writes what accumulated, in the order it happened, in one
    transaction, then calls `progress`. The containment's critical path then never waits
    for a commit; `close()` waits until everything noted is written (before the outcome is
    settled, which must see every step's record).
    """

    def __init__(
        self,
        *,
        database: Database,
        request_id: int,
        dry_run: bool,
        positions: dict[str, int],
        progress: Progress | None,
        now: Callable[[], dt.datetime],
    ) -> None:
        self.database = database
        self.request_id = request_id
        self.dry_run = dry_run
        self.positions = positions
        self.progress = progress
        self.now = now
        self.lock = threading.Condition()
        self._incident_id: int | None = None  # read once, by the recorder thread
        self.finished: dict[str, StepResult] = {}
        self._queue: deque[Callable[[Any], None]] = deque()
        self._writing = False
        self._closed = False
        self._thread = threading.Thread(
            target=self._record, name=f"steps-{request_id}", daemon=True
        )
        self._thread.start()

    def __call__(self, action: str, phase: str, result: StepResult | None) -> None:
        at = self.now()
        with self.lock:
            if phase == "started":
                self._note(lambda session: self._started(session, action, at))
            else:
                if result is not None:
                    self.finished[action] = result
                self._note(lambda session: self._finished(session, action, result, at))

    def aws_retry(self, info: dict[str, Any]) -> None:
        """An AWS call sent again after a failed attempt (botocore's retry or the create
        guard's): recorded as it happens, so a fault that was retried away still shows."""
        call = f"{info.get('service')}.{info.get('operation')}"
        guard = f"; {info['guard']}" if info.get("guard") else ""

        def write(session: Any) -> None:
            append_event(
                session=session,
                incident=self._incident(session),
                actor="system",
                kind="containment.aws_retry",
                summary=(
                    f"{self._tag()}AWS call {call} retried (attempt {info.get('attempt')}) "
                    f"after {info.get('after')}{guard} (request #{self.request_id})"
                ),
                details={"request_id": self.request_id, **info},
            )

        with self.lock:
            self._note(write)

    def _note(self, write: Callable[[Any], None]) -> None:  # with self.lock held
        self._queue.append(write)
        self.lock.notify_all()

    def close(self) -> None:
        """Wait until every noted event is written, then stop the recorder."""
        with self.lock:
            self._closed = True
            self.lock.notify_all()
        self._thread.join()

    def _record(self) -> None:
        while True:
            with self.lock:
                while not self._queue and not self._closed:
                    self.lock.wait()
                if not self._queue:
                    return
                batch = list(self._queue)
                self._queue.clear()
            self._write(batch)
            if self.progress is not None:
                try:
                    self.progress(self.request_id)
                except Exception:
                    log.exception("progress callback failed for request #%s", self.request_id)

    def _write(self, batch: list[Callable[[Any], None]]) -> None:
        """One transaction for the batch; if it fails, each on its own, so one bad record
        cannot take the others with it. A recording failure never stops the containment."""
        try:
            with self.database.session() as session:
                for write in batch:
                    write(session)
            return
        except Exception:
            if len(batch) == 1:
                log.exception("could not record a step of request #%s", self.request_id)
                return
        for write in batch:
            try:
                with self.database.session() as session:
                    write(session)
            except Exception:
                log.exception("could not record a step of request #%s", self.request_id)

    def _incident(self, session: Any) -> Incident:
        """The request's incident. Not through the request itself: loading it loads every
        step's result JSON (the capture's evidence among them), which for each record made
        the recorder the busiest thread of a containment, slowing the steps it shares the
        interpreter with."""
        if self._incident_id is None:
            self._incident_id = session.scalar(
                select(ContainmentRequest.incident_id).where(
                    ContainmentRequest.id == self.request_id
                )
            )
            if self._incident_id is None:
                raise NotFound(f"No containment request #{self.request_id}.")
        incident = session.get(Incident, self._incident_id)
        assert incident is not None  # foreign key
        return incident

    def _beat(self, session: Any, at: dt.datetime) -> None:
        session.execute(
            update(ContainmentRequest)
            .where(ContainmentRequest.id == self.request_id)
            .values(heartbeat_at=at)
            .execution_options(synchronize_session=False)
        )

    def _step(self, session: Any, action: str) -> ActionStep:
        step = session.scalars(
            select(ActionStep).where(
                ActionStep.request_id == self.request_id, ActionStep.action == action
            )
        ).first()
        if step is None:  # an action the plan did not list (the executor added it)
            step = ActionStep(
                request_id=self.request_id,
                position=self.positions.setdefault(action, len(self.positions)),
                action=action,
                status="pending",
                result={},
            )
            session.add(step)
        return step

    def _started(self, session: Any, action: str, at: dt.datetime) -> None:
        step = self._step(session, action)
        step.status = "running"
        step.started_at = at
        self._beat(session, at)
        append_event(
            session=session,
            incident=self._incident(session),
            actor="system",
            kind="containment.step.started",
            summary=f"{self._tag()}Step {action} started (request #{self.request_id})",
            details={"request_id": self.request_id, "action": action},
        )

    def _finished(
        self, session: Any, action: str, typed: StepResult | None, at: dt.datetime
    ) -> None:
        state = step_state(typed)
        result = typed.to_dict() if typed is not None else {}  # as stored on the step
        error = error_text(typed.error if typed is not None else None)
        if typed is not None and typed.blocked_by and not error:
            error = "not run: depends on failed step(s) " + ", ".join(typed.blocked_by)
        incident = self._incident(session)
        step = self._step(session, action)
        step.status = state
        step.finished_at = at
        step.started_at = step.started_at or step.finished_at
        step.result = result
        step.error = error
        self._beat(session, at)
        note = f": {result['note']}" if result.get("note") else ""
        summary = {
            "succeeded": f"Step {action} succeeded{note}",
            "skipped": f"Step {action} skipped{note or (': ' + error if error else '')}",
            "failed": f"Step {action} failed: {error}",
        }.get(state, f"Step {action} {state}")
        append_event(
            session=session,
            incident=incident,
            actor="system",
            kind=f"containment.step.{state}",
            summary=f"{self._tag()}{summary} (request #{self.request_id})",
            details={"request_id": self.request_id, **result},
        )
        errors = []
        if isinstance(result.get("error"), Mapping):
            errors.append(("step", result["error"]))
        optional = (result.get("evidence") or {}).get("optional_errors") or {}
        errors.extend((what, err) for what, err in optional.items() if err)
        for what, err in errors:
            append_event(
                session=session,
                incident=incident,
                actor="system",
                kind="containment.aws_error",
                summary=(
                    f"AWS error in step {action}"
                    + (f" ({what})" if what != "step" else "")
                    + f": {error_text(err)}"
                ),
                details={"request_id": self.request_id, "action": action, "error": err},
            )

    def _tag(self) -> str:
        return "[DRY RUN] " if self.dry_run else ""


class Heartbeat:
    def __init__(self, database: Database, request_id: int, every: float, now: Any) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._beat,
            args=(database, request_id, every, now),
            name=f"heartbeat-{request_id}",
            daemon=True,
        )

    def _beat(self, database: Database, request_id: int, every: float, now: Any) -> None:
        while not self._stop.wait(every):
            try:
                with database.session() as session:
                    session.execute(
                        update(ContainmentRequest)
                        .where(
                            ContainmentRequest.id == request_id,
                            ContainmentRequest.status == "running",
                        )
                        .values(heartbeat_at=now())
                        .execution_options(synchronize_session=False)
                    )
            except Exception:
                log.exception("heartbeat of request #%s failed", request_id)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
