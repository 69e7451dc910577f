"""Containment requests: create, decide (exactly once), expire, and ask for retry/rollback.

Deciding is one atomic `UPDATE ... WHERE status = 'pending'`: of any number of concurrent
clicks, Slack retries or approvers, exactly one changes the row and gets `won=True`; every
other caller is told who decided first. This happens before any AWS call, so a plan can
never run twice.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from commands.approvals.plans import Plan, target_to_dict
from commands.deadlines.queue import schedule_reminder
from commands.errors import NotAllowed, NotFound, UserError
from containment.targets import Target
from storage.db import Database, clock_of
from storage.models import ActionStep, ContainmentRequest, Incident
from storage.timeline import append_event

GUARDDUTY = "guardduty"
LIVE = ("pending", "approved", "running")
FINISHED = ("succeeded", "partial", "failed", "interrupted")
RETRYABLE = ("partial", "failed", "interrupted")
ROLLBACKABLE = ("succeeded", "partial", "failed", "interrupted")
REASON_MAX = 1000
EXPIRY_KIND = "approval_expiry"  # the reminder that expires a request undecided in time


@dataclass(frozen=True)
class Created:
    request: ContainmentRequest
    created: bool  # False: an equivalent request was already live; this is it


@dataclass(frozen=True)
class Decision:
    request: ContainmentRequest
    won: bool  # this call made the decision (else request.status says who did what)


def _clean_reason(reason: str | None) -> str | None:
    if reason is None:
        return None
    reason = reason.strip()
    if not reason:
        return None
    return reason if len(reason) <= REASON_MAX else reason[: REASON_MAX - 1] + "…"


def get_request(*, session: Session, request_id: int) -> ContainmentRequest:
    request = session.get(ContainmentRequest, request_id, populate_existing=True)
    if request is None:
        raise NotFound(f"No containment request #{request_id}; it may have been removed.")
    return request


def incident_of(*, session: Session, request: ContainmentRequest) -> Incident:
    incident = session.get(Incident, request.incident_id)
    assert incident is not None  # foreign key
    return incident


def live_request_for(
    *, session: Session, target_id: str, kinds: Sequence[str] = ("contain", "retry")
) -> ContainmentRequest | None:
    return session.scalars(
        select(ContainmentRequest)
        .where(
            ContainmentRequest.target_id == target_id,
            ContainmentRequest.kind.in_(kinds),
            ContainmentRequest.status.in_(LIVE),
        )
        .order_by(ContainmentRequest.id.desc())
    ).first()


def request_containment(
    *,
    session: Session,
    incident: Incident,
    target: Target,
    plan: Plan | Mapping[str, Any],
    requested_by: str,
    reason: str | None = None,
    expire_after: dt.timedelta,
    dry_run: bool = False,
    kind: str = "contain",
    parent: ContainmentRequest | None = None,
    now: dt.datetime | None = None,
    allow_drill_changes: bool = False,
) -> Created:
    """Create a pending request with its plan, or return the live one for the same target.

    Compute `plan` first (plans.plan_for / Engine.plan) outside the write transaction: it
    reads AWS. GuardDuty's repeated findings and double-typed commands land on the same
    request instead of asking twice. A drill incident's requests are dry runs unless the
    caller allows drills to change the sandbox (`drills.allow_changes`).
    """
    if incident.is_drill and not allow_drill_changes:
        dry_run = True
    plan = plan if isinstance(plan, Plan) else Plan.from_json(plan)
    if session.get_bind().dialect.name != "sqlite":
        # Serialise requesters per incident (SQLite's BEGIN IMMEDIATE already does), so two
        # concurrent requests for one target cannot both miss each other below.
        session.execute(
            select(Incident.id).where(Incident.id == incident.id).with_for_update()
        ).one()
    if kind in ("contain", "retry"):
        existing = live_request_for(session=session, target_id=target.resource_id)
        if existing is not None:
            return Created(existing, created=False)
    if not plan.steps:
        raise UserError(
            "There is nothing to do for {resource_id}: the plan is empty.",
            resource_id=target.resource_id,
        )
    now = now or clock_of(session).now()
    request = ContainmentRequest(
        incident_id=incident.id,
        kind=kind,
        parent_id=parent.id if parent else None,
        target_type=target.kind,
        target_id=target.resource_id,
        account_id=target.account_id,
        region=target.region,
        reason=_clean_reason(reason),
        requested_by=requested_by,
        requested_at=now,
        expires_at=now + expire_after,
        status="pending",
        dry_run=dry_run,
        plan={**plan.to_json(), "target": target_to_dict(target)},
    )
    session.add(request)
    session.flush()
    _schedule_expiry(session=session, incident=incident, request=request)
    steps = plan.actions
    verb = {"contain": "containment", "retry": "retry", "rollback": "rollback"}.get(kind, kind)
    append_event(
        session=session,
        incident=incident,
        actor=requested_by,
        kind="containment.requested",
        summary=(
            f"{'[DRY RUN] ' if dry_run else ''}Requested {verb} of {target.kind} "
            f"{target.resource_id} (request #{request.id}, {len(steps)} steps, "
            f"{plan.count_calls(mutating=True)} changing calls)"
            + (f": {request.reason}" if request.reason else "")
        ),
        details={
            "request_id": request.id,
            "kind": kind,
            "parent_id": request.parent_id,
            "target": target_to_dict(target),
            "steps": steps,
            "calls": [c.text for s in plan.steps for c in s.calls],
            "blast_radius": plan.blast_radius,
            "reason": request.reason,
            "expires_at": request.expires_at.isoformat() if request.expires_at else None,
            "dry_run": dry_run,
        },
    )
    return Created(request, created=True)


def _schedule_expiry(*, session: Session, incident: Incident, request: ContainmentRequest) -> None:
    """A reminder at expires_at: commands.approvals.expiry expires the request then."""
    if request.expires_at is None:
        return
    schedule_reminder(
        session=session,
        incident=incident,
        kind=EXPIRY_KIND,
        due_at=request.expires_at,
        dedupe_key=f"approval-expiry:{request.id}",
        message=f"Containment request #{request.id} ({request.target_id}) expired "
        "without a decision; request it again if it is still needed.",
        payload={"request_id": request.id},
    )


def check_may_decide(
    *,
    request: ContainmentRequest,
    actor: str,
    approve: bool,
    approvers: Sequence[str],
    two_person_rule: bool,
) -> None:
    """Raise NotAllowed unless `actor` may make this decision."""
    if not approvers:
        raise NotAllowed(
            "No approvers are configured: add Slack user IDs to approvals.approvers first."
        )
    if actor not in approvers:
        raise NotAllowed(
            "Only the configured approvers can approve or reject containment; ask one of them."
        )
    if approve and two_person_rule and actor == request.requested_by:
        raise NotAllowed(
            "You requested this containment, so another approver has to approve it "
            "(two-person rule)."
        )


def decide(
    *,
    session: Session,
    request_id: int,
    actor: str,
    approve: bool,
    approvers: Sequence[str],
    two_person_rule: bool = True,
    reason: str | None = None,
    now: dt.datetime | None = None,
) -> Decision:
    """Approve or reject a pending request; exactly one concurrent caller wins."""
    now = now or clock_of(session).now()
    request = get_request(session=session, request_id=request_id)
    check_may_decide(
        request=request,
        actor=actor,
        approve=approve,
        approvers=approvers,
        two_person_rule=two_person_rule,
    )
    reason = _clean_reason(reason)
    if not approve and not reason:
        raise UserError("Say why you reject this containment: the reason goes on the timeline.")
    if request.status == "pending" and request.expires_at and request.expires_at <= now:
        expire_due(session=session, now=now, request_ids=[request.id])
        request = get_request(session=session, request_id=request_id)
        return Decision(request, False)
    new_status = "approved" if approve else "rejected"
    changed = session.execute(
        update(ContainmentRequest)
        .where(ContainmentRequest.id == request_id, ContainmentRequest.status == "pending")
        .values(status=new_status, decided_by=actor, decided_at=now, decision_reason=reason)
        .execution_options(synchronize_session=False)
    ).rowcount
    request = get_request(session=session, request_id=request_id)
    if changed != 1:
        return Decision(request, False)
    incident = incident_of(session=session, request=request)
    verb = "Approved" if approve else "Rejected"
    append_event(
        session=session,
        incident=incident,
        actor=actor,
        kind=f"containment.{new_status}",
        summary=(
            f"{verb} {request.kind} of {request.target_id} (request #{request.id}, "
            f"requested by {request.requested_by})" + (f": {reason}" if reason else "")
        ),
        details={
            "request_id": request.id,
            "decided_by": actor,
            "decided_at": now.isoformat(),
            "requested_by": request.requested_by,
            "reason": reason,
        },
    )
    return Decision(request, True)


def expire_due(
    *,
    session: Session,
    now: dt.datetime | None = None,
    request_ids: Sequence[int] | None = None,
) -> list[ContainmentRequest]:
    """Mark pending requests past their deadline expired; return the ones this call expired."""
    now = now or clock_of(session).now()
    stmt = select(ContainmentRequest.id).where(
        ContainmentRequest.status == "pending", ContainmentRequest.expires_at <= now
    )
    if request_ids is not None:
        stmt = stmt.where(ContainmentRequest.id.in_(list(request_ids)))
    expired: list[ContainmentRequest] = []
    for request_id in session.scalars(stmt).all():
        changed = session.execute(
            update(ContainmentRequest)
            .where(ContainmentRequest.id == request_id, ContainmentRequest.status == "pending")
            .values(status="expired", finished_at=now)
            .execution_options(synchronize_session=False)
        ).rowcount
        if changed != 1:
            continue
        request = get_request(session=session, request_id=request_id)
        append_event(
            session=session,
            incident=incident_of(session=session, request=request),
            actor="scheduler",
            kind="containment.expired",
            summary=(
                f"Request #{request.id} ({request.kind} of {request.target_id}) expired "
                "without a decision"
            ),
            details={
                "request_id": request.id,
                "expires_at": request.expires_at.isoformat() if request.expires_at else None,
            },
        )
        expired.append(request)
    return expired


def lineage(*, session: Session, request: ContainmentRequest) -> list[ContainmentRequest]:
    """The original containment and every retry of it, oldest first."""
    root = request
    while root.parent_id is not None and root.kind != "contain":
        parent = session.get(ContainmentRequest, root.parent_id)
        if parent is None:
            break
        root = parent
    chain = [root]
    frontier = [root.id]
    while frontier:
        children = session.scalars(
            select(ContainmentRequest)
            .where(
                ContainmentRequest.parent_id.in_(frontier),
                ContainmentRequest.kind == "retry",
            )
            .order_by(ContainmentRequest.id)
        ).all()
        chain.extend(children)
        frontier = [c.id for c in children]
    return chain


def done_results(*, session: Session, request: ContainmentRequest) -> list[dict[str, Any]]:
    """The latest recorded result of every step in the request's lineage (for retry/rollback).

    A later attempt's record of a step replaces an earlier one.
    """
    latest: dict[str, dict[str, Any]] = {}
    for member in lineage(session=session, request=request):
        if member.dry_run:
            continue
        for step in session.scalars(
            select(ActionStep)
            .where(ActionStep.request_id == member.id)
            .order_by(ActionStep.position)
        ):
            if step.result:
                latest[step.action] = dict(step.result)
    return list(latest.values())


def check_follow_up(*, request: ContainmentRequest, kind: str) -> None:
    if kind == "retry" and request.status not in RETRYABLE:
        raise UserError(
            f"Request #{request.id} is {request.status}; only failed, partial or interrupted "
            "containments can be retried."
        )
    if kind == "rollback":
        if request.kind == "rollback":
            raise UserError(f"Request #{request.id} is itself a rollback; it cannot be undone.")
        if request.status not in ROLLBACKABLE:
            raise UserError(
                f"Request #{request.id} is {request.status}; only a finished containment can "
                "be rolled back."
            )


def mark_rolled_back(
    *, session: Session, rollback: ContainmentRequest, actor: str = "system"
) -> list[int]:
    """After a successful rollback: every request in the lineage is rolled_back."""
    parent = session.get(ContainmentRequest, rollback.parent_id) if rollback.parent_id else None
    if parent is None:
        return []
    ids = [r.id for r in lineage(session=session, request=parent) if r.status in FINISHED]
    if ids:
        session.execute(
            update(ContainmentRequest)
            .where(ContainmentRequest.id.in_(ids))
            .values(status="rolled_back")
            .execution_options(synchronize_session=False)
        )
    return ids


def running_plan(
    *, database: Database, target_id: str, kinds: Sequence[str], what: str
) -> dict[str, Any]:
    """The plan of the newest running request of these kinds for a target.

    Engines run by the executor get only the target's name; the plan travels in the request.
    """
    with database.read_session() as session:
        request = session.scalars(
            select(ContainmentRequest)
            .where(
                ContainmentRequest.target_id == target_id,
                ContainmentRequest.kind.in_(tuple(kinds)),
                ContainmentRequest.status == "running",
            )
            .order_by(ContainmentRequest.id.desc())
        ).first()
        if request is None:
            raise RuntimeError(f"no running {what} request for {target_id}")
        return dict(request.plan)
