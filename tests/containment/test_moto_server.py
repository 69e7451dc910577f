"""A full containment and rollback through moto_server over real HTTP (not in-process mocks)."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest

from bench._proxy import MotoServer
from containment.context import ActionContext
from containment.executor import rollback_plan, run_plan
from containment.revoker.local import in_process_revoker
from containment.targets import Target
from tests.clock import TEST_CLOCK
from tests.containment import helpers as h
from tests.containment.world import REGION, build_world


@pytest.fixture(scope="module")
def server() -> Iterator[MotoServer]:
    with MotoServer() as srv:
        yield srv


def test_containment_over_http(server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.url)  # boto3 sends every service there
    http = boto3.Session(region_name=REGION)  # fresh: reads the endpoint from the environment
    world = build_world(http)
    ctx = ActionContext(
        now=TEST_CLOCK.now,
        incident_key="INC-12",
        evidence_bucket=world.bucket,
        session_factory=lambda: http,
        client_hooks=(in_process_revoker(TEST_CLOCK.now),),
    )
    target = Target(kind="instance", resource_id=world.instance_id, region=REGION)
    results = run_plan(target=target, ctx=ctx)
    assert all(r.status == "succeeded" for r in results.values()), {
        n: r.error for n, r in results.items() if r.status != "succeeded"
    }
    iso = h.group_by_name("incident-bot-isolation", world.vpc_id, http)
    assert iso is not None and iso["IpPermissionsEgress"] == []
    assert h.eni_groups(world, http) == {eni: [iso["GroupId"]] for eni in world.enis}
    assert h.asg_state(world, http) == ("Standby", 0)
    assert h.classic_instances(world.classic_elb, http) == []

    undone = rollback_plan(target=target, ctx=ctx, results=results)
    assert all(r.status == "succeeded" for r in undone.values())
    assert h.eni_groups(world, http) == world.eni_groups
    assert h.tg_targets(world.instance_tg, http) == [{"Id": world.instance_id, "Port": 80}]
