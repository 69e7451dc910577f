"""Requests a dead or stopping process left behind: never lose one silently.

`recover` (at start and periodically) hands approved but never-started requests back to be
run (`execution.execute` claims each atomically) and marks running ones whose heartbeat went
stale interrupted, naming their unfinished steps, so a responder can retry or roll back; one
that died after recording every step is settled from its records (nothing is left to retry).
`interrupt` says the same at once when a shutdown gives up on a running request.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, or_, select, true, update

from commands.approvals.execution import Outcome, settle_recorded
from commands.approvals.requests import get_request, incident_of
from storage.db import Database
from storage.models import ContainmentRequest
from storage.timeline import append_event

STALE_AFTER = dt.timedelta(seconds=60)  # six missed heartbeats (execution.HEARTBEAT_EVERY)


@dataclass
class Recovery:
    resume: list[int] = field(default_factory=list)  # approved, never started: run them
    interrupted: list[int] = field(default_factory=list)  # were running in a dead process
    # Were running in a dead process that had recorded every step: settled from the records.
    settled: list[Outcome] = field(default_factory=list)


def recover(
    *,
    database: Database,
    now: Callable[[], dt.datetime] | None = None,
    stale_after: dt.timedelta = STALE_AFTER,
    approved_grace: dt.timedelta = dt.timedelta(0),
) -> Recovery:
    """Find requests a dead process left behind; never lose one silently.

    Approved ones never started (the decision is made, no AWS call was) are returned to be
    run (`execute` claims each atomically). Running ones whose heartbeat went stale are
    marked interrupted, with their unfinished steps, so a responder can retry or roll back.
    """
    now = now or database.clock.now
    out = Recovery()
    at = now()
    with database.session() as session:
        out.resume = list(
            session.scalars(
                select(ContainmentRequest.id)
                .where(
                    ContainmentRequest.status == "approved",
                    or_(
                        ContainmentRequest.decided_at.is_(None),
                        ContainmentRequest.decided_at <= at - approved_grace,
                    ),
                )
                .order_by(ContainmentRequest.id)
            )
        )
        stale = or_(
            ContainmentRequest.heartbeat_at <= at - stale_after,
            and_(
                ContainmentRequest.heartbeat_at.is_(None),
                ContainmentRequest.started_at <= at - stale_after,
            ),
        )
        candidates = session.scalars(
            select(ContainmentRequest.id).where(ContainmentRequest.status == "running", stale)
        ).all()
        finished = []
        for request_id in candidates:
            if _all_recorded(session, request_id):
                finished.append(request_id)
            elif _mark_interrupted(session, request_id, at, stale, "interrupted by a restart"):
                out.interrupted.append(request_id)
    for request_id in finished:
        outcome = settle_recorded(
            database=database, request_id=request_id, stale_before=at - stale_after, now=now
        )
        if outcome is not None:
            out.settled.append(outcome)
    return out


def _all_recorded(session: Any, request_id: int) -> bool:
    """Every step of the request has its final result (none pending or running)."""
    steps = get_request(session=session, request_id=request_id).steps
    return bool(steps) and all(s.status not in ("pending", "running") for s in steps)


def _mark_interrupted(session: Any, request_id: int, at: dt.datetime, where: Any, why: str) -> bool:
    changed = session.execute(
        update(ContainmentRequest)
        .where(ContainmentRequest.id == request_id, ContainmentRequest.status == "running")
        .where(where)
        .values(status="interrupted", finished_at=at, heartbeat_at=None)
        .execution_options(synchronize_session=False)
    ).rowcount
    if changed != 1:
        return False
    request = get_request(session=session, request_id=request_id)
    unfinished = []
    for step in request.steps:
        if step.status in ("pending", "running"):
            unfinished.append(step.action)
            step.status = "interrupted"
            step.finished_at = at
            step.error = "the bot stopped before this step finished"
    append_event(
        session=session,
        incident=incident_of(session=session, request=request),
        actor="system",
        kind="containment.interrupted",
        summary=(
            f"Request #{request_id} ({request.kind} of {request.target_id}) was {why}; "
            "retry or roll back from its card"
            + (f" (unfinished: {', '.join(unfinished)})" if unfinished else "")
        ),
        details={"request_id": request_id, "unfinished": unfinished},
    )
    return True


def interrupt(
    *, database: Database, request_id: int, now: Callable[[], dt.datetime] | None = None
) -> bool:
    """Shutdown gave up on a running request: say so now rather than after a heartbeat."""
    now = now or database.clock.now
    with database.session() as session:
        return _mark_interrupted(session, request_id, now(), true(), "cut short by a shutdown")
