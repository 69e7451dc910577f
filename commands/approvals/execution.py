"""Run an approved request: claim it once, record every step, settle the outcome.

`execute` first moves the request approved -> running with one atomic UPDATE; only the
caller whose UPDATE changed the row runs anything, so a plan runs once even when a restart
recovery and the approving process both try. Step callbacks arrive from the executor's
worker threads: each one writes in its own short transaction, serialised by a lock so the
timeline keeps the order they happened in. A heartbeat thread keeps `heartbeat_at` fresh;
commands/approvals/recovery.py finds the requests a dead process left behind.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, or_, update

from commands.approvals.plans import Engine, Plan, PlanStep, target_from_dict
from commands.approvals.requests import (
    done_results,
    get_request,
    incident_of,
    mark_rolled_back,
)
from commands.approvals.step_records import Heartbeat, Progress, StepWriter, error_text
from commands.errors import UserError
from commands.incidents import set_status
from containment.context import ActionContext
from containment.registry import StepResult
from storage.db import Database
from storage.models import ActionStep, ContainmentRequest
from storage.timeline import append_event

log = logging.getLogger(__name__)

HEARTBEAT_EVERY = 10.0  # seconds
ContextFactory = Callable[[ContainmentRequest], ActionContext]


@dataclass
class Outcome:
    request_id: int
    status: str  # succeeded | partial | failed
    failed: list[dict[str, Any]] = field(default_factory=list)  # {"action", "error"}
    dry_run: bool = False
    incident_status: str | None = None
    # Evidence a step that succeeded could not collect: {"action", "evidence", "error"}.
    missing_evidence: list[dict[str, Any]] = field(default_factory=list)


# Recorded when the Nitro-only "latest" console read fails and the buffered one is taken
# instead: a note, not evidence lost (a failed fallback is recorded as "console_output").
_NOT_MISSING = {"console_latest"}


def missing_evidence(
    results: Mapping[str, StepResult | Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """Evidence that steps which otherwise succeeded could not collect (the console
    screenshot or output): the containment holds, but the record of the instance is short.
    Takes the executor's results or, for a card, the results stored on the steps."""
    out = []
    for action, result in results.items():
        if isinstance(result, StepResult):
            status, evidence = result.status, result.evidence
        else:
            status, evidence = result.get("status"), result.get("evidence") or {}
        if status != "succeeded":
            continue
        errors = evidence.get("optional_errors") or {}
        out.extend(
            {"action": action, "evidence": what, "error": error_text(err)}
            for what, err in errors.items()
            if err and what not in _NOT_MISSING
        )
    return out


def missing_text(missing: list[dict[str, Any]]) -> str:
    return "; ".join(f"{m['evidence']} ({m['action']}): {m['error']}" for m in missing)


def _failed(result: StepResult) -> bool:
    return result.status == "failed" or bool(result.status == "skipped" and result.blocked_by)


def claim(
    *, database: Database, request_id: int, now: Callable[[], dt.datetime] | None = None
) -> bool:
    """approved -> running, atomically. True for the one caller that may run the plan."""
    now = now or database.clock.now
    with database.session() as session:
        at = now()
        changed = session.execute(
            update(ContainmentRequest)
            .where(ContainmentRequest.id == request_id, ContainmentRequest.status == "approved")
            .values(status="running", started_at=at, heartbeat_at=at)
            .execution_options(synchronize_session=False)
        ).rowcount
        if changed != 1:
            return False
        request = get_request(session=session, request_id=request_id)
        planned = Plan.from_json(request.plan).actions
        for position, action in enumerate(planned):
            session.add(
                ActionStep(
                    request_id=request_id,
                    position=position,
                    action=action,
                    status="pending",
                    result={},
                )
            )
        append_event(
            session=session,
            incident=incident_of(session=session, request=request),
            actor="system",
            kind="containment.started",
            summary=(
                f"{'[DRY RUN] ' if request.dry_run else ''}Started {request.kind} of "
                f"{request.target_id} (request #{request_id}, approved by {request.decided_by})"
            ),
            details={
                "request_id": request_id,
                "steps": planned,
                "approved_by": request.decided_by,
                "dry_run": request.dry_run,
            },
        )
        return True


