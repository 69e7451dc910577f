"""Evidence that stands up, driven the way a responder would: signed requests over HTTP into
the HTTP-mode app, the fake Slack recording the Web API calls, moto for AWS.

- an evidence bucket without Object Lock: the approval card and the timeline say NOT LOCKED;
- `/incident wipe INC-N terminate` after a real containment: the plan card, the approval
  click, the instance terminated, protection off then terminate on the timeline; refused in
  one sentence for an instance this incident did not contain;
- `/forensics` with a forensic account (two moto accounts through AssumeRole): the card says
  which account each step acts in, and after the click the copies are in the forensic account.
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from sqlalchemy import select

from commands.forensics import stack_name
from commands.forensics.account import COPY_OF_TAG
from containment.tags import INCIDENT_TAG, tag_dict
from storage.models import ContainmentRequest, TimelineEvent
from tests.bot.test_containment_flow import (
    APPROVER1,
    REQUESTER,
    Env,
    blocks_text,
    buttons,
    card_message,
    click,
    contain,
    env,
    wait_status,
)
from tests.bot.test_investigation import Env as InvestigationEnv
from tests.bot.test_investigation import (
    approve,
    command,
    latest_request,
    open_with_card,
    reply,
    request_card,
)
from tests.bot.test_investigation import env as investigation_env
from tests.commands.test_forensic_account import FORENSIC, ROLE, forensic_session
from tests.moto_gaps import shared_snapshot_copies

__all__ = ["env", "investigation_env"]  # the two harnesses' fixtures
REGION = "us-east-1"


def events(bot: Any) -> list[TimelineEvent]:
    with bot.session() as s:
        return list(s.scalars(select(TimelineEvent).order_by(TimelineEvent.id)))


def contained(env: Env, config: dict[str, Any] | None = None) -> tuple[Any, ContainmentRequest]:
    bot = env.start(config)
    request_id, _ = contain(bot, f"{env.world.instance_id} beaconing to a known C2")
    assert click(bot, "containment_approve", request_id, APPROVER1) == 200
    row = wait_status(bot, request_id)
    assert row.status == "succeeded", [(s.action, s.status, s.error) for s in row.steps]
    return bot, row


def card_text(bot: Any, row: ContainmentRequest) -> str:
    return json.dumps(card_message(bot, row)["blocks"], ensure_ascii=False)


def slash(bot: Any, text: str, name: str) -> dict[str, Any]:
    response = bot.command(
        text, command="/incident", user_id=REQUESTER, response_url=bot.slack.response_url(name)
    )
    assert response.status_code == 200, response.text
    return response.json() if response.content else {}


def answer(bot: Any, name: str, needle: str) -> str:
    found = bot.slack.wait_for(
        "response_url",
        lambda c: c.path.endswith("/" + name) and needle in json.dumps(c.args),
        timeout=20,
    )
    return str(found.args.get("text", ""))


# -- Object Lock -----------------------------------------------------------------------------


def test_an_evidence_bucket_without_object_lock_is_called_not_locked(env: Env) -> None:
    bot, row = contained(env, {"containment": {"evidence_bucket": env.world.bucket}})
    said = f"NOT LOCKED: bucket {env.world.bucket} has no Object Lock, so the evidence is not"
    assert said in card_text(bot, row)  # the approval card, on the evidence step's line
    stored = [
        e
        for e in events(bot)
        if e.kind == "containment.step.succeeded" and json.loads(e.details)["action"] == "evidence"
    ]
    assert len(stored) == 1 and said in stored[0].summary
    assert json.loads(stored[0].details)["evidence"]["not_locked"].startswith(
        f"bucket {env.world.bucket} has no Object Lock"
    )


# -- retiring the instance -------------------------------------------------------------------


def instance_state(env: Env) -> str:
    found = boto3.client("ec2", REGION).describe_instances(InstanceIds=[env.world.instance_id])
    return str(found["Reservations"][0]["Instances"][0]["State"]["Name"])


def test_wipe_terminate_retires_the_contained_instance(env: Env) -> None:
    bot, _ = contained(env)
    iid = env.world.instance_id
    slash(bot, "resolve INC-1 reimaged from a clean AMI", "resolve")
    answer(bot, "resolve", "INC-1")
    bot.idle()

    assert slash(bot, "wipe INC-1 terminate", "wipe") == {}
    answer(bot, "wipe", "posted for approval")
    posted = bot.slack.wait_for(
        "chat.postMessage",
        lambda c: (
            "containment_approve" in blocks_text(c) and "TerminateInstances" in blocks_text(c)
        ),
        timeout=20,
    )
    flat = blocks_text(posted)
    assert f"ec2.ModifyInstanceAttribute(InstanceId={iid}, DisableApiTermination=false)" in flat
    assert f"ec2.TerminateInstances(InstanceIds=[{iid}])" in flat
    assert any(t.startswith("Approve") for t in buttons(posted.args))
    bot.idle()
    assert instance_state(env) == "running"  # nothing before the click
    with bot.session() as s:
        wipe = s.scalars(
            select(ContainmentRequest).where(ContainmentRequest.card_ts == posted.response["ts"])
        ).one()

    assert click(bot, "containment_approve", wipe.id, APPROVER1) == 200
    done = wait_status(bot, wipe.id)
    assert done.status == "succeeded", [(s.action, s.status, s.error) for s in done.steps]
    assert instance_state(env) in ("shutting-down", "terminated")
    steps = [(e.kind, e.summary) for e in events(bot) if e.kind.startswith("wipe.")]
    assert steps[0] == (
        "wipe.protection_off",
        f"Turned termination protection off on {iid}, to terminate it",
    )
    assert steps[1][0] == "wipe.deleted"
    assert steps[1][1].startswith(f"Terminated the isolated instance {iid}")
    assert "Succeeded" in card_text(bot, done)


def test_wipe_terminate_refuses_an_instance_this_incident_did_not_contain(env: Env) -> None:
    bot = env.start()
    iid = env.world.instance_id
    # An incident about the instance, never contained: no tag, no protection of its own.
    with bot.runtime.database.session() as s:
        from commands.incidents import get_incident, open_incident, resolve_incident

        open_incident(session=s, title="web-1", created_by=REQUESTER, resource_id=iid)
        resolve_incident(
            session=s, incident=get_incident(session=s, key="INC-1"), actor=REQUESTER, summary="x"
        )
    slash(bot, "wipe INC-1 terminate", "wipe-refused")
    text = answer(bot, "wipe-refused", "will not terminate it")
    assert text == (
        f"{iid} does not carry the incident-bot:incident=INC-1 tag, so incident-bot will not "
        "terminate it; terminate it by hand if it is yours."
    )
    bot.idle()
    assert instance_state(env) == "running"
    with bot.session() as s:
        assert s.scalars(select(ContainmentRequest)).all() == []  # nothing half-written


# -- the forensic account --------------------------------------------------------------------


@pytest.fixture
def forensic_account(investigation_env: InvestigationEnv) -> Any:
    with shared_snapshot_copies():
        forensic = forensic_session()
        key = forensic.client("kms").create_key(Description="forensic copies")["KeyMetadata"]
        forensic.client("s3").create_bucket(Bucket="forensic-evidence")
        yield {"session": forensic, "key": key["Arn"]}


def forensics_requested(env: InvestigationEnv, forensic_account: dict[str, Any]) -> Any:
    """The bot with a forensic account configured, an incident, and /forensics requested."""
    bot = env.start(
        {
            "forensics": {
                "account_id": FORENSIC,
                "role_name": ROLE,
                "kms_key_id": forensic_account["key"],
                "evidence_bucket": "forensic-evidence",
            }
        }
    )
    key = open_with_card(bot, env.world["victim"])
    assert command(bot, key, "forensics", command="/forensics") == {}
    reply(bot, "forensics", "posted for approval")
    return bot, key


def test_forensics_in_the_forensic_account_through_slack(
    investigation_env: InvestigationEnv, forensic_account: dict[str, Any]
) -> None:
    env = investigation_env
    snapshot = env.world["snapshot"]
    bot, key = forensics_requested(env, forensic_account)
    row = latest_request(bot, "forensics")
    flat = json.dumps(request_card(bot, row.id)["blocks"], ensure_ascii=False)
    # Which account each step acts in, on the card itself.
    assert "Share the snapshots with the forensic account " + FORENSIC in flat
    assert "(acts in the bot's own account)" in flat
    assert f"under the forensic account's own key (acts in account {FORENSIC})" in flat
    assert f"in the forensic account {FORENSIC}" in flat  # the stack
    assert (
        f"ec2.ModifySnapshotAttribute(SnapshotId={snapshot}, Attribute=createVolumePermission, "
        f"OperationType=add, UserIds=[{FORENSIC}])  # in the bot's own account"
    ) in flat
    assert f"ec2.CopySnapshot(SourceSnapshotId={snapshot}, Encrypted=True" in flat
    assert f"# in account {FORENSIC}" in flat
    fec2 = forensic_account["session"].client("ec2")
    mine = [{"Name": f"tag:{INCIDENT_TAG}", "Values": [key]}]
    assert fec2.describe_snapshots(OwnerIds=["self"], Filters=mine)["Snapshots"] == []

    done = approve(bot, row.id)
    assert done.status == "succeeded", [(s.action, s.status, s.error) for s in done.steps]
    copies = fec2.describe_snapshots(OwnerIds=["self"], Filters=mine)["Snapshots"]
    assert [tag_dict(c["Tags"])[COPY_OF_TAG] for c in copies] == [snapshot]
    assert copies[0]["KmsKeyId"] == forensic_account["key"]
    stack = (
        forensic_account["session"]
        .client("cloudformation")
        .describe_stacks(StackName=stack_name(key))["Stacks"][0]
    )
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    params = {p["ParameterKey"]: p["ParameterValue"] for p in stack["Parameters"]}
    assert params["SnapshotId1"] == copies[0]["SnapshotId"]  # built from the copy
    final = json.dumps(request_card(bot, row.id)["blocks"], ensure_ascii=False)
    assert f"{snapshot} (volume" in final and copies[0]["SnapshotId"] in final


def test_wipe_revokes_the_forensic_grant_through_slack(
    investigation_env: InvestigationEnv, forensic_account: dict[str, Any]
) -> None:
    """A snapshot under the incident account's own key: /forensics grants the forensic role
    that key for the copy; once resolved, `/incident wipe` shows the grant's revoke on the
    approval card, and after the click the grant is gone and the timeline says so."""
    env = investigation_env
    kms = boto3.client("kms", REGION)
    source_key = kms.create_key(Description="app volumes")["KeyMetadata"]["Arn"]
    ec2 = boto3.client("ec2", REGION)
    volume = ec2.create_volume(
        AvailabilityZone="us-east-1a", Size=8, Encrypted=True, KmsKeyId=source_key
    )["VolumeId"]
    ec2.create_snapshot(
        VolumeId=volume,
        TagSpecifications=[
            {"ResourceType": "snapshot", "Tags": [{"Key": INCIDENT_TAG, "Value": "INC-1"}]}
        ],
    )
    bot, key = forensics_requested(env, forensic_account)
    room = approve(bot, latest_request(bot, "forensics").id)
    assert room.status == "succeeded", [(s.action, s.status, s.error) for s in room.steps]
    [grant] = kms.list_grants(KeyId=source_key)["Grants"]

    command(bot, f"resolve {key} rebuilt from a clean image", "resolve")
    reply(bot, "resolve", key)
    assert command(bot, f"wipe {key}", "wipe") == {}
    reply(bot, "wipe", "posted for approval")
    row = latest_request(bot, "wipe")
    flat = json.dumps(request_card(bot, row.id)["blocks"], ensure_ascii=False)
    assert f"kms.RevokeGrant(KeyId={source_key}, GrantId={grant['GrantId']})" in flat
    assert kms.list_grants(KeyId=source_key)["Grants"] == [grant]  # nothing before approval

    done = approve(bot, row.id)
    assert done.status == "succeeded", [(s.action, s.status, s.error) for s in done.steps]
    assert kms.list_grants(KeyId=source_key)["Grants"] == []
    revoked = [
        e.summary for e in events(bot) if e.kind == "wipe.deleted" and "KMS grant" in e.summary
    ]
    assert revoked == [
        f"Revoked KMS grant {grant['GrantId']} on key {source_key}: "
        f"{grant['GranteePrincipal']} can no longer use the key"
    ]
