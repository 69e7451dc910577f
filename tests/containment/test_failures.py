"""Failures: AccessDenied, throttling, an instance terminated mid-way, a missing resource.

The failing step records its error and the state it left; steps that do not need it still
run; a retry with the earlier results runs only what is left.
"""

from __future__ import annotations

import boto3
import pytest
from botocore.retries.standard import ExponentialBackoff

from containment.executor import run_plan
from containment.targets import Target
from tests.containment import helpers as h
from tests.containment.world import REGION


def statuses(results):
    return {n: r.status for n, r in results.items()}


def test_access_denied_fails_one_step_and_retry_finishes_it(
    world, instance, make_ctx, faults
) -> None:
    faults.fail(
        "ReplaceIamInstanceProfileAssociation",
        "UnauthorizedOperation",
        status=403,
        message="You are not authorized to perform this operation.",
    )
    first = run_plan(target=instance, ctx=make_ctx())
    iam = first["iam"]
    assert iam.status == "failed"
    assert iam.error["code"] == "UnauthorizedOperation"
    assert iam.error["kind"] == "access_denied"
    assert iam.state_left["profile_swapped"] is False
    # Old sessions were still revoked: that part did not need the swap.
    assert iam.state_left["revoked_roles"] == [world.role_name]
    assert all(s == "succeeded" for n, s in statuses(first).items() if n != "iam")
    iso = h.group_by_name("incident-bot-isolation", world.vpc_id)["GroupId"]
    assert h.eni_groups(world) == {eni: [iso] for eni in world.enis}
    assert h.profile_arn(world) == world.profile_arn

    faults.rules.clear()
    started: list[str] = []
    second = run_plan(
        target=instance,
        ctx=make_ctx(),
        previous=first,
        on_step=lambda name, ev, _: started.append(name) if ev == "started" else None,
    )
    assert started == ["iam"]
    assert second["iam"].status == "succeeded"
    assert h.profile_arn(world).endswith("/incident-bot-deny-all")
    # The retry's record keeps what the first attempt did, so rollback undoes both.
    assert second["iam"].changes["revoked_roles"] == {
        world.role_name: "incident-bot-revoke-sessions-INC-7"
    }
    assert second["iam"].changes["profile"]["before_arn"] == world.profile_arn
    assert {n: r for n, r in second.items() if n != "iam"} == {
        n: r for n, r in first.items() if n != "iam"
    }


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0.0)


def test_throttling_is_retried_by_botocore(world, instance, make_ctx, faults, no_backoff):
    faults.fail("ModifyNetworkInterfaceAttribute", "RequestLimitExceeded", times=3, status=503)
    results = run_plan(target=instance, ctx=make_ctx(retry_mode="standard", max_attempts=5))
    assert results["isolate"].status == "succeeded"
    assert faults.rules[0]["left"] == 0  # the throttled attempts really happened
    iso = h.group_by_name("incident-bot-isolation", world.vpc_id)["GroupId"]
    assert h.eni_groups(world) == {eni: [iso] for eni in world.enis}


def test_persistent_throttling_fails_the_step_and_only_its_dependents(
    world, instance, make_ctx, faults, no_backoff
) -> None:
    faults.fail("ModifyNetworkInterfaceAttribute", "RequestLimitExceeded", status=503)
    results = run_plan(target=instance, ctx=make_ctx(max_attempts=2))
    assert results["isolate"].status == "failed"
    assert results["isolate"].error["kind"] == "throttled"
    assert set(results["isolate"].state_left["enis"]) == set(world.enis)
    for blocked in ("drop_transit", "tag"):
        assert results[blocked].status == "skipped"
        assert results[blocked].blocked_by == ["isolate"]
    for fine in ("protect", "snapshot", "asg", "lb", "iam", "evidence", "isolation_groups"):
        assert results[fine].status == "succeeded", (fine, results[fine].error)


def test_lb_failure_does_not_stop_isolation(world, instance, make_ctx, faults) -> None:
    faults.fail(
        "DeregisterInstancesFromLoadBalancer",
        "LoadBalancerNotFound",
        message="There is no ACTIVE Load Balancer named 'web-classic'",
    )
    results = run_plan(target=instance, ctx=make_ctx())
    lb = results["lb"]
    assert lb.status == "failed" and lb.error["kind"] == "not_found"
    assert lb.state_left["still_registered"] == [world.classic_elb]
    # The target groups were still deregistered, and recorded for rollback.
    assert set(lb.changes["target_groups"]) == {world.instance_tg, world.ip_tg}
    assert results["isolate"].status == "succeeded"
    assert results["tag"].status == "succeeded"


def test_instance_terminated_mid_way(world, instance, make_ctx, faults) -> None:
    ec2 = boto3.client("ec2", region_name=REGION)

    def terminate() -> None:  # someone terminates it while we isolate
        ec2.modify_instance_attribute(
            InstanceId=world.instance_id, DisableApiTermination={"Value": False}
        )
        ec2.terminate_instances(InstanceIds=[world.instance_id])

    # Real AWS deletes the ENIs of a terminated instance; moto keeps them, so answer as AWS.
    faults.fail(
        "ModifyNetworkInterfaceAttribute",
        "InvalidNetworkInterfaceID.NotFound",
        times=1,
        before=terminate,
    )
    faults.fail("ModifyNetworkInterfaceAttribute", "InvalidNetworkInterfaceID.NotFound")
    results = run_plan(target=instance, ctx=make_ctx())
    assert results["isolate"].status == "failed"
    assert results["isolate"].error["kind"] == "not_found"
    assert results["isolate"].state_left["enis"] == {e: "original" for e in world.enis}

    retried = run_plan(target=instance, ctx=make_ctx(), previous=results)
    for name in ("isolate", "drop_transit", "tag"):
        assert retried[name].status == "failed"
        assert retried[name].error["code"] == "InstanceTerminated"
        assert retried[name].error["kind"] == "instance_gone"
    assert retried["snapshot"] == results["snapshot"]  # done work is not repeated


def test_missing_instance_blocks_everything_after_capture(make_ctx) -> None:
    target = Target(kind="instance", resource_id="i-0123456789abcdef0", region=REGION)
    results = run_plan(target=target, ctx=make_ctx())
    assert results["capture"].status == "failed"
    assert results["capture"].error["code"] == "InvalidInstanceID.NotFound"
    assert results["capture"].error["kind"] == "not_found"
    rest = [r for n, r in results.items() if n != "capture"]
    assert rest and all(r.status == "skipped" and r.blocked_by for r in rest)


def test_a_failing_progress_reporter_does_not_stop_the_containment(
    world, instance, make_ctx, caplog
) -> None:
    def on_step(name, event, _result) -> None:
        if name == "protect":
            raise RuntimeError("timeline unavailable")

    results = run_plan(target=instance, ctx=make_ctx(), on_step=on_step)
    assert all(r.status == "succeeded" for r in results.values())
    assert "timeline unavailable" in caplog.text