def execute(
    *,
    database: Database,
    request_id: int,
    engine: Engine,
    context_factory: ContextFactory,
    progress: Progress | None = None,
    heartbeat_every: float = HEARTBEAT_EVERY,
    now: Callable[[], dt.datetime] | None = None,
) -> Outcome | None:
    """Run an approved request once. None when it was not ours to run (already claimed)."""
    now = now or database.clock.now
    if not claim(database=database, request_id=request_id, now=now):
        return None
    with database.read_session() as session:
        request = get_request(session=session, request_id=request_id)
        target = target_from_dict(request.plan["target"])
        kind = request.kind
        dry_run = request.dry_run
        plan_steps = Plan.from_json(request.plan).steps
        previous: list[StepResult] = []
        resuming = request.parent_id is not None
        if request.parent_id is not None:
            parent = get_request(session=session, request_id=request.parent_id)
            previous = [
                StepResult.from_dict(r) for r in done_results(session=session, request=parent)
            ]
        ctx = context_factory(request)
    ctx.dry_run = dry_run
    ctx.resuming = resuming
    positions = {s.action: i for i, s in enumerate(plan_steps)}
    writer = StepWriter(
        database=database,
        request_id=request_id,
        dry_run=dry_run,
        positions=positions,
        progress=progress,
        now=now,
    )
    if ctx.on_aws_retry is None:
        ctx.on_aws_retry = writer.aws_retry
    if progress is not None:
        progress(request_id)
    crash: BaseException | None = None
    results: list[StepResult] = []
    try:
        with Heartbeat(database, request_id, heartbeat_every, now):
            try:
                if kind == "rollback":
                    results = engine.rollback(
                        target=target, ctx=ctx, previous=previous, on_step=writer
                    )
                else:
                    results = engine.run(
                        target=target,
                        ctx=ctx,
                        action_names=list(positions),
                        previous=previous,
                        on_step=writer,
                    )
            except Exception as exc:  # the engine itself failed: settle as failed, say why
                log.exception("containment request #%s crashed", request_id)
                crash = exc
        with writer.lock:
            seen = dict(writer.finished)
        # Results of this request's steps the executor returned without a callback. Others
        # are earlier attempts' results it echoes back (a retry's done dependencies): not ours.
        ours = {r.action: r for r in results if r.action in positions}
        for action, result in ours.items():
            if action not in seen:
                writer(action, "finished", result)
    finally:
        writer.close()  # every step's record is written before the outcome is settled
    outcome = _settle(
        database=database,
        request_id=request_id,
        results={**seen, **ours},
        plan_steps=plan_steps,
        crash=crash,
        now=now,
    )
    if progress is not None:
        progress(request_id)
    return outcome


def settle_recorded(
    *,
    database: Database,
    request_id: int,
    stale_before: dt.datetime,
    now: Callable[[], dt.datetime],
) -> Outcome | None:
    """Settle a request whose process died after every step's result was committed but
    before the outcome was (kill -9 between the last step and `_settle`): the work is done,
    only its bookkeeping was cut short, so it settles from the recorded results instead of
    being called interrupted with nothing left to retry. Taking it is atomic (its heartbeat
    refreshed only while still stale): None when another process took it first."""
    stale = or_(
        ContainmentRequest.heartbeat_at <= stale_before,
        and_(
            ContainmentRequest.heartbeat_at.is_(None),
            ContainmentRequest.started_at <= stale_before,
        ),
    )
    with database.session() as session:
        changed = session.execute(
            update(ContainmentRequest)
            .where(ContainmentRequest.id == request_id, ContainmentRequest.status == "running")
            .where(stale)
            .values(heartbeat_at=now())
            .execution_options(synchronize_session=False)
        ).rowcount
        if changed != 1:
            return None
        request = get_request(session=session, request_id=request_id)
        results = {s.action: StepResult.from_dict(s.result) for s in request.steps if s.result}
        plan_steps = Plan.from_json(request.plan).steps
    return _settle(
        database=database,
        request_id=request_id,
        results=results,
        plan_steps=plan_steps,
        crash=None,
        now=now,
    )


