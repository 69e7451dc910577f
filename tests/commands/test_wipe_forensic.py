"""The wipe reaches the forensic account (moto, two accounts through AssumeRole): the clean
room is found and deleted where /forensics built it, the snapshot copies there are deleted one
by one, the incident's own key there is scheduled for deletion and the configured forensic
copy key is left alone; every deletion says which account it acted in."""

from __future__ import annotations

import datetime as dt
from typing import Any

import boto3
from sqlalchemy import select

from commands.approvals import decide, execute
from commands.forensics import CleanRoomEngine, propose, stack_name
from commands.incidents import get_incident, resolve_incident
from commands.wipe import WipeEngine, propose_wipe
from containment.tags import INCIDENT_TAG
from storage.models import ContainmentRequest, TimelineEvent
from tests.commands.test_forensic_account import FORENSIC, IMAGE, accounts, ctx

__all__ = ["accounts"]  # the two-account moto fixture
HOUR = dt.timedelta(hours=1)


def run(database: Any, request_id: int, engine: Any, key_arn: str) -> Any:
    with database.session() as s:
        assert decide(
            session=s, request_id=request_id, actor="U2", approve=True, approvers=["U2"]
        ).won
    return execute(
        database=database,
        request_id=request_id,
        engine=engine,
        context_factory=lambda r: ctx(key_arn),
        heartbeat_every=60,
    )


def copies(forensic: boto3.Session) -> list[str]:
    found = forensic.client("ec2").describe_snapshots(
        OwnerIds=["self"], Filters=[{"Name": f"tag:{INCIDENT_TAG}", "Values": ["INC-1"]}]
    )["Snapshots"]
    return sorted(s["SnapshotId"] for s in found)


def test_the_wipe_deletes_the_clean_room_and_copies_in_the_forensic_account(
    database: Any, accounts: dict[str, Any]
) -> None:
    forensic = accounts["forensic"]
    key_arn = accounts["key"]
    room = propose(
        db=database,
        ctx=ctx(key_arn),
        incident_key="INC-1",
        teardown=False,
        requested_by="U1",
        expire_after=HOUR,
        ami_id=IMAGE,
    )
    cleanroom = CleanRoomEngine(database=database, poll_seconds=0)
    built = run(database, room.request_id, cleanroom, key_arn)
    assert built.status == "succeeded", built.failed
    made = copies(forensic)
    assert len(made) == 2
    fkms = forensic.client("kms")
    # The configured copy key is tagged too (a careless operator's tag): still never deleted.
    fkms.tag_resource(KeyId=key_arn, Tags=[{"TagKey": INCIDENT_TAG, "TagValue": "INC-1"}])
    own = fkms.create_key(Tags=[{"TagKey": INCIDENT_TAG, "TagValue": "INC-1"}])["KeyMetadata"]
    with database.session() as s:
        resolve_incident(
            session=s, incident=get_incident(session=s, key="INC-1"), actor="U1", summary="done"
        )

    proposed = propose_wipe(
        db=database,
        ctx=ctx(key_arn),
        incident_key="INC-1",
        requested_by="U1",
        expire_after=HOUR,
        kms_pending_days=7,
    )
    with database.read_session() as s:
        plan = s.get(ContainmentRequest, proposed.request_id).plan
    steps = {st["action"]: st for st in plan["steps"]}
    # The stack is found where it was built: the forensic account, not the incident's.
    [stack_call] = steps["delete_clean_room"]["calls"]
    assert stack_call["text"] == (
        f"cloudformation.DeleteStack(StackName={stack_name('INC-1')})"
        f"  # in forensic account {FORENSIC}"
    )
    assert sorted(c["text"] for c in steps["delete_forensic_copies"]["calls"]) == [
        f"ec2.DeleteSnapshot(SnapshotId={c})  # in forensic account {FORENSIC}" for c in made
    ]
    assert [c["text"].split("KeyId=")[1] for c in steps["schedule_key_deletion"]["calls"]] == [
        f"{own['KeyId']}, PendingWindowInDays=7)"
    ]
    left = {(s["what"], s["why"]) for s in plan["items"]["skipped"]}
    assert ("kms key", "the configured forensic copy key") in left
    assert copies(forensic) == made  # nothing before approval

    outcome = run(
        database, proposed.request_id, WipeEngine(database=database, clean_room=cleanroom), key_arn
    )
    assert outcome.status == "succeeded", outcome.failed
    fcfn = forensic.client("cloudformation")
    stack = fcfn.describe_stacks(StackName=plan["items"]["stacks"][0]["id"])["Stacks"][0]
    assert stack["StackStatus"] == "DELETE_COMPLETE"
    assert copies(forensic) == []
    ec2 = boto3.client("ec2", "us-east-1")
    assert (
        ec2.describe_snapshots(
            OwnerIds=["self"], Filters=[{"Name": f"tag:{INCIDENT_TAG}", "Values": ["INC-1"]}]
        )["Snapshots"]
        == []
    )
    assert fkms.describe_key(KeyId=own["KeyId"])["KeyMetadata"]["KeyState"] == "PendingDeletion"
    assert fkms.describe_key(KeyId=key_arn)["KeyMetadata"]["KeyState"] == "Enabled"
    # Step by step on the timeline, each copy with the account it was deleted in.
    with database.read_session() as s:
        inc = get_incident(session=s, key="INC-1")
        deleted = [
            e.summary
            for e in s.scalars(
                select(TimelineEvent)
                .where(TimelineEvent.incident_id == inc.id, TimelineEvent.kind == "wipe.deleted")
                .order_by(TimelineEvent.seq)
            )
        ]
    assert (
        deleted[0]
        == f"Deleted clean-room stack {stack_name('INC-1')} in forensic account {FORENSIC}"
    )
    copy_lines = [d for d in deleted if d.startswith("Deleted forensic copy")]
    assert len(copy_lines) == 2
    assert all(f"in forensic account {FORENSIC}" in d for d in copy_lines)
    assert {d.split()[3] for d in copy_lines} == set(made)
    # The manifest carries the incident tag, so the wipe removed it with the evidence.
    s3 = forensic.client("s3")
    listed = s3.list_object_versions(Bucket="forensic-evidence", Prefix="incidents/INC-1/")
    assert listed.get("Versions", []) == []


