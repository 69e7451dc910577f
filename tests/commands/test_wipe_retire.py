"""`/incident wipe INC-N terminate`: the contained instance is retired after its evidence is
safe, protection off then terminated, each recorded; refused in one sentence otherwise.
A real containment (moto) protects, snapshots and tags the instance first."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from sqlalchemy import select

from commands.approvals import decide, execute, request_containment
from commands.approvals.engine import ContainmentEngine
from commands.errors import UserError
from commands.incidents import get_incident, open_incident, resolve_incident
from commands.wipe import WipeEngine, propose_wipe
from containment.context import ActionContext
from containment.revoker.local import in_process_revoker
from containment.targets import Target
from storage.models import TimelineEvent
from tests.clock import TEST_CLOCK
from tests.containment.world import REGION, World, build_world

HOUR = dt.timedelta(hours=1)
KEY = "INC-1"


def ctx(**kw: Any) -> ActionContext:
    # moto runs no Lambda code: incident-bot-revoker runs in this process.
    hooks = (in_process_revoker(TEST_CLOCK.now),)
    return ActionContext(now=TEST_CLOCK.now, incident_key=KEY, client_hooks=hooks, **kw)


def approve_and_run(database: Any, request_id: int, engine: Any) -> Any:
    with database.session() as s:
        assert decide(
            session=s, request_id=request_id, actor="U2", approve=True, approvers=["U2"]
        ).won
    return execute(
        database=database,
        request_id=request_id,
        engine=engine,
        context_factory=lambda r: ctx(),
        heartbeat_every=60,
    )


@pytest.fixture
def world(database: Any) -> Iterator[World]:
    with mock_aws():
        w = build_world()
        with database.session() as s:
            open_incident(
                session=s, title="web-1", created_by="U1", resource_id=w.instance_id, region=REGION
            )
        yield w


def contain(database: Any, w: World) -> None:
    engine = ContainmentEngine()
    target = Target(kind="instance", resource_id=w.instance_id, region=REGION)
    with database.session() as s:
        created = request_containment(
            session=s,
            incident=get_incident(session=s, key=KEY),
            target=target,
            plan=engine.plan(target=target, ctx=ctx()),
            requested_by="U1",
            expire_after=HOUR,
        )
        request_id = created.request.id
    outcome = approve_and_run(database, request_id, engine)
    assert outcome.status == "succeeded", outcome.failed


def resolve(database: Any) -> None:
    with database.session() as s:
        resolve_incident(
            session=s, incident=get_incident(session=s, key=KEY), actor="U1", summary="done"
        )


def wipe(database: Any, **kw: Any) -> Any:
    return propose_wipe(
        db=database,
        ctx=ctx(),
        incident_key=KEY,
        requested_by="U1",
        expire_after=HOUR,
        kms_pending_days=7,
        **kw,
    )


def state(w: World) -> str:
    found = boto3.client("ec2", REGION).describe_instances(InstanceIds=[w.instance_id])[
        "Reservations"
    ][0]
    return str(found["Instances"][0]["State"]["Name"])


def test_contained_instance_is_retired_step_by_step(database: Any, world: World) -> None:
    contain(database, world)
    resolve(database)
    protected = boto3.client("ec2", REGION).describe_instance_attribute(
        InstanceId=world.instance_id, Attribute="disableApiTermination"
    )["DisableApiTermination"]["Value"]
    assert protected  # the containment's protect step
    proposed = wipe(database, terminate=True)
    from storage.models import ContainmentRequest

    with database.read_session() as s:
        plan = s.get(ContainmentRequest, proposed.request_id).plan
    first = plan["steps"][0]
    assert first["action"] == "terminate_instance"
    assert [c["operation"] for c in first["calls"]] == [
        "ModifyInstanceAttribute",
        "TerminateInstances",
    ]
    assert state(world) == "running"  # nothing before approval

    outcome = approve_and_run(database, proposed.request_id, WipeEngine(database=database))
    assert outcome.status == "succeeded", outcome.failed
    assert state(world) in ("shutting-down", "terminated")
    with database.read_session() as s:
        inc = get_incident(session=s, key=KEY)
        events = s.scalars(
            select(TimelineEvent)
            .where(TimelineEvent.incident_id == inc.id)
            .order_by(TimelineEvent.seq)
        ).all()
    kinds = [(e.kind, e.summary) for e in events if e.kind.startswith("wipe.")]
    assert kinds[0] == (
        "wipe.protection_off",
        f"Turned termination protection off on {world.instance_id}, to terminate it",
    )
    assert kinds[1][0] == "wipe.deleted"
    assert kinds[1][1].startswith(f"Terminated the isolated instance {world.instance_id}")


def test_an_instance_this_incident_did_not_protect_is_refused(database: Any, world: World) -> None:
    resolve(database)
    with pytest.raises(UserError) as refused:
        wipe(database, terminate=True)
    # Not tagged by this incident (never contained): one sentence, nothing requested.
    assert refused.value.message.count(". ") == 0
    assert "does not carry the incident-bot:incident=INC-1 tag" in refused.value.message
    boto3.client("ec2", REGION).create_tags(
        Resources=[world.instance_id], Tags=[{"Key": "incident-bot:incident", "Value": KEY}]
    )
    with pytest.raises(UserError, match="termination protection was not turned on by INC-1"):
        wipe(database, terminate=True)
    assert state(world) == "running"
