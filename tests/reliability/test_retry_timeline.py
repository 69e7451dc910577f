"""Through the approval flow: faults that were retried away and missing evidence are on the
incident's timeline and in the outcome, not only in logs."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from sqlalchemy import select

from commands.approvals import decide, execute, request_containment
from commands.approvals.engine import ContainmentEngine
from commands.approvals.plans import parse_target
from commands.incidents import open_incident
from storage.models import TimelineEvent
from tests.reliability.conftest import Bench

pytestmark = pytest.mark.dates  # approvals expire relative to the clock


def test_retried_faults_and_missing_evidence_are_recorded(bench: Bench, database: Any) -> None:
    world = bench.fresh()
    engine = ContainmentEngine()
    target = parse_target(world.instance_id, region="us-east-1")
    with database.session() as session:
        incident = open_incident(
            session=session, title="C2 from web-1", created_by="W1", resource_id=world.instance_id
        )
        key = incident.key
        plan = engine.plan(target=target, ctx=bench.ctx(world, incident_key=key))
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
