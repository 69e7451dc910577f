"""What the clean room and the wipe share: approval-gated requests that are not containment.

Both plan first (AWS reads only), record a request through commands.approvals unless one is
already live for the same target, and run under the approval executor through an Engine
that cannot be re-planned from a button and has nothing to roll back.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from commands.approvals.plans import Plan, StepCallback
from commands.approvals.requests import request_containment
from commands.incidents import get_incident
from containment.context import ActionContext
from containment.registry import Status, StepResult
from containment.targets import Target
from storage.db import Database
from storage.models import ContainmentRequest

LIVE_REQUEST = ("pending", "approved", "running")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recorded:
    incident_key: str
    request_id: int
    created: bool
    already_live: bool  # a concurrent caller's request, found before recording this plan


def live_request(session: Session, target_id: str, kind: str) -> ContainmentRequest | None:
    """The newest request of this kind for this target that has not settled yet."""
    return session.scalars(
        select(ContainmentRequest)
        .where(
            ContainmentRequest.target_id == target_id,
            ContainmentRequest.kind == kind,
            ContainmentRequest.status.in_(LIVE_REQUEST),
        )
        .order_by(ContainmentRequest.id.desc())
    ).first()


def record_request(
    *,
    db: Database,
    incident_key: str,
    target: Target,
    kind: str,
    plan: Plan,
    requested_by: str,
    reason: str,
    expire_after: dt.timedelta,
    dry_run: bool,
) -> Recorded:
    """Record the approval request, or return the live one a concurrent caller recorded
    while this one was planning."""
    with db.session() as session:
        incident = get_incident(session=session, key=incident_key, for_update=True)
        live = live_request(session, target.resource_id, kind)
        if live is not None:
            return Recorded(incident.key, live.id, created=False, already_live=True)
        made = request_containment(
            session=session,
            incident=incident,
            target=target,
            plan=plan,
            requested_by=requested_by,
            reason=reason,
            expire_after=expire_after,
            dry_run=dry_run,
            kind=kind,
        )
        return Recorded(incident.key, made.request.id, made.created, already_live=False)


def step_result(
    at: dt.datetime, action: str, status: Status, *, note: str | None = None, **extra: Any
) -> StepResult:
    """A step that started and finished at `at` (the stack's events come in after the fact)."""
    now = at.isoformat()
    return StepResult(
        action=action, status=status, note=note, started_at=now, finished_at=now, **extra
    )


class OneWayEngine:
    """The Engine parts the clean room and the wipe share: planned by their own command
    (never from a button) and nothing to roll back; `facts_changed` tells the card."""

    plan_command = ""  # what to use instead, for the user's one sentence

    def __init__(self, on_facts: Callable[[str], None] | None = None) -> None:
        self.on_facts = on_facts  # called with the incident key after its facts change

    def plan(self, *, target: Target, ctx: ActionContext, include: Sequence[str] = ()) -> Plan:
        from commands.errors import UserError

        raise UserError(f"Use {self.plan_command}.")

    def plan_rollback(
        self, *, target: Target, ctx: ActionContext, previous: Sequence[StepResult]
    ) -> Plan:
        return Plan()

    def rollback(
        self,
        *,
        target: Target,
        ctx: ActionContext,
        previous: Sequence[StepResult],
        on_step: StepCallback,
    ) -> list[StepResult]:
        return []

    def facts_changed(self, incident_key: str) -> None:
        if self.on_facts is None:
            return
        try:
            self.on_facts(incident_key)
        except Exception:  # the card is secondary to the AWS work and its record
            log.exception("refreshing the card of %s failed", incident_key)