def _settle(
    *,
    database: Database,
    request_id: int,
    results: dict[str, StepResult],
    plan_steps: Sequence[PlanStep],
    crash: BaseException | None,
    now: Callable[[], dt.datetime],
) -> Outcome:
    mutating = {s.action: s.mutating for s in plan_steps}
    failed = [
        {"action": a, "error": error_text(r.error) or "depends on a failed step"}
        for a, r in results.items()
        if _failed(r)
    ]
    with database.session() as session:
        request = get_request(session=session, request_id=request_id)
        incident = incident_of(session=session, request=request)
        missing = []
        for step in request.steps:
            if step.status in ("pending", "running"):
                step.status = "failed" if crash else "interrupted"
                step.error = f"not finished: {crash}" if crash else "the executor never ran it"
                step.finished_at = now()
                missing.append(step.action)
        failed.extend(
            {"action": a, "error": f"not finished: {crash or 'never ran'}"}
            for a in missing
            if a not in {f["action"] for f in failed}
        )
        changed_something = any(
            r.status == "succeeded" and mutating.get(a, True) for a, r in results.items()
        )
        if not failed:
            status = "succeeded"
        elif changed_something:
            status = "partial"
        else:
            status = "failed"
        request.status = status
        request.finished_at = now()
        request.heartbeat_at = None
        tag = "[DRY RUN] " if request.dry_run else ""
        missing = missing_evidence(results)
        append_event(
            session=session,
            incident=incident,
            actor="system",
            kind="containment.finished",
            summary=(
                f"{tag}{request.kind.capitalize()} of {request.target_id} {status} "
                f"(request #{request_id})"
                + (": failed " + ", ".join(f["action"] for f in failed) if failed else "")
                + (f"; evidence missing: {missing_text(missing)}" if missing else "")
            ),
            details={
                "request_id": request_id,
                "status": status,
                "failed": failed,
                "missing_evidence": missing,
                "crash": repr(crash) if crash else None,
            },
        )
        outcome = Outcome(request_id, status, failed, request.dry_run, missing_evidence=missing)
        if status == "succeeded":
            _after_success(session=session, request=request, incident=incident, tag=tag)
        outcome.incident_status = incident.status
        return outcome


def _after_success(*, session: Any, request: ContainmentRequest, incident: Any, tag: str) -> None:
    if request.kind == "rollback":
        ids = mark_rolled_back(session=session, rollback=request)
        if request.dry_run:
            return
        if incident.status == "contained":
            set_status(
                session=session,
                incident=incident,
                actor="system",
                status="open",
                summary=f"containment of {request.target_id} rolled back",
                details={"request_id": request.id, "rolled_back": ids},
            )
        return
    if (
        request.kind not in ("contain", "retry")
        or Plan.from_json(request.plan).engine  # a retry of a clean room or a wipe
        or incident.status != "open"
    ):
        return
    if request.dry_run:
        append_event(
            session=session,
            incident=incident,
            actor="system",
            kind="containment.dry_run",
            summary=f"{tag}{incident.key} would now be contained ({request.target_id})",
            details={"request_id": request.id},
        )
        return
    try:
        set_status(
            session=session,
            incident=incident,
            actor="system",
            status="contained",
            summary=f"{request.target_type} {request.target_id} contained",
            details={"request_id": request.id},
        )
    except UserError:
        log.warning("%s could not become contained from %s", incident.key, incident.status)
