"""The containment approval flow in one process: plan and post requests, decide, run them
after the ack, keep their cards current, expire and recover.

Deciding is one atomic database update (commands.approvals), so double clicks, Slack
retries and two approvers at the same moment yield one approval and one run. The run
happens in `runtime.background`; its steps update the card through `chat.update`, at most
once a second per card. A sweeper thread expires overdue requests (their buttons go away)
and recovers what a restart left behind: approved-but-never-started requests are run,
running ones whose process died are marked interrupted and offered Retry / Roll back.

GuardDuty intake calls `propose(runtime, ...)` for high and critical findings, with
`requested_by="guardduty"`, so any approver may approve it.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from slack_sdk.errors import SlackApiError
from sqlalchemy import select

from bot.approvals.cards import CardUpdater, load_card
from bot.background import Busy
from bot.contacts import notify_opened, send_notice
from bot.listeners.incident_posts import post_new_incident, refresh_incident
from bot.slack_out import card_id
from bot.views import approval_card as cv
from bot.views.approval_card import CardView, approval_card
from bot.views.approval_notices import RequestEvent, notice_texts, request_line
from bot.views.decisions import decision_text
from bot.views.resources import resource_label
from commands import incidents as svc
from commands.approvals import contacts
from commands.approvals.engine import ContainmentEngine, add_stored_impact, wants_volatile
from commands.approvals.execution import Outcome, execute
from commands.approvals.plans import (
    Engine,
    Plan,
    action_context,
    default_region,
    finding_principals,
    is_plain_name,
    parse_target,
    resolve_kind,
    resource_type,
    target_from_dict,
)
from commands.approvals.recovery import interrupt, recover
from commands.approvals.requests import (
    check_follow_up,
    check_may_decide,
    decide,
    done_results,
    expire_due,
    get_request,
    incident_of,
    lineage,
    request_containment,
)
from commands.errors import UserError
from containment.registry import StepResult
from containment.targets import TargetKind
from storage.models import ContainmentRequest, Finding, Incident

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger(__name__)

CARD_INTERVAL = 1.0  # seconds between chat.update calls of one card (Slack's pace)
RESUME_GRACE = dt.timedelta(seconds=30)


@dataclass(frozen=True)
class Proposal:
    request_id: int
    created: bool
    incident_key: str
    channel_id: str | None
    card_ts: str | None
    opened_incident: bool = False


def service(runtime: Runtime) -> ContainmentService:
    services = runtime.services
    with services.create_lock:
        if services.containment is None:
            services.containment = ContainmentService(runtime)
        return services.containment


def propose(runtime: Runtime, **kwargs: Any) -> Proposal:
    """Plan, record and post a containment request (see ContainmentService.propose)."""
    return service(runtime).propose(**kwargs)


class ContainmentService:
    """One per process: plans, posts and runs requests; keeps their cards current."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.engine: Engine = runtime.options.containment_engine or ContainmentEngine(
            tag_labels=runtime.config.impact.tag_keys,
            # containment.flow_logs: true adds the optional flow-logs step to every plan.
            include=("flow_logs",) if runtime.config.containment.flow_logs else (),
        )
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None

    # -- AWS context ----------------------------------------------------------------------

    def context_for(self, request: ContainmentRequest) -> Any:
        with self.runtime.database.read_session() as session:
            incident = session.get(Incident, request.incident_id)
            key = incident.key if incident else f"request-{request.id}"
        return self._context(key, dry_run=request.dry_run)

    def _context(self, incident_key: str, *, dry_run: bool, finding_id: str | None = None) -> Any:
        return action_context(
            incident_key=incident_key,
            options=self.runtime.config.containment,
            dry_run=dry_run,
            now=self.runtime.now,
            finding_id=finding_id,
            client_hooks=self.runtime.options.client_hooks,
            forensics=self.runtime.config.forensics,
        )

    # -- proposing ------------------------------------------------------------------------

    def propose(
        self,
        *,
        resource_id: str,
        requested_by: str,
        incident_key: str | None = None,
        reason: str | None = None,
        channel_id: str | None = None,
        region: str | None = None,
        account_id: str | None = None,
        finding_id: str | None = None,
        kind: TargetKind | None = None,
        volatile: bool | None = None,
    ) -> Proposal:
        """Plan containment of `resource_id` and post it for approval.

        `volatile`: add (True) or leave out (False) the volatile capture before isolation;
        None follows `containment.volatile_capture` and the incident's severity.

        `resource_id` is an id, an ARN or `kind:name`; `kind` reads a plain name as that kind
        (a finding's resource type). The incident is the one named, else the channel's, else
        the open one for the resource, else a new one. Planning reads AWS outside any
        database transaction.
        """
        runtime = self.runtime
        opened = False
        typed = resource_id
        plain = kind is None and is_plain_name(typed)  # which kind it is, AWS will say
        if not plain:
            resource_id = parse_target(typed, kind=kind).resource_id  # incidents key on it
        resource_id = resource_id.strip()
        principals: tuple[str, ...] = ()
        severity = "high"  # what a containment request opens an incident with
        with runtime.database.read_session() as session:
            incident = self._find_incident(session, incident_key, channel_id, resource_id)
            finding = session.scalars(
                select(Finding)
                .where(Finding.resource_id == resource_id)
                .order_by(Finding.id.desc())
            ).first()
            if incident is not None:
                incident_key = incident.key
                severity = incident.severity
                region = region or incident.region
                account_id = account_id or incident.account_id
            if finding is not None:
                region = region or finding.region
                account_id = account_id or finding.account_id
                finding_id = finding_id or finding.finding_id
                principals = finding_principals(finding.raw or {}, finding.account_id)
        region = region or (runtime.config.guardduty.regions or [None])[0]
        if plain:
            probe = self._context(incident_key or "resolve", dry_run=True)
            kind = resolve_kind(
                typed, region=default_region(region), account_id=account_id, ctx=probe
            )
        target = parse_target(typed, region=region, account_id=account_id, kind=kind)
        if target.kind == "bucket" and principals:
            target = replace(target, principals=principals)  # the bucket's deny names them
        if incident_key is None:
            incident_key = self._open_incident(target, requested_by, channel_id)
            opened = True
        dry_run = runtime.config.containment.dry_run
        ctx = self._context(incident_key, dry_run=dry_run, finding_id=finding_id)
        rule = runtime.config.containment.volatile_capture
        include = ("volatile_capture",) if wants_volatile(volatile, severity, rule) else ()
        plan = self.engine.plan(target=target, ctx=ctx, include=include)
        with runtime.database.session() as session:
            incident = svc.get_incident(session=session, key=incident_key)
            add_stored_impact(plan, incident, target.resource_id)
            if incident.resource_id is None:
                # The incident now has an affected resource (impact, trail and finding joins
                # use it); the containment.requested event below records the target.
                incident.resource_id = target.resource_id
                incident.resource_type = resource_type(target)
                incident.region = incident.region or target.region
                incident.account_id = incident.account_id or target.account_id
            if incident.status in ("resolved", "closed"):
                raise UserError(cv.incident_not_open(incident.key, incident.status))
            created = request_containment(
                session=session,
                incident=incident,
                target=target,
                plan=plan,
                requested_by=requested_by,
                reason=reason,
                expire_after=dt.timedelta(minutes=runtime.config.approvals.expire_after_minutes),
                dry_run=dry_run,
                allow_drill_changes=runtime.config.drills.allow_changes,
            )
            request_id = created.request.id
            card = (created.request.card_channel, created.request.card_ts)
            fallback = incident.channel_id
        if created.created or card[1] is None:
            card = self.post_card(request_id, channel_id=fallback or channel_id)
        if created.created:
            self._incident_line(request_id, "requested")
        return Proposal(request_id, created.created, incident_key, card[0], card[1], opened)

    def _find_incident(
        self, session: Any, key: str | None, channel_id: str | None, resource_id: str
    ) -> Incident | None:
        if key:
            return svc.get_incident(session=session, key=key)
        if channel_id:
            found = svc.find_by_channel(session=session, channel_id=channel_id)
            if found is not None and found.status in ("open", "contained"):
                return found
        return svc.find_open_for_resource(session=session, resource_id=resource_id)

    def _open_incident(self, target: Any, requested_by: str, channel_id: str | None) -> str:
        label = resource_label(resource_type(target))
        with self.runtime.database.session() as session:
            incident = svc.open_incident(
                session=session,
                title=f"Suspected compromise of {label} {target.resource_id}",
                created_by=requested_by,
                severity="high",
                account_id=target.account_id,
                region=target.region,
                resource_id=target.resource_id,
                resource_type=resource_type(target),
                details={"opened_by": "containment request"},
            )
            key = incident.key
        try:
            post_new_incident(
                self.runtime, key, opener=requested_by, fallback_channel=channel_id or ""
            )
        except Exception:  # the request matters more than the incident card
            log.exception("could not post the card of %s", key)
        notify_opened(self.runtime, key)
        return key

    def follow_up(self, *, request_id: int, kind: str, requested_by: str) -> Proposal:
        """Ask (with the same approval) to retry what is left, or to roll back."""
        runtime = self.runtime
        with runtime.database.read_session() as session:
            parent = get_request(session=session, request_id=request_id)
            check_follow_up(request=parent, kind=kind)
            incident = incident_of(session=session, request=parent)
            key = incident.key
            target = target_from_dict(parent.plan["target"])
            previous = [
                StepResult.from_dict(r) for r in done_results(session=session, request=parent)
            ]
            dry_run = parent.dry_run
            channel = parent.card_channel
            parent_plan = Plan.from_json(parent.plan)
            if kind == "retry":
                done = {r.action for r in previous if r.done}
                plan = parent_plan.with_steps(
                    [s for s in parent_plan.steps if s.action not in done]
                )
        if kind == "retry" and not plan.engine:
            # Re-plan from fresh facts: a half-done step needs fewer calls than first listed.
            ctx = self._context(key, dry_run=dry_run)
            left = set(plan.actions)
            # The optional steps the first plan had (e.g. volatile_capture) stay in the retry.
            fresh = self.engine.plan(target=target, ctx=ctx, include=tuple(left))
            plan = plan.with_steps([s for s in fresh.steps if s.action in left])
        if kind == "rollback":
            ctx = self._context(key, dry_run=dry_run)
            undo = self.engine.plan_rollback(target=target, ctx=ctx, previous=previous)
            plan = replace(undo, blast_radius=parent_plan.blast_radius)
            if not plan.steps:
                raise UserError(cv.nothing_to_roll_back(request_id))
        with runtime.database.session() as session:
            parent = get_request(session=session, request_id=request_id)
            incident = incident_of(session=session, request=parent)
            existing = session.scalars(
                select(ContainmentRequest).where(
                    ContainmentRequest.parent_id == request_id,
                    ContainmentRequest.kind == kind,
                    ContainmentRequest.status.in_(("pending", "approved", "running")),
                )
            ).first()
            if existing is not None:
                created_id, is_new = existing.id, False
                card = (existing.card_channel, existing.card_ts)
            else:
                created = request_containment(
                    session=session,
                    incident=incident,
                    target=target,
                    plan=plan,
                    requested_by=requested_by,
                    reason=f"{kind} of request #{request_id}",
                    expire_after=dt.timedelta(
                        minutes=runtime.config.approvals.expire_after_minutes
                    ),
                    dry_run=dry_run,
                    kind=kind,
                    parent=parent,
                    allow_drill_changes=runtime.config.drills.allow_changes,
                )
                created_id, is_new = created.request.id, created.created
                card = (created.request.card_channel, created.request.card_ts)
        if is_new or card[1] is None:
            card = self.post_card(created_id, channel_id=channel)
        if is_new:
            self._incident_line(created_id, "requested")
        return Proposal(created_id, is_new, key, card[0], card[1])

    # -- the card -------------------------------------------------------------------------

    def card_view(self, request_id: int) -> tuple[CardView, str | None, str | None]:
        return load_card(self.runtime.database, request_id)

    def post_card(self, request_id: int, *, channel_id: str | None) -> tuple[str, str]:
        view, _, _ = self.card_view(request_id)
        channel = channel_id or self.runtime.config.slack.incident_channel
        if not channel:
            raise UserError(cv.NO_CARD_CHANNEL)
        slack = self.runtime.slack
        card = card_id("approval", request_id)
        with slack.card_lock(card):
            posted = slack.post(channel, approval_card(view, now=self.runtime.now()))
        channel, ts = str(posted["channel"]), str(posted["ts"])
        with self.runtime.database.session() as session:
            request = get_request(session=session, request_id=request_id)
            request.card_channel, request.card_ts = channel, ts
            slack.stamp(card, session=session)
        return channel, ts

    def refresh_card(self, request_id: int) -> None:
        """chat.update the card from the database; never faster than once a second (the
        wait happens before taking the card's lock, and the render after it, so the last
        update always shows the latest state)."""
        slack = self.runtime.slack
        card = card_id("approval", request_id)
        if not slack.wait_turn(card, CARD_INTERVAL):
            return  # a thread already waiting to update the card will show this change
        with slack.card_lock(card):
            view, channel, ts = self.card_view(request_id)
            if not channel or not ts:
                return
            try:
                slack.update(channel, ts, approval_card(view, now=self.runtime.now()))
            except SlackApiError:
                log.exception("could not update the card of request #%s", request_id)
            finally:
                slack.landed(card)

    # -- deciding -------------------------------------------------------------------------

    def decide(
        self, *, request_id: int, actor: str, approve: bool, reason: str | None = None
    ) -> str:
        cfg = self.runtime.config.approvals
        with self.runtime.database.session() as session:
            decision = decide(
                session=session,
                request_id=request_id,
                actor=actor,
                approve=approve,
                approvers=cfg.approvers,
                two_person_rule=cfg.two_person_rule,
                reason=reason,
                now=self.runtime.now(),
            )
            status = decision.request.status
        if not decision.won:
            if status == "expired":
                self.refresh_card(request_id)
            return decision_text(decision)
        if approve:
            self.start(request_id)
            self._notify(request_id, "approved")
            self._incident_line(request_id, "approved", actor=actor)
        else:
            self.refresh_card(request_id)
            self._incident_line(request_id, "rejected", actor=actor, reason=reason)
        return decision_text(decision)

    def _incident_line(
        self,
        request_id: int,
        event: RequestEvent,
        *,
        actor: str | None = None,
        reason: str | None = None,
    ) -> None:
        """Keep the incident card (its pending-approval count) current and say it in its
        thread; best effort, the request itself is already recorded."""
        try:
            with self.runtime.database.read_session() as session:
                request = get_request(session=session, request_id=request_id)
                key = incident_of(session=session, request=request).key
                line = request_line(request, event, actor=actor, reason=reason)
            refresh_incident(self.runtime, key, line=line)
        except Exception:
            log.exception("could not update the incident card for request #%s", request_id)

    def check_may_decide(self, *, request_id: int, actor: str, approve: bool) -> str:
        """Refuse a non-approver before opening a modal; returns the request's target."""
        cfg = self.runtime.config.approvals
        with self.runtime.database.read_session() as session:
            request = get_request(session=session, request_id=request_id)
            check_may_decide(
                request=request,
                actor=actor,
                approve=approve,
                approvers=cfg.approvers,
                two_person_rule=cfg.two_person_rule,
            )
            if request.status != "pending":
                raise UserError(cv.already_decided(request_id, request.status))
            return request.target_id

    # -- running --------------------------------------------------------------------------

    def start(self, request_id: int) -> None:
        """Run an approved request after the ack (it stays `approved` if the pool refuses)."""
        try:
            self.runtime.background.submit(
                self.run,
                request_id,
                description=f"containment request #{request_id}",
                on_error=lambda exc: self._crashed(request_id, exc),
                on_interrupt=lambda: self._interrupted(request_id),
            )
        except Busy:
            log.warning(
                "request #%s stays approved: the pool is busy; the sweeper resumes it", request_id
            )

    def engine_for(self, request_id: int) -> Engine:
        """The engine a request's plan names (clean room, wipe), else containment's own."""
        with self.runtime.database.read_session() as session:
            name = Plan.from_json(get_request(session=session, request_id=request_id).plan).engine
        # Engines for requests whose plan names one (plan.engine: "forensics", "wipe"):
        # the investigation listeners add theirs, so their requests share this card and flow.
        engines = self.runtime.services.engines
        return engines.get(name, self.engine) if name else self.engine

    def run(self, request_id: int) -> Outcome | None:
        updater = CardUpdater(lambda: self.refresh_card(request_id))
        try:
            outcome = execute(
                database=self.runtime.database,
                request_id=request_id,
                engine=self.engine_for(request_id),
                context_factory=self.context_for,
                progress=lambda _id: updater.poke(),
                now=self.runtime.now,
            )
        finally:
            updater.close()
        if outcome is None:
            return None
        for related in self._rolled_back_by(request_id):
            self.refresh_card(related)  # the original cards lose their buttons
        self._notify(request_id, outcome.status, outcome=outcome)
        return outcome

    def _rolled_back_by(self, request_id: int) -> list[int]:
        with self.runtime.database.read_session() as session:
            request = get_request(session=session, request_id=request_id)
            if request.kind != "rollback" or request.parent_id is None:
                return []
            parent = get_request(session=session, request_id=request.parent_id)
            return [
                r.id for r in lineage(session=session, request=parent) if r.status == "rolled_back"
            ]

    def _crashed(self, request_id: int, exc: BaseException) -> None:
        log.error("containment request #%s failed outside its steps: %s", request_id, exc)
        self.refresh_card(request_id)

    def _interrupted(self, request_id: int) -> None:
        interrupt(database=self.runtime.database, request_id=request_id)
        self.refresh_card(request_id)

    def _notify(self, request_id: int, what: str, *, outcome: Outcome | None = None) -> None:
        with self.runtime.database.read_session() as session:
            request = get_request(session=session, request_id=request_id)
            incident = incident_of(session=session, request=request)
            key, dry_run = incident.key, request.dry_run
            incident_id, drill = incident.id, incident.is_drill
            channel, ts = request.card_channel, request.card_ts
            subject, body, line = notice_texts(request, incident, what, outcome)
        send_notice(
            self.runtime,
            incident_id=incident_id,
            notice=contacts.Notice(key, subject, body),
            drill=drill,
            dry_run=dry_run,
            line=line,
            channel=channel if ts else None,
            thread_ts=ts,
        )
        try:
            if what != "approved":
                refresh_incident(self.runtime, key, line=line)
        except SlackApiError:
            log.exception("could not post the %s notice of request #%s", what, request_id)

    # -- expiry and recovery --------------------------------------------------------------

    def sweep(self, *, first: bool = False) -> dict[str, list[int]]:
        """Expire overdue requests and recover what a dead process left behind."""
        runtime = self.runtime
        with runtime.database.session() as session:
            expired = [r.id for r in expire_due(session=session, now=runtime.now())]
        for request_id in expired:
            self.refresh_card(request_id)
            self._incident_line(request_id, "expired")
        found = recover(
            database=runtime.database,
            now=runtime.now,
            approved_grace=dt.timedelta(0) if first else RESUME_GRACE,
        )
        for request_id in found.interrupted:
            self.refresh_card(request_id)
            self._notify(request_id, "interrupted")
        for outcome in found.settled:  # died after its last step: settled from the records
            self.refresh_card(outcome.request_id)
            self._notify(outcome.request_id, outcome.status, outcome=outcome)
        for request_id in found.resume:
            self.start(request_id)
        return {
            "expired": expired,
            "resumed": found.resume,
            "interrupted": found.interrupted,
            "settled": [o.request_id for o in found.settled],
        }

    def start_sweeper(self, every: float) -> None:
        if self._sweeper is not None:
            return

        def loop() -> None:
            first = True
            while not self._stop.is_set() and not self._closing():
                try:
                    self.sweep(first=first)
                except Exception:
                    log.exception("containment sweep failed")
                first = False
                self._stop.wait(every)

        self._sweeper = threading.Thread(target=loop, name="containment-sweeper", daemon=True)
        self._sweeper.start()

    def _closing(self) -> bool:
        """The process is shutting down (its background pool stopped taking work)."""
        background = self.runtime.background
        return bool(getattr(background, "closing", getattr(background, "_closing", False)))

    def stop(self) -> None:
        self._stop.set()
        if self._sweeper is not None:
            self._sweeper.join(timeout=5)