def encrypted_snapshot() -> str:
    """A customer-managed key in the incident's account and a snapshot under it (tagged):
    /forensics grants the forensic role that key for the copy."""
    key = boto3.client("kms", "us-east-1").create_key(Description="app volumes")["KeyMetadata"]
    ec2 = boto3.client("ec2", "us-east-1")
    vol = ec2.create_volume(
        AvailabilityZone="us-east-1b", Size=8, Encrypted=True, KmsKeyId=key["Arn"]
    )["VolumeId"]
    ec2.create_snapshot(
        VolumeId=vol,
        TagSpecifications=[
            {"ResourceType": "snapshot", "Tags": [{"Key": INCIDENT_TAG, "Value": "INC-1"}]}
        ],
    )
    return str(key["Arn"])


def grants_on(key: str) -> list[dict[str, Any]]:
    return boto3.client("kms", "us-east-1").list_grants(KeyId=key)["Grants"]


def forensics_then_wipe_plan(database: Any, accounts: dict[str, Any], source_key: str) -> Any:
    """/forensics (its share step grants the source key), resolve, then the wipe's request."""
    room = propose(
        db=database,
        ctx=ctx(accounts["key"]),
        incident_key="INC-1",
        teardown=False,
        requested_by="U1",
        expire_after=HOUR,
        ami_id=IMAGE,
    )
    built = run(
        database,
        room.request_id,
        CleanRoomEngine(database=database, poll_seconds=0),
        accounts["key"],
    )
    assert built.status == "succeeded", built.failed
    [grant] = grants_on(source_key)
    assert grant["Name"] == "incident-bot-INC-1-forensic-copy"
    with database.session() as s:
        resolve_incident(
            session=s, incident=get_incident(session=s, key="INC-1"), actor="U1", summary="done"
        )
    proposed = propose_wipe(
        db=database,
        ctx=ctx(accounts["key"]),
        incident_key="INC-1",
        requested_by="U1",
        expire_after=HOUR,
        kms_pending_days=7,
    )
    return proposed, grant


