"""`plan --format asl` with the default `per_incident_kms_key: true`: the export makes the
incident's own KMS key as the bot does (found by its alias, else created, tagged and
aliased), and the evidence object and manifest are written under it, with no state left to
edit. Run in moto's Step Functions after the approval's task token comes back: alone, after
the bot already made the key, and racing the bot for the alias."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.kms.responses import KmsResponse

from commands.approvals.engine import ContainmentEngine
from commands.approvals.plans import Plan
from commands.asl import state_machine
from commands.asl_key import ALIAS_TAKEN, NOT_FOUND
from commands.asl_sdk import EDIT, states_to_edit
from containment.actions.evidence import incident_key_alias, per_incident_key
from containment.context import ActionContext
from containment.custody import check_objects
from containment.tags import INCIDENT_TAG
from containment.targets import Target
from tests.clock import TEST_CLOCK
from tests.commands.test_asl import (
    cfn_lint,
    check_graph,
    flatten,
    placeholders,
    wait_for,
    with_motos_names,
)
from tests.containment.world import REGION, World, build_world
from tests.moto_gaps import sdk_error_names, sdk_task_outputs_as_json

ALIAS = "alias/incident-bot/INC-1"


@pytest.fixture
def world() -> Iterator[World]:
    with (
        mock_aws(config={"stepfunctions": {"execute_state_machine": True}}),
        sdk_task_outputs_as_json(),
        sdk_error_names(),
    ):
        yield build_world()


def bot_ctx(world: World, incident: str = "INC-1") -> ActionContext:
    """The default config: no configured evidence key, one key per incident."""
    return ActionContext(
        incident_key=incident,
        now=TEST_CLOCK.now,
        evidence_bucket=world.bucket,
        evidence_key_per_incident=True,
    )


@pytest.fixture
def plan(world: World) -> Plan:
    target = Target(kind="instance", resource_id=world.instance_id, region=REGION)
    return ContainmentEngine().plan(target=target, ctx=bot_ctx(world))


def incident_keys(incident: str = "INC-1") -> list[dict[str, Any]]:
    kms = boto3.client("kms", region_name=REGION)
    out = []
    for k in kms.list_keys()["Keys"]:
        tags = {
            t["TagKey"]: t["TagValue"] for t in kms.list_resource_tags(KeyId=k["KeyId"])["Tags"]
        }
        if tags.get(INCIDENT_TAG) == incident:
            out.append(kms.describe_key(KeyId=k["KeyId"])["KeyMetadata"] | {"Tags": tags})
    return out


def run(asl: dict[str, Any], before: tuple[str, ...] = ()) -> dict[str, Any]:
    """Create the machine in moto, start it, send the approval's token back, finish the run;
    until the approval only the keys `before` exist."""
    with_motos_names(asl["States"])
    sns = boto3.client("sns", region_name=REGION)
    sqs = boto3.client("sqs", region_name=REGION)
    topic = sns.create_topic(Name="incident-bot-approvals")["TopicArn"]
    queue = sqs.create_queue(QueueName="approver")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    sfn = boto3.client("stepfunctions", region_name=REGION)
    machine = sfn.create_state_machine(
        name="incident-bot-INC-1",
        definition=json.dumps(asl),
        roleArn="arn:aws:iam::123456789012:role/incident-bot-fallback",
    )["stateMachineArn"]
    execution = sfn.start_execution(
        stateMachineArn=machine, input=json.dumps({"approval_topic_arn": topic})
    )["executionArn"]
    message = wait_for(lambda: sqs.receive_message(QueueUrl=queue).get("Messages"))
    token = re.search(r"--task-token (\S+)", json.loads(message[0]["Body"])["Message"])
    assert token
    assert tuple(k["Arn"] for k in incident_keys()) == before  # nothing before the approval
    sfn.send_task_success(taskToken=token[1], output="true")

    def finished() -> dict[str, Any] | None:
        described = sfn.describe_execution(executionArn=execution)
        return None if described["status"] == "RUNNING" else described

    done = wait_for(finished)
    assert done["status"] == "SUCCEEDED", (done.get("error"), done.get("cause"))
    return done


def evidence_object(world: World) -> dict[str, Any]:
    s3 = boto3.client("s3", region_name=REGION)
    [key] = [
        o["Key"]
        for o in s3.list_objects_v2(Bucket=world.bucket, Prefix="incidents/INC-1/instance/")[
            "Contents"
        ]
    ]
    return s3.head_object(Bucket=world.bucket, Key=key)


def manifest(world: World) -> tuple[dict[str, Any], dict[str, Any]]:
    s3 = boto3.client("s3", region_name=REGION)
    key = "incidents/INC-1/manifest.json"
    return s3.head_object(Bucket=world.bucket, Key=key), json.loads(
        s3.get_object(Bucket=world.bucket, Key=key)["Body"].read()
    )


def test_the_default_plan_exports_with_nothing_to_edit(plan: Plan, tmp_path: Path) -> None:
    asl = state_machine(plan, incident_key="INC-1", now=TEST_CLOCK.now())
    check_graph(asl["States"], asl["StartAt"], set())
    linted = cfn_lint(asl, tmp_path)
    assert linted.returncode == 0, linted.stdout + linted.stderr
    assert states_to_edit(asl) == [] and placeholders(asl) == []
    assert EDIT not in json.dumps(asl)
    states = dict(flatten(asl["States"], asl["StartAt"]))
    [key] = [s for n, s in states.items() if n == "evidence the incident's KMS key"]
    assert key["ResultPath"] == "$.created.key"
    branch = key["Branches"][0]["States"]
    create = branch["evidence kms.CreateKey"]
    assert "Retry" not in create  # no client token: a retry could make a second key
    assert "no client token" in create["Comment"]
    assert create["Parameters"]["Tags"] == [{"TagKey": INCIDENT_TAG, "TagValue": "INC-1"}]
    alias = branch["evidence kms.CreateAlias"]
    assert alias["Parameters"] == {"AliasName": ALIAS, "TargetKeyId.$": "$.key.KeyId"}
    assert alias["Retry"][0] == {"ErrorEquals": [ALIAS_TAKEN], "MaxAttempts": 0}
    assert alias["Catch"][0]["ErrorEquals"] == [ALIAS_TAKEN]
    lookup = branch[f"evidence kms.DescribeKey {ALIAS}"]
    assert lookup["Catch"][0] == {
        "ErrorEquals": [NOT_FOUND],
        "ResultPath": "$.lookup",
        "Next": "evidence kms.CreateKey",
    }
    # The evidence write and the manifest take the key from where the key's state put it.
    puts = [s["Parameters"] for n, s in states.items() if n.startswith("evidence put")]
    assert puts and all(p["SSEKMSKeyId.$"] == "$.created.key.Arn" for p in puts)
    [written] = [
        s["Parameters"]
        for s in states.values()
        if str(s.get("Parameters", {}).get("Key", "")).endswith("manifest.json")
    ]
    assert written["SSEKMSKeyId.$"] == "$.created.key.Arn"
    assert written["Body.$"] == "States.JsonToString($.documents.Body)"  # the SHA-256 inside


def test_the_machine_makes_the_key_the_bot_would(world: World, plan: Plan) -> None:
    run(state_machine(plan, incident_key="INC-1", now=TEST_CLOCK.now()))
    [made] = incident_keys()
    kms = boto3.client("kms", region_name=REGION)
    assert kms.describe_key(KeyId=ALIAS)["KeyMetadata"]["KeyId"] == made["KeyId"]
    assert evidence_object(world)["SSEKMSKeyId"] == made["Arn"]
    head, body = manifest(world)
    assert head["SSEKMSKeyId"] == made["Arn"]
    assert check_objects(boto3.client("s3", region_name=REGION), world.bucket, body) == (1, [])
    # The bot, back up, finds the machine's key by its alias rather than making another.
    assert per_incident_key(bot_ctx(world), REGION) == made["Arn"]
    # And the key is the one the bot makes for an incident: same description, usage, tags.
    bots = per_incident_key(bot_ctx(world, "INC-2"), REGION)
    [theirs] = incident_keys("INC-2")
    assert theirs["Arn"] == bots
    assert incident_key_alias(bot_ctx(world, "INC-2")) == "alias/incident-bot/INC-2"
    for field in ("Description", "KeyUsage", "KeyManager", "KeyState"):
        assert made[field] == theirs[field].replace("INC-2", "INC-1"), field
    assert made["Tags"] == {INCIDENT_TAG: "INC-1"} and theirs["Tags"] == {INCIDENT_TAG: "INC-2"}


def test_a_key_the_bot_made_first_is_used_not_remade(world: World, plan: Plan) -> None:
    bots = per_incident_key(bot_ctx(world), REGION)  # the bot's evidence step, then it died
    run(state_machine(plan, incident_key="INC-1", now=TEST_CLOCK.now()), before=(bots,))
    assert [k["Arn"] for k in incident_keys()] == [bots]
    assert evidence_object(world)["SSEKMSKeyId"] == bots


def test_losing_the_alias_to_the_bot_uses_its_key_and_drops_ours(
    world: World, plan: Plan, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bot's evidence step makes the key and alias after the machine's lookup, before
    its CreateAlias: the machine uses the bot's key and schedules its own for deletion."""
    original = KmsResponse.create_alias
    raced: list[str] = []

    def create_alias(self: KmsResponse) -> str:
        if not raced:  # the machine's CreateAlias arrives: the bot gets there first
            raced.append("racing")  # (the bot's own CreateAlias comes through here too)
            raced[0] = per_incident_key(bot_ctx(world), REGION)
        return original(self)

    monkeypatch.setattr(KmsResponse, "create_alias", create_alias)
    run(state_machine(plan, incident_key="INC-1", now=TEST_CLOCK.now()))
    [bots] = raced
    states = {k["Arn"]: k["KeyState"] for k in incident_keys()}
    assert states.pop(bots) == "Enabled"
    assert list(states.values()) == ["PendingDeletion"]  # the machine's own, never used
    assert evidence_object(world)["SSEKMSKeyId"] == bots
    assert manifest(world)[0]["SSEKMSKeyId"] == bots
