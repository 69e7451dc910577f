"""Containment requests without Slack: who may decide, exactly-once decisions and runs,
expiry, step records, outcomes and restart recovery (on every database backend)."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import event, select

from bot.views.decisions import decision_text
from bot.views.reminders import delivery_text
from commands.approvals import decide, execute, expire_due, recover, request_containment
from commands.approvals.execution import claim
from commands.approvals.plans import Plan, PlanStep, StepCallback, parse_target
from commands.approvals.requests import done_results
from commands.errors import NotAllowed, UserError
from commands.incidents import open_incident
from containment.context import ActionContext
from containment.registry import StepResult
from containment.targets import Target
from storage.models import ActionStep, ContainmentRequest, Incident, TimelineEvent
from tests.clock import TEST_CLOCK

pytestmark = pytest.mark.dates  # CI reruns these with the clock shifted (.ci/run)

APPROVERS = ["U0APPROVER1", "U0APPROVER2"]
INSTANCE = "i-0123456789abcdef0"
STEPS = ("capture", "isolate", "iam", "tag")


class FakeEngine:
    """Steps run in worker threads like the real executor; chosen steps fail."""

    def __init__(self, fail: Sequence[str] = ()) -> None:
        self.fail = set(fail)
        self.runs: list[list[str]] = []
        self.rollbacks: list[list[str]] = []
        self.lock = threading.Lock()

    def plan(self, *, target: Target, ctx: ActionContext, include: Sequence[str] = ()) -> Plan:
        return Plan.from_json(
            {
                "steps": [
                    {
                        "action": name,
                        "summary": f"do {name}",
                        "mutating": name != "capture",
                        "calls": [{"text": f"ec2.{name.title()}(InstanceId={target.resource_id})"}],
                    }
                    for name in STEPS
                ],
                "blast_radius": {"tags": {"Name": "web-1"}, "labelled": {"name": "web-1"}},
            }
        )

    def plan_rollback(self, *, target: Target, ctx: ActionContext, previous: Any) -> Plan:
        return Plan(tuple(PlanStep(p.action) for p in previous))

    def _go(self, names: Sequence[str], on_step: StepCallback, *, undo: bool) -> list[StepResult]:
        def one(name: str) -> StepResult:
            on_step(name, "started", None)
            if name in self.fail and not undo:
                result = StepResult(
                    action=name,
                    status="failed",
                    error={"code": "AccessDenied", "message": "not allowed", "operation": "X"},
                )
            else:
                result = StepResult(action=name, status="succeeded", changes={"did": name})
            on_step(name, result.status, result)
            return result

        with ThreadPoolExecutor(4) as pool:
            return list(pool.map(one, names))

    def run(
        self,
        *,
        target: Target,
        ctx: ActionContext,
        action_names: Sequence[str] | None,
        previous: Sequence[StepResult],
        on_step: StepCallback,
    ) -> list[StepResult]:
        names = list(action_names or STEPS)
        with self.lock:
            self.runs.append(names)
        return self._go(names, on_step, undo=False)

    def rollback(self, *, target: Target, ctx: ActionContext, previous: Any, on_step: Any) -> list:
        names = [p.action for p in previous if p.status == "succeeded"]
        with self.lock:
            self.rollbacks.append(names)
        return self._go(names, on_step, undo=True)


def ctx_for(request: ContainmentRequest) -> ActionContext:
    return ActionContext(
        now=TEST_CLOCK.now, incident_key=f"req-{request.id}", dry_run=request.dry_run
    )


def new_request(
    database: Any, *, requested_by: str = "W111", minutes: float = 30, dry_run: bool = False
) -> int:
    engine = FakeEngine()
    target = parse_target(INSTANCE, region="us-east-1")
    with database.session() as session:
        incident = session.scalars(select(Incident)).first() or open_incident(
            session=session,
            title="C2 traffic from web-1",
            created_by="W111",
            resource_id=INSTANCE,
        )
        created = request_containment(
            session=session,
            incident=incident,
            target=target,
            plan=engine.plan(
                target=target, ctx=ActionContext(now=TEST_CLOCK.now, incident_key=incident.key)
            ),
            requested_by=requested_by,
            reason="beaconing to a known C2",
            expire_after=dt.timedelta(minutes=minutes),
            dry_run=dry_run,
        )
        assert created.created
        return created.request.id


def approve(database: Any, request_id: int, actor: str = "U0APPROVER1", **kw: Any) -> Any:
    with database.session() as session:
        return decide(
            session=session,
            request_id=request_id,
            actor=actor,
            approve=True,
            approvers=APPROVERS,
            **kw,
        )


def timeline(database: Any) -> list[TimelineEvent]:
    with database.read_session() as session:
        return list(session.scalars(select(TimelineEvent).order_by(TimelineEvent.seq)))


def request_row(database: Any, request_id: int) -> ContainmentRequest:
    with database.read_session() as session:
        row = session.get(ContainmentRequest, request_id)
        assert row is not None
        return row


# -- requests --------------------------------------------------------------------------------


def test_request_records_plan_and_timeline_and_dedupes(database: Any) -> None:
    request_id = new_request(database)
    row = request_row(database, request_id)
    assert row.status == "pending" and row.kind == "contain"
    assert [s["action"] for s in row.plan["steps"]] == list(STEPS)
    assert row.plan["target"]["resource_id"] == INSTANCE
    assert row.expires_at - row.requested_at == dt.timedelta(minutes=30)
    requested = [e for e in timeline(database) if e.kind == "containment.requested"]
    assert len(requested) == 1 and "beaconing" in requested[0].summary
    # The same target again (a GuardDuty update, a double-typed command): the same request.
    target = parse_target(INSTANCE, region="us-east-1")
    with database.session() as session:
        again = request_containment(
            session=session,
            incident=session.scalars(select(Incident)).one(),
            target=target,
            plan=FakeEngine().plan(
                target=target, ctx=ActionContext(now=TEST_CLOCK.now, incident_key="x")
            ),
            requested_by="guardduty",
            expire_after=dt.timedelta(minutes=5),
        )
        assert not again.created and again.request.id == request_id


def test_bad_target_is_a_user_error() -> None:
    with pytest.raises(UserError, match="neither an instance id"):
        parse_target("sg-123")


# -- who may decide --------------------------------------------------------------------------


def test_self_approval_refused_under_two_person_rule(database: Any) -> None:
    request_id = new_request(database, requested_by="U0APPROVER1")
    with pytest.raises(NotAllowed, match="another approver"):
        approve(database, request_id, "U0APPROVER1")
    assert request_row(database, request_id).status == "pending"
    # Without the rule (a one-person team), the requester may approve.
    assert approve(database, request_id, "U0APPROVER1", two_person_rule=False).won


def test_non_approver_refused(database: Any) -> None:
    request_id = new_request(database)
    with pytest.raises(NotAllowed, match="configured approvers"):
        approve(database, request_id, "W999")
    with database.session() as session, pytest.raises(NotAllowed):
        decide(
            session=session,
            request_id=request_id,
            actor="W999",
            approve=False,
            approvers=APPROVERS,
            reason="no",
        )
    assert request_row(database, request_id).status == "pending"


def test_guardduty_request_any_approver_and_approver_recorded(database: Any) -> None:
    request_id = new_request(database, requested_by="guardduty")
    decision = approve(database, request_id, "U0APPROVER2")
    assert decision.won
    row = request_row(database, request_id)
    assert (row.status, row.decided_by, row.requested_by) == (
        "approved",
        "U0APPROVER2",
        "guardduty",
    )
    approved = [e for e in timeline(database) if e.kind == "containment.approved"]
    assert approved[0].actor == "U0APPROVER2"


def test_twenty_concurrent_approvals_one_winner(database: Any) -> None:
    request_id = new_request(database)
    barrier = threading.Barrier(20)

    def click(i: int) -> bool:
        barrier.wait()
        return approve(database, request_id, APPROVERS[i % 2]).won

    with ThreadPoolExecutor(20) as pool:
        wins = list(pool.map(click, range(20)))
    assert wins.count(True) == 1
    assert len([e for e in timeline(database) if e.kind == "containment.approved"]) == 1
    # And of twenty concurrent runs, one claims it.
    engine = FakeEngine()
    with ThreadPoolExecutor(20) as pool:
        outcomes = list(
            pool.map(
                lambda _: execute(
                    database=database, request_id=request_id, engine=engine, context_factory=ctx_for
                ),
                range(20),
            )
        )
    assert len([o for o in outcomes if o is not None]) == 1
    assert len(engine.runs) == 1
    assert len([e for e in timeline(database) if e.kind == "containment.started"]) == 1


def test_reject_needs_a_reason_and_records_it(database: Any) -> None:
    request_id = new_request(database)
    with database.session() as session, pytest.raises(UserError, match="why"):
        decide(
            session=session,
            request_id=request_id,
            actor="U0APPROVER1",
            approve=False,
            approvers=APPROVERS,
            reason="  ",
        )
    with database.session() as session:
        decision = decide(
            session=session,
            request_id=request_id,
            actor="U0APPROVER1",
            approve=False,
            approvers=APPROVERS,
            reason="false positive: pentest",
        )
    assert decision.won
    row = request_row(database, request_id)
    assert (row.status, row.decision_reason) == ("rejected", "false positive: pentest")
    late = approve(database, request_id, "U0APPROVER2")
    assert not late.won and "rejected by <@U0APPROVER1>" in decision_text(late)
    assert claim(database=database, request_id=request_id) is False


# -- expiry ----------------------------------------------------------------------------------


def test_expiry(database: Any) -> None:
    request_id = new_request(database, minutes=5)
    later = database.clock.now() + dt.timedelta(minutes=6)
    with database.session() as session:
        assert expire_due(session=session, now=database.clock.now()) == []
        assert [r.id for r in expire_due(session=session, now=later)] == [request_id]
        assert expire_due(session=session, now=later) == []  # once
    assert request_row(database, request_id).status == "expired"
    decision = approve(database, request_id)
    assert not decision.won and "expired" in decision_text(decision)
    assert [e.actor for e in timeline(database) if e.kind == "containment.expired"] == ["scheduler"]


def test_decide_after_deadline_expires_instead_of_approving(database: Any) -> None:
    request_id = new_request(database, minutes=1)
    decision = approve(database, request_id, now=database.clock.now() + dt.timedelta(minutes=2))
    assert not decision.won
    assert request_row(database, request_id).status == "expired"


# -- execution -------------------------------------------------------------------------------


def test_execute_records_every_step_and_contains_incident(database: Any) -> None:
    request_id = new_request(database)
    approve(database, request_id)
    outcome = execute(
        database=database, request_id=request_id, engine=FakeEngine(), context_factory=ctx_for
    )
    assert outcome is not None and outcome.status == "succeeded"
    with database.read_session() as session:
        steps = session.scalars(
            select(ActionStep)
            .where(ActionStep.request_id == request_id)
            .order_by(ActionStep.position)
        ).all()
        assert [(s.action, s.status) for s in steps] == [(a, "succeeded") for a in STEPS]
        assert all(s.started_at and s.finished_at for s in steps)
        assert session.scalars(select(Incident)).one().status == "contained"
    kinds = [e.kind for e in timeline(database)]
    assert kinds.count("containment.step.started") == len(STEPS)
    assert kinds.count("containment.step.succeeded") == len(STEPS)
    assert kinds[-1] == "incident.status" and "containment.finished" in kinds
    assert request_row(database, request_id).status == "succeeded"


def test_step_records_leave_the_request_and_the_other_steps_unread(database: Any) -> None:
    """The recorder writes a step's record without loading the request: that loaded its plan
    and every step's result JSON (the capture's evidence among them) for each record, which
    made it the busiest thread of a containment, slowing the steps beside it."""
    request_id = new_request(database)
    approve(database, request_id)
    recorded: list[str] = []

    def spy(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if threading.current_thread().name == f"steps-{request_id}":
            recorded.append(statement)

    event.listen(database.engine, "before_cursor_execute", spy)
    try:
        outcome = execute(
            database=database, request_id=request_id, engine=FakeEngine(), context_factory=ctx_for
        )
    finally:
        event.remove(database.engine, "before_cursor_execute", spy)
    assert outcome is not None and outcome.status == "succeeded"
    assert any("INSERT INTO timeline_events" in s for s in recorded)  # the recorder wrote
    assert any("SET heartbeat_at" in s for s in recorded)  # and kept the request alive
    assert not [s for s in recorded if "FROM containment_requests" in s and "plan" in s]
    assert not [s for s in recorded if "action_steps.request_id IN" in s]


def test_partial_failure_records_error_then_retry_runs_only_what_is_left(database: Any) -> None:
    request_id = new_request(database)
    approve(database, request_id)
    outcome = execute(
        database=database,
        request_id=request_id,
        engine=FakeEngine(fail=["iam"]),
        context_factory=ctx_for,
    )
    assert outcome is not None and outcome.status == "partial"
    assert outcome.failed == [{"action": "iam", "error": "AccessDenied in X: not allowed"}]
    errors = [e for e in timeline(database) if e.kind == "containment.aws_error"]
    assert len(errors) == 1 and "AccessDenied" in errors[0].summary
    with database.read_session() as session:
        assert session.scalars(select(Incident)).one().status == "open"
        parent = session.get(ContainmentRequest, request_id)
        done = {
            r["action"]
            for r in done_results(session=session, request=parent)
            if r["status"] == "succeeded"
        }
    assert done == {"capture", "isolate", "tag"}

    # The retry: a new request whose plan is what is left, approved the same way.
    with database.session() as session:
        parent = session.get(ContainmentRequest, request_id)
        steps = [s for s in parent.plan["steps"] if s["action"] not in done]
        retry = request_containment(
            session=session,
            incident=session.get(Incident, parent.incident_id),
            target=parse_target(INSTANCE, region="us-east-1"),
            plan={"steps": steps},
            requested_by="W111",
            expire_after=dt.timedelta(minutes=30),
            kind="retry",
            parent=parent,
        ).request.id
    approve(database, retry)
    engine = FakeEngine()
    outcome = execute(database=database, request_id=retry, engine=engine, context_factory=ctx_for)
    assert outcome is not None and outcome.status == "succeeded"
    assert engine.runs == [["iam"]]
    with database.read_session() as session:
        assert session.scalars(select(Incident)).one().status == "contained"


def test_all_changing_steps_failed_is_failed(database: Any) -> None:
    request_id = new_request(database)
    approve(database, request_id)
    outcome = execute(
        database=database,
        request_id=request_id,
        engine=FakeEngine(fail=["isolate", "iam", "tag"]),
        context_factory=ctx_for,
    )
    assert outcome is not None and outcome.status == "failed"


def test_engine_crash_settles_as_failed_with_reason(database: Any) -> None:
    class Broken(FakeEngine):
        def run(self, **kw: Any) -> list[StepResult]:
            raise RuntimeError("executor bug")

    request_id = new_request(database)
    approve(database, request_id)
    outcome = execute(
        database=database, request_id=request_id, engine=Broken(), context_factory=ctx_for
    )
    assert outcome is not None and outcome.status == "failed"
    with database.read_session() as session:
        steps = session.scalars(select(ActionStep).where(ActionStep.request_id == request_id))
        assert {s.status for s in steps} == {"failed"}
    finished = next(e for e in timeline(database) if e.kind == "containment.finished")
    assert "executor bug" in finished.details


def test_dry_run_does_not_contain_incident(database: Any) -> None:
    request_id = new_request(database, dry_run=True)
    approve(database, request_id)
    outcome = execute(
        database=database, request_id=request_id, engine=FakeEngine(), context_factory=ctx_for
    )
    assert outcome is not None and outcome.dry_run
    with database.read_session() as session:
        assert session.scalars(select(Incident)).one().status == "open"
    events = timeline(database)
    assert any(e.kind == "containment.dry_run" for e in events)
    assert all(
        e.summary.startswith("[DRY RUN]") for e in events if e.kind.startswith("containment.step.")
    )


# -- restart recovery ------------------------------------------------------------------------


def test_recover_resumes_approved_and_interrupts_stale_running(database: Any) -> None:
    approved_id = new_request(database)
    approve(database, approved_id)
    with database.session() as session:  # a second incident's request left running
        incident = open_incident(session=session, title="key leak", created_by="W111")
        target = parse_target("AKIAABCDEFGHIJKLMNOP", region="us-east-1")
        running = request_containment(
            session=session,
            incident=incident,
            target=target,
            plan={"steps": [{"action": "deactivate", "calls": []}]},
            requested_by="W111",
            expire_after=dt.timedelta(minutes=30),
        ).request.id
    approve(database, running)
    assert claim(database=database, request_id=running)
    found = recover(database=database)  # its heartbeat is fresh: a live process runs it
    assert found.resume == [approved_id] and found.interrupted == []

    later = database.clock.now() + dt.timedelta(minutes=5)
    found = recover(database=database, now=lambda: later)
    assert found.interrupted == [running]
    row = request_row(database, running)
    assert row.status == "interrupted"
    with database.read_session() as session:
        step = session.scalars(select(ActionStep).where(ActionStep.request_id == running)).one()
        assert step.status == "interrupted"
    assert any(e.kind == "containment.interrupted" for e in timeline(database))
    # Resuming the approved one runs it exactly once.
    outcome = execute(
        database=database, request_id=approved_id, engine=FakeEngine(), context_factory=ctx_for
    )
    assert outcome is not None and outcome.status == "succeeded"
    assert recover(database=database, now=lambda: later).resume == []


def test_recover_settles_a_dead_run_that_recorded_every_step(database: Any) -> None:
    # kill -9 after the last step's result was committed, before the outcome was: the work
    # is done, so recovery settles it from the records instead of offering a Retry of nothing.
    request_id = new_request(database)
    approve(database, request_id)
    assert claim(database=database, request_id=request_id)
    with database.session() as session:
        for step in session.scalars(select(ActionStep).where(ActionStep.request_id == request_id)):
            step.status = "succeeded"
            step.result = {"action": step.action, "status": "succeeded"}
    later = database.clock.now() + dt.timedelta(minutes=5)
    found = recover(database=database, now=lambda: later)
    assert found.interrupted == [] and [o.request_id for o in found.settled] == [request_id]
    assert found.settled[0].status == "succeeded"
    assert request_row(database, request_id).status == "succeeded"
    with database.read_session() as session:
        assert session.scalars(select(Incident)).one().status == "contained"
    kinds = [e.kind for e in timeline(database)]
    assert kinds.count("containment.finished") == 1 and "containment.interrupted" not in kinds
    # Settled once: a second sweep (or another replica's) finds nothing left.
    again = recover(database=database, now=lambda: later + dt.timedelta(minutes=5))
    assert again.settled == [] and again.interrupted == []


# -- expiry through the reminder scheduler ---------------------------------------------------


def _deliver_due(database: Any, now: dt.datetime) -> list[Any]:
    from commands.approvals import expiry
    from commands.deadlines.delivery import prepare_delivery
    from commands.deadlines.policy import DeadlinePolicy
    from commands.deadlines.queue import claim_due

    with database.session() as session:
        claims = claim_due(session=session, now=now, worker_id="test")
    out = []
    for claimed in claims:
        with database.session() as session:
            out.append(
                prepare_delivery(
                    session=session,
                    claim=claimed,
                    now=now,
                    policy=DeadlinePolicy(),
                    kinds={expiry.KIND: expiry.deliver_expiry},
                )
            )
    return out


def test_expiry_reminder_expires_pending_request_once(database: Any) -> None:
    from storage.models import Reminder

    request_id = new_request(database, minutes=5)
    with database.read_session() as session:
        reminder = session.scalars(select(Reminder)).one()
        row = session.get(ContainmentRequest, request_id)
        assert (reminder.kind, reminder.due_at) == ("approval_expiry", row.expires_at)
    assert _deliver_due(database, database.clock.now()) == []  # not due yet
    deliveries = _deliver_due(database, database.clock.now() + dt.timedelta(minutes=5, seconds=1))
    assert len(deliveries) == 1 and deliveries[0] is not None
    text = delivery_text(deliveries[0])
    assert text.startswith("⌛ INC-") and f"#{request_id}" in text
    assert not deliveries[0].mention_contacts
    assert request_row(database, request_id).status == "expired"
    assert [e.kind for e in timeline(database)].count("containment.expired") == 1


def test_expiry_reminder_of_decided_request_posts_nothing(database: Any) -> None:
    from storage.models import Reminder

    request_id = new_request(database, minutes=5)
    approve(database, request_id)
    assert _deliver_due(database, database.clock.now() + dt.timedelta(minutes=6)) == [None]
    assert request_row(database, request_id).status == "approved"
    with database.read_session() as session:
        assert session.scalars(select(Reminder)).one().status == "cancelled"


def test_concurrent_requests_for_one_target_make_one_request(database: Any) -> None:
    with database.session() as session:
        open_incident(session=session, title="C2", created_by="W111", resource_id=INSTANCE)
    target = parse_target(INSTANCE, region="us-east-1")
    plan = FakeEngine().plan(
        target=target, ctx=ActionContext(now=TEST_CLOCK.now, incident_key="INC-1")
    )
    barrier = threading.Barrier(10)

    def ask(i: int) -> tuple[int, bool]:
        barrier.wait()
        with database.session() as session:
            created = request_containment(
                session=session,
                incident=session.scalars(select(Incident)).one(),
                target=target,
                plan=plan,
                requested_by=f"W{i}",
                expire_after=dt.timedelta(minutes=30),
            )
            return created.request.id, created.created

    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(ask, range(10)))
    assert len({rid for rid, _ in results}) == 1
    assert [created for _, created in results].count(True) == 1


def test_shutdown_interrupt_marks_running_request(database: Any) -> None:
    from commands.approvals.recovery import interrupt

    request_id = new_request(database)
    approve(database, request_id)
    assert interrupt(database=database, request_id=request_id) is False  # not running yet
    assert claim(database=database, request_id=request_id)
    assert interrupt(database=database, request_id=request_id) is True
    row = request_row(database, request_id)
    assert row.status == "interrupted"
    assert {s.status for s in row.steps} == {"interrupted"}
    assert any("cut short by a shutdown" in e.summary for e in timeline(database))
