"""One full EC2 instance containment against moto, then assertions on what it left.

The containment runs once for this module (module-scoped moto); the tests only read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from moto import mock_aws

from containment.context import ActionContext
from containment.executor import run_plan
from containment.revoker.local import in_process_revoker
from containment.tags import INCIDENT_TAG, STATUS_TAG
from containment.targets import Target
from tests.clock import TEST_CLOCK
from tests.containment import helpers as h
from tests.containment.conftest import CallLog
from tests.containment.test_instance_containment import STEPS
from tests.containment.world import REGION, World, build_world


@pytest.fixture(scope="module")
def shared() -> Iterator[dict[str, Any]]:
    with mock_aws():
        world = build_world()
        log = CallLog()
        ctx = ActionContext(
            now=TEST_CLOCK.now,
            incident_key="INC-7",
            finding_id="gd-finding-1",
            evidence_bucket=world.bucket,
            evidence_kms_key_id=world.kms_key_id,
            client_hooks=(log.hook, in_process_revoker(TEST_CLOCK.now)),
        )
        events: list[tuple[str, str]] = []
        target = Target(kind="instance", resource_id=world.instance_id, region=REGION)
        results = run_plan(
            target=target, ctx=ctx, on_step=lambda name, ev, _: events.append((name, ev))
        )
        yield {"world": world, "results": results, "events": events, "calls": log}


@pytest.fixture
def world(shared: dict[str, Any]) -> World:
    return shared["world"]


@pytest.fixture
def contained(shared: dict[str, Any]) -> dict[str, Any]:
    return shared


def test_every_step_succeeds_in_dependency_order(contained) -> None:
    results, events = contained["results"], contained["events"]
    assert list(results) == STEPS
    assert {n: r.status for n, r in results.items()} == {n: "succeeded" for n in STEPS}, {
        n: (r.status, r.error, r.note) for n, r in results.items()
    }
    finished = {n: i for i, (n, ev) in enumerate(events) if ev != "started"}
    started = {n: i for i, (n, ev) in enumerate(events) if ev == "started"}
    assert all(started[n] > finished["capture"] for n in STEPS if n != "capture")
    assert started["isolate"] > max(finished["asg"], finished["lb"], finished["protect"])
    assert started["tag"] > max(finished["isolate"], finished["snapshot"])
    json.dumps({n: r.to_dict() for n, r in results.items()})  # storable as timeline details


def test_each_eni_ends_in_the_isolation_group_only(world, contained) -> None:
    iso = h.group_by_name("incident-bot-isolation", world.vpc_id)
    assert iso is not None
    assert h.eni_groups(world) == {eni: [iso["GroupId"]] for eni in world.enis}
    assert iso["IpPermissions"] == []
    assert iso["IpPermissionsEgress"] == []  # default egress revoked
    assert h.tags_of(iso["GroupId"])[INCIDENT_TAG] == "INC-7"
    # The all-open transit group was only a hop: it is gone again.
    assert h.group_by_name("incident-bot-untracked-INC-7", world.vpc_id) is None
    changes = contained["results"]["isolate"].changes["enis"]
    assert changes == world.eni_groups


def test_instance_is_protected_snapshotted_and_out_of_asg_and_lbs(world, contained) -> None:
    ec2 = h.client("ec2")
    iid = world.instance_id
    assert (
        ec2.describe_instance_attribute(InstanceId=iid, Attribute="disableApiTermination")[
            "DisableApiTermination"
        ]["Value"]
        is True
    )
    assert (
        ec2.describe_instance_attribute(
            InstanceId=iid, Attribute="instanceInitiatedShutdownBehavior"
        )["InstanceInitiatedShutdownBehavior"]["Value"]
        == "stop"
    )
    inst = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    assert all(not b["Ebs"]["DeleteOnTermination"] for b in inst["BlockDeviceMappings"])

    snaps = h.incident_snapshots("INC-7")
    assert sorted(s["VolumeId"] for s in snaps) == sorted(world.volumes)
    assert all({"Key": "incident-bot:finding", "Value": "gd-finding-1"} in s["Tags"] for s in snaps)

    assert h.asg_state(world) == ("Standby", 0)  # desired capacity decremented
    assert h.tg_targets(world.instance_tg) == []
    assert h.tg_targets(world.ip_tg) == []
    assert h.classic_instances(world.classic_elb) == []


def test_credentials_are_cut(world, contained) -> None:
    assert h.profile_arn(world).endswith("instance-profile/incident-bot-deny-all")
    iam = h.client("iam")
    deny = iam.get_role_policy(RoleName="incident-bot-deny-all", PolicyName="incident-bot-deny-all")
    assert deny["PolicyDocument"]["Statement"][0]["Effect"] == "Deny"
    revoke = iam.get_role_policy(
        RoleName=world.role_name, PolicyName="incident-bot-revoke-sessions-INC-7"
    )["PolicyDocument"]["Statement"][0]
    assert revoke["Effect"] == "Deny" and revoke["Action"] == "*"
    assert "aws:TokenIssueTime" in revoke["Condition"]["DateLessThan"]


def test_everything_is_tagged_and_evidence_is_encrypted(world, contained) -> None:
    snaps = [s["SnapshotId"] for s in h.incident_snapshots("INC-7")]
    for rid in [world.instance_id, *world.volumes, *snaps]:
        tags = h.tags_of(rid)
        assert tags[INCIDENT_TAG] == "INC-7" and tags[STATUS_TAG] == "Isolated", rid
        assert tags["incident-bot:isolated-at"].endswith("Z")
    # Marks the snapshots as taken, so a later run does not take a second set.
    assert h.tags_of(world.instance_id)["incident-bot:snapshots-for"] == "INC-7"

    evidence = contained["results"]["evidence"].evidence
    s3 = h.client("s3")
    head = s3.head_object(Bucket=evidence["bucket"], Key=evidence["key"])
    assert head["ServerSideEncryption"] == "aws:kms"
    assert world.kms_key_id in head["SSEKMSKeyId"]
    body = json.loads(s3.get_object(Bucket=evidence["bucket"], Key=evidence["key"])["Body"].read())
    assert body["instance_id"] == world.instance_id
    assert {e["id"]: e["groups"] for e in body["enis"]} == world.eni_groups
    assert "console_output" in body
    assert body["asg"]["name"] == world.asg_name
    capture = contained["results"]["capture"].evidence
    assert capture["iam"]["profile_arn"] == world.profile_arn
    assert {g["arn"] for g in capture["target_groups"]} == {world.instance_tg, world.ip_tg}
    assert capture["classic_elbs"][0]["name"] == world.classic_elb
