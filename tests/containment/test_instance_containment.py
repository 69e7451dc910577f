"""Full EC2 instance containment against moto: order, effects, idempotency, rollback."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from containment.executor import plan_all, rollback_plan, run_plan
from containment.registry import StepResult
from containment.tags import INCIDENT_TAG, STATUS_TAG
from tests.containment import helpers as h
from tests.containment.world import REGION

STEPS = [
    "capture",
    "evidence",
    "protect",
    "snapshot",
    "asg",
    "lb",
    "isolation_groups",
    "isolate",
    "drop_transit",
    "iam",
    "tag",
]


@pytest.fixture
def contained(world, instance, make_ctx, calls) -> dict[str, Any]:
    """One full containment, with its step events, shared by the assertions below."""
    events: list[tuple[str, str]] = []
    ctx = make_ctx()
    results = run_plan(
        target=instance, ctx=ctx, on_step=lambda name, ev, _: events.append((name, ev))
    )
    return {"results": results, "events": events, "ctx": ctx}


def test_plan_reads_only_and_lists_every_step(world, instance, make_ctx, calls) -> None:
    planned = plan_all(target=instance, ctx=make_ctx())
    assert [a.name for a, _ in planned] == STEPS
    assert calls.calls and all(c.is_read for c in calls.calls), calls.writes()
    ops = {a.name: [c.operation for c in cs] for a, cs in planned}
    assert ops["isolate"] == ["ModifyNetworkInterfaceAttribute"] * 4
    assert ops["snapshot"] == ["CreateSnapshots"]
    assert ops["lb"].count("DeregisterTargets") == 2  # the instance and the IP target group
    assert "ReplaceIamInstanceProfileAssociation" in ops["iam"]
    text = [str(c) for _, cs in planned for c in cs]
    assert any(world.enis[1] in t and "transit" in t for t in text)
    assert h.eni_groups(world) == world.eni_groups  # nothing changed


def test_second_run_changes_nothing(world, instance, make_ctx, contained, calls) -> None:
    # A fresh plan sees the work done: no step but the evidence upload has a call to make.
    planned = {a.name: cs for a, cs in plan_all(target=instance, ctx=make_ctx())}
    assert {n for n, cs in planned.items() if any(c.mutating for c in cs)} == {"evidence"}
    calls.clear()
    again = run_plan(target=instance, ctx=make_ctx())
    assert all(r.status in ("succeeded", "skipped") for r in again.values())
    assert all(not r.changes for r in again.values()), {n: r.changes for n, r in again.items()}
    # Only a fresh evidence object (a new capture is new evidence) is written.
    # Evidence only (a new capture also adds its hash to the manifest).
    assert {c.action for c in calls.writes()} == {"s3:PutObject"}

    calls.clear()
    resumed = run_plan(target=instance, ctx=make_ctx(), previous=contained["results"])
    assert resumed == contained["results"]
    assert calls.calls == []  # nothing left to do: not even a read


def test_rollback_restores_what_was_changed(world, instance, make_ctx, contained) -> None:
    ctx = make_ctx()
    undone = rollback_plan(target=instance, ctx=ctx, results=contained["results"])
    assert {n: r.status for n, r in undone.items()} == {
        "tag": "succeeded",
        "iam": "succeeded",
        "isolate": "succeeded",
        "isolation_groups": "succeeded",
        "lb": "succeeded",
        "asg": "succeeded",
    }, {n: (r.status, r.error) for n, r in undone.items()}
    assert h.eni_groups(world) == world.eni_groups
    assert h.profile_arn(world) == world.profile_arn
    assert h.asg_state(world) == ("InService", 1)
    assert h.tg_targets(world.instance_tg) == [{"Id": world.instance_id, "Port": 80}]
    assert h.tg_targets(world.ip_tg) == [{"Id": world.ip_target, "Port": 8080}]
    assert h.classic_instances(world.classic_elb) == [world.instance_id]
    assert INCIDENT_TAG not in h.tags_of(world.instance_id)
    assert all(INCIDENT_TAG not in h.tags_of(v) for v in world.volumes)
    assert h.group_by_name("incident-bot-isolation", world.vpc_id) is None  # ours, unused
    # Snapshots stay, still findable by the incident tag (the wipe uses it).
    snaps = h.incident_snapshots("INC-7")
    assert len(snaps) == 3
    assert all(STATUS_TAG not in {t["Key"] for t in s["Tags"]} for s in snaps)


def test_dry_run_calls_nothing_that_changes(world, instance, make_ctx, calls) -> None:
    results = run_plan(target=instance, ctx=make_ctx(dry_run=True))
    assert results["capture"].status == "succeeded"
    others = [r for n, r in results.items() if n != "capture"]
    assert all(r.status == "skipped" and r.dry_run for r in others)
    assert results["isolate"].planned and results["tag"].planned
    assert all(c.is_read for c in calls.calls), calls.writes()
    assert h.eni_groups(world) == world.eni_groups
    # A later real run does not take the dry run for work done.
    real = run_plan(target=instance, ctx=make_ctx(), previous=results)
    assert real["isolate"].status == "succeeded"


def test_results_survive_json_round_trip_for_retry(world, instance, make_ctx, contained) -> None:
    stored = json.loads(json.dumps({n: r.to_dict() for n, r in contained["results"].items()}))
    restored = {n: StepResult.from_dict(d) for n, d in stored.items()}
    assert restored == contained["results"]
    undone = rollback_plan(target=instance, ctx=make_ctx(), results=restored)
    assert undone["isolate"].status == "succeeded"
    assert h.eni_groups(world) == world.eni_groups


def test_reused_isolation_group_is_kept_on_rollback(world, instance, make_ctx) -> None:
    ec2 = boto3.client("ec2", region_name=REGION)
    existing = ec2.create_security_group(
        GroupName="incident-bot-isolation", Description="pre-made", VpcId=world.vpc_id
    )["GroupId"]
    results = run_plan(target=instance, ctx=make_ctx())
    assert h.eni_groups(world) == {eni: [existing] for eni in world.enis}
    # Its default egress rule was revoked even though it already existed.
    assert h.group_by_name("incident-bot-isolation", world.vpc_id)["IpPermissionsEgress"] == []
    rollback_plan(target=instance, ctx=make_ctx(), results=results)
    assert h.group_by_name("incident-bot-isolation", world.vpc_id)["GroupId"] == existing


def _ingress_cidrs(group: dict) -> set[str]:
    return {
        r.get("CidrIp") or r.get("CidrIpv6")
        for p in group["IpPermissions"]
        for r in [*p.get("IpRanges", []), *p.get("Ipv6Ranges", [])]
    }


def test_examiner_cidrs_stay_admitted_by_a_new_isolation_group(world, instance, make_ctx) -> None:
    ctx = make_ctx(examiner_cidrs=("198.51.100.0/24",))
    plan = {a.name: planned for a, planned in plan_all(target=instance, ctx=ctx)}
    admits = [c for c in plan["isolation_groups"] if c.operation == "AuthorizeSecurityGroupIngress"]
    assert any("examiner" in (c.note or "") for c in admits)
    run_plan(target=instance, ctx=ctx)
    iso = h.group_by_name("incident-bot-isolation", world.vpc_id)
    assert _ingress_cidrs(iso) == {"198.51.100.0/24"}
    assert iso["IpPermissionsEgress"] == []  # stateful: replies to examiners need no egress
    assert h.eni_groups(world) == {eni: [iso["GroupId"]] for eni in world.enis}


def test_a_reused_isolation_group_loses_strangers_but_keeps_examiners(
    world, instance, make_ctx
) -> None:
    ec2 = boto3.client("ec2", region_name=REGION)
    existing = ec2.create_security_group(
        GroupName="incident-bot-isolation", Description="pre-made", VpcId=world.vpc_id
    )["GroupId"]
    ec2.authorize_security_group_ingress(
        GroupId=existing,
        IpPermissions=[
            {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "198.51.100.0/24"}]},
            {
                "IpProtocol": "tcp",
                "FromPort": 22,
                "ToPort": 22,
                "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
            },
        ],
    )
    run_plan(target=instance, ctx=make_ctx(examiner_cidrs=("198.51.100.0/24", "203.0.113.8/32")))
    iso = h.group_by_name("incident-bot-isolation", world.vpc_id)
    assert _ingress_cidrs(iso) == {"198.51.100.0/24", "203.0.113.8/32"}
