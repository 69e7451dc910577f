"""Through the approval flow: faults that were retried away and missing evidence are on the
incident's timeline and in the outcome, not only in logs."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from commands.approvals import decide, execute, request_containment
from commands.approvals.engine import ContainmentEngine
from commands.approvals.plans import parse_target
from commands.incidents import open_incident
from containment import context as context_module
from containment.clients import shared_session
from containment.context import ActionContext
from containment.revoker.local import in_process_revoker
from storage.models import TimelineEvent
from tests.clock import TEST_CLOCK
from tests.reliability.conftest import Bench

pytestmark = pytest.mark.dates  # approvals expire relative to the clock


def approved_request(
    database: Any,
    engine: ContainmentEngine,
    world: Any,
    title: str,
    ctx: Callable[[str], ActionContext],
) -> tuple[int, str]:
    """An incident for `world`'s instance with an approved containment request: (id, key)."""
    target = parse_target(world.instance_id, region="us-east-1")
    with database.session() as session:
        incident = open_incident(
            session=session, title=title, created_by="W1", resource_id=world.instance_id
        )
        key = incident.key
        plan = engine.plan(target=target, ctx=ctx(key))
        request_id = request_containment(
            session=session,
            incident=incident,
            target=target,
            plan=plan,
            requested_by="W1",
            expire_after=dt.timedelta(minutes=30),
        ).request.id
    with database.session() as session:
        decide(session=session, request_id=request_id, actor="U2", approve=True, approvers=["U2"])
    return request_id, key


def test_retried_faults_and_missing_evidence_are_recorded(bench: Bench, database: Any) -> None:
    world = bench.fresh()
    engine = ContainmentEngine()
    request_id, key = approved_request(
        database, engine, world, "C2 from web-1", lambda key: bench.ctx(world, incident_key=key)
    )
    # The snapshot call runs in AWS but its answer is lost; one isolation call is throttled.
    bench.proxy.arm("CreateSnapshots", "drop")
    bench.proxy.arm("ModifyNetworkInterfaceAttribute", "throttle")
    outcome = execute(
        database=database,
        request_id=request_id,
        engine=engine,
        # A generous read timeout: only the injected faults, not a busy machine, retry here.
        context_factory=lambda _: bench.ctx(world, incident_key=key, read_timeout=10.0),
    )
    assert outcome is not None and outcome.status == "succeeded", outcome
    assert {s.operation for s in bench.proxy.injected()} == {
        "CreateSnapshots",
        "ModifyNetworkInterfaceAttribute",
    }
    snapshots = bench.direct.client("ec2").describe_snapshots(
        OwnerIds=["self"], Filters=[{"Name": "volume-id", "Values": world.volumes}]
    )["Snapshots"]
    assert len(snapshots) == len(world.volumes)  # one per volume, not two

    with database.read_session() as session:
        events = list(session.scalars(select(TimelineEvent).order_by(TimelineEvent.seq)))
    retried = {
        json.loads(e.details)["operation"]: e for e in events if e.kind == "containment.aws_retry"
    }
    assert {"CreateSnapshots", "ModifyNetworkInterfaceAttribute"} <= set(retried)
    assert "found what the lost attempt made" in retried["CreateSnapshots"].summary
    assert "RequestLimitExceeded" in retried["ModifyNetworkInterfaceAttribute"].summary

    # moto_server has no GetConsoleScreenshot: that evidence is missing, and said so.
    finished = next(e for e in events if e.kind == "containment.finished")
    missing = json.loads(finished.details)["missing_evidence"]
    assert [(m["action"], m["evidence"]) for m in missing] == [("capture", "screenshot")]
    assert "evidence missing: screenshot (capture)" in finished.summary
    assert outcome.missing_evidence == missing


def test_runs_on_the_bots_shared_clients_each_record_their_own_retries(
    bench: Bench, database: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the bot runs in its own account: no session of the test's, the endpoint from the
    environment, clients made by the first containment and reused by the next. Each
    request's retry is on the timeline under that request, not the other's."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", bench.proxy.url)
    made: list[str] = []
    real_make_client = context_module.make_client

    def counted(session: Any, service: str, *args: Any, **kwargs: Any) -> Any:
        made.append(service)
        return real_make_client(session, service, *args, **kwargs)

    monkeypatch.setattr(context_module, "make_client", counted)
    hooks = (in_process_revoker(TEST_CLOCK.now),)  # as runtime.options holds them: one tuple
    engine = ContainmentEngine()
    requests: dict[str, int] = {}
    for title, fault in (("first", "ModifyNetworkInterfaceAttribute"), ("second", "CreateTags")):
        world = bench.fresh()
        bench.proxy.clear_log()
        made.clear()

        def ctx(key: str, world: Any = world) -> Any:
            return bench.ctx(
                world,
                incident_key=key,
                session_factory=shared_session,
                client_hooks=hooks,
                read_timeout=10.0,
            )

        request_id, key = approved_request(database, engine, world, title, ctx)
        bench.proxy.arm(fault, "throttle")
        outcome = execute(
            database=database,
            request_id=request_id,
            engine=engine,
            context_factory=lambda _, key=key: ctx(key),
        )
        assert outcome is not None and outcome.status == "succeeded", outcome
        assert [s.operation for s in bench.proxy.injected()] == [fault]
        requests[fault] = request_id
        if title == "second":
            assert made == []  # every client the second run needed, the first one made

    with database.read_session() as session:
        events = list(session.scalars(select(TimelineEvent).order_by(TimelineEvent.seq)))
    retried = [json.loads(e.details) for e in events if e.kind == "containment.aws_retry"]
    assert sorted((r["operation"], r["request_id"]) for r in retried) == sorted(requests.items())