def wipe_events(database: Any) -> list[tuple[str, str]]:
    with database.read_session() as s:
        inc = get_incident(session=s, key="INC-1")
        return [
            (e.kind, e.summary)
            for e in s.scalars(
                select(TimelineEvent)
                .where(TimelineEvent.incident_id == inc.id)
                .order_by(TimelineEvent.seq)
            )
            if e.kind.startswith("wipe.")
        ]


def test_the_wipe_revokes_the_grant_forensics_made(database: Any, accounts: dict[str, Any]) -> None:
    source_key = encrypted_snapshot()
    proposed, grant = forensics_then_wipe_plan(database, accounts, source_key)
    with database.read_session() as s:
        plan = s.get(ContainmentRequest, proposed.request_id).plan
    steps = {st["action"]: st for st in plan["steps"]}
    # In the plan before approval, with the grant's key and id.
    assert [c["text"] for c in steps["revoke_grants"]["calls"]] == [
        f"kms.RevokeGrant(KeyId={source_key}, GrantId={grant['GrantId']})"
    ]
    assert grants_on(source_key)  # nothing before approval

    engine = WipeEngine(
        database=database, clean_room=CleanRoomEngine(database=database, poll_seconds=0)
    )
    outcome = run(database, proposed.request_id, engine, accounts["key"])
    assert outcome.status == "succeeded", outcome.failed
    assert grants_on(source_key) == []
    revoked = [e for e in wipe_events(database) if "KMS grant" in e[1]]
    assert revoked == [
        (
            "wipe.deleted",
            f"Revoked KMS grant {grant['GrantId']} on key {source_key}: "
            f"{grant['GranteePrincipal']} can no longer use the key",
        )
    ]


def test_a_grant_already_revoked_is_recorded_as_such(
    database: Any, accounts: dict[str, Any]
) -> None:
    source_key = encrypted_snapshot()
    proposed, grant = forensics_then_wipe_plan(database, accounts, source_key)
    # Revoked by hand between the plan and the approval.
    boto3.client("kms", "us-east-1").revoke_grant(KeyId=source_key, GrantId=grant["GrantId"])
    engine = WipeEngine(
        database=database, clean_room=CleanRoomEngine(database=database, poll_seconds=0)
    )
    outcome = run(database, proposed.request_id, engine, accounts["key"])
    assert outcome.status == "succeeded", outcome.failed
    with database.read_session() as s:
        row = s.get(ContainmentRequest, proposed.request_id)
        step = next(st for st in row.steps if st.action == "revoke_grants")
        wiped = get_incident(session=s, key="INC-1").facts["wipe"]
    assert step.result["note"] == "deleted 0; 1 already gone"
    assert step.result["evidence"]["already_gone"] == [grant["GrantId"]]
    assert [e for e in wipe_events(database) if "KMS grant" in e[1]] == [
        (
            "wipe.already_gone",
            f"KMS grant {grant['GrantId']} on key {source_key} was already retired or revoked: "
            "nothing to revoke",
        )
    ]
    assert "grants" not in {d["type"] for d in wiped["deleted"]}  # not counted as done
    # A later wipe's plan leaves it out, and says why.
    from commands.wipe.inventory import Scope, inventory, recorded_grants

    with database.read_session() as s:
        recorded = recorded_grants(s, get_incident(session=s, key="INC-1").id)
    assert recorded == [{"id": grant["GrantId"], "key_arn": source_key}]
    again = inventory(
        ctx=ctx(accounts["key"]), scope=Scope("INC-1", "us-east-1", None), grants=recorded
    )
    assert again["grants"] == []
    assert {
        "what": "kms grant",
        "id": grant["GrantId"],
        "why": "already retired or revoked",
    } in again["skipped"]
