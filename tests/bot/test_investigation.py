"""Investigation and aftermath through the Slack harness: signed requests over HTTP into the
HTTP-mode app, the fake Slack Web API, moto for AWS, Stubbers for CloudTrail and Support."""

from __future__ import annotations

import csv
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from wsgiref.simple_server import make_server

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from moto import mock_aws
from sqlalchemy import select

from bot.approvals import service
from bot.background import Background
from bot.listeners.incident_posts import post_new_incident
from bot.runtime import make_runtime
from bot.views.blocks import esc
from bot.wiring import build_wsgi_app, create_app
from commands.forensics import stack_name
from commands.incidents import get_incident, open_incident, resolve_incident
from containment.tags import INCIDENT_TAG
from storage.clock import FlowingClock
from storage.models import ContainmentRequest, Reminder, TimelineEvent
from tests.bot.conftest import (
    SECRET,
    BotUnderTest,
    _QuietHandler,
    _ThreadingWSGIServer,
    bot_settings,
)
from tests.bot.test_incident_commands import rich_texts
from tests.commands.test_trail import ct_event
from tests.slack_fake import Call, FakeSlack
from tests.slack_signing import SlackSender, block_actions_payload, interactivity_body

APPROVER = "U0APPROVER1"
RESPONDER = "W111"
CASE = "case-123456789012-muen-2026-7c1f0a3b9e2d4c55"
FINISHED = ("succeeded", "partial", "failed", "interrupted")


@dataclass
class Stubs:
    """Botocore Stubbers attached to the bot's clients of one service as they are created."""

    responses: dict[str, list[tuple[str, Any, Any]]] = field(default_factory=dict)
    made: list[Stubber] = field(default_factory=list)
    deny_once: set[str] = field(default_factory=set)  # "kms.ScheduleKeyDeletion"

    def hook(self, client: Any) -> None:
        name = client.meta.service_model.service_name

        def deny(model: Any, **_: Any) -> None:
            op = f"{name}.{model.name}"
            if op in self.deny_once:
                self.deny_once.discard(op)
                raise ClientError(
                    {"Error": {"Code": "AccessDeniedException", "Message": f"denied: {op}"}},
                    model.name,
                )

        client.meta.events.register("before-call.*.*", deny)
        if name not in self.responses:
            return
        stub = Stubber(client)
        for method, response, params in self.responses[name]:
            if isinstance(response, Exception):
                stub.add_client_error(method, *response.args)
            else:
                stub.add_response(method, response, params)
        stub.activate()
        self.made.append(stub)


@dataclass
class Env:
    world: dict[str, Any]
    stubs: Stubs
    start: Callable[..., BotUnderTest]


@pytest.fixture
def env(tmp_path: Path, fake_slack: FakeSlack, clock: FlowingClock) -> Iterator[Env]:
    with mock_aws():
        ec2 = boto3.client("ec2", "us-east-1")
        image = "ami-12c6146b"  # one of moto's stock AMIs (listing them all costs seconds)
        vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(
            VpcId=vpc, CidrBlock="10.0.1.0/24", AvailabilityZone="us-east-1a"
        )["Subnet"]["SubnetId"]
        web = ec2.create_security_group(GroupName="web", Description="w", VpcId=vpc)["GroupId"]

        def run(**tags: str) -> str:
            spec = [
                {
                    "ResourceType": "instance",
                    "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
                }
            ]
            return ec2.run_instances(
                ImageId=image,
                MinCount=1,
                MaxCount=1,
                SubnetId=subnet,
                SecurityGroupIds=[web],
                TagSpecifications=spec,
            )["Instances"][0]["InstanceId"]

        victim = run(Name="web-1", DataClassification="PII", Owner="payments")
        run(Name="web-2", Criticality="high")
        volume = ec2.create_volume(AvailabilityZone="us-east-1a", Size=8)["VolumeId"]
        snapshot = ec2.create_snapshot(
            VolumeId=volume,
            TagSpecifications=[
                {"ResourceType": "snapshot", "Tags": [{"Key": INCIDENT_TAG, "Value": "INC-1"}]}
            ],
        )["SnapshotId"]
        stubs = Stubs()
        fake_slack.add_user(APPROVER)
        started: list[tuple[Any, Any]] = []

        def start(config: dict[str, Any] | None = None) -> BotUnderTest:
            base = {
                "approvals": {"approvers": [APPROVER], "two_person_rule": True},
                "guardduty": {"regions": ["us-east-1"]},
                "forensics": {"ami_id": image},
                "wipe": {"kms_pending_days": 7},
            }
            for section, values in (config or {}).items():
                base.setdefault(section, {}).update(values)
            settings = bot_settings(tmp_path, fake_slack, base)
            runtime = make_runtime(
                settings, clock=clock, background=Background(max_workers=6, name="inv")
            )
            runtime.options.client_hooks = (stubs.hook,)
            runtime.options.containment_sweep_seconds = 0
            runtime.options.impact_sweep_seconds = 0
            app = create_app(settings, runtime=runtime)
            server = make_server(
                "127.0.0.1",
                0,
                build_wsgi_app(app),
                server_class=_ThreadingWSGIServer,
                handler_class=_QuietHandler,
            )
            threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
            started.append((server, runtime))
            url = f"http://127.0.0.1:{server.server_address[1]}"
            return BotUnderTest(
                app=app,
                runtime=runtime,
                slack=fake_slack,
                sender=SlackSender(f"{url}/slack/events", SECRET),
                url=url,
            )

        yield Env({"victim": victim, "snapshot": snapshot, "image": image}, stubs, start)
        for server, runtime in started:
            server.shutdown()
            server.server_close()
            service(runtime).stop()
            runtime.shutdown(grace=5)


# -- helpers ---------------------------------------------------------------------------------


def open_with_card(bot: BotUnderTest, resource_id: str | None, title: str = "web-1 mining") -> str:
    with bot.runtime.database.session() as s:
        key = open_incident(
            session=s,
            title=title,
            created_by=RESPONDER,
            resource_id=resource_id,
            region="us-east-1",
        ).key
    post_new_incident(bot.runtime, key, opener=RESPONDER, fallback_channel="C0INCIDENT")
    return key


def reply(bot: BotUnderTest, name: str, needle: str, timeout: float = 20) -> Call:
    return bot.slack.wait_for(
        "response_url",
        lambda c: c.path.endswith("/" + name) and needle in json.dumps(c.args),
        timeout=timeout,
    )


def command(
    bot: BotUnderTest,
    text: str,
    name: str,
    *,
    command: str = "/incident",
    user: str = RESPONDER,
    channel: str = "C0INCIDENT",
) -> Any:
    response = bot.sender.command(
        text,
        command=command,
        user_id=user,
        channel_id=channel,
        response_url=bot.slack.response_url(name),
    )
    assert response.status_code == 200, response.text
    return response.json() if response.content else {}


def card_rich_text(bot: BotUnderTest, key: str) -> str:
    with bot.session() as s:
        inc = get_incident(session=s, key=key)
        channel, ts = inc.channel_id, inc.card_ts
    return rich_texts(bot.slack.channels[channel].messages[ts]["blocks"])


def card(bot: BotUnderTest, key: str) -> str:
    with bot.session() as s:
        inc = get_incident(session=s, key=key)
        channel, ts = inc.channel_id, inc.card_ts
    return json.dumps(bot.slack.channels[channel].messages[ts]["blocks"], ensure_ascii=False)


def events(bot: BotUnderTest, key: str) -> list[TimelineEvent]:
    with bot.session() as s:
        inc = get_incident(session=s, key=key)
        return list(
            s.scalars(
                select(TimelineEvent)
                .where(TimelineEvent.incident_id == inc.id)
                .order_by(TimelineEvent.seq)
            )
        )


def request_card(bot: BotUnderTest, request_id: int) -> dict[str, Any]:
    with bot.session() as s:
        row = s.get(ContainmentRequest, request_id)
        return bot.slack.channels[row.card_channel].messages[row.card_ts]


def latest_request(bot: BotUnderTest, kind: str) -> ContainmentRequest:
    with bot.session() as s:
        return s.scalars(
            select(ContainmentRequest)
            .where(ContainmentRequest.kind == kind)
            .order_by(ContainmentRequest.id.desc())
        ).first()


def approve(bot: BotUnderTest, request_id: int) -> ContainmentRequest:
    payload = block_actions_payload(
        "containment_approve",
        str(request_id),
        user_id=APPROVER,
        response_url=bot.slack.response_url(f"approve-{request_id}"),
    )
    assert bot.sender.post(interactivity_body(payload)).status_code == 200
    deadline = time.monotonic() + 30
    while True:
        with bot.session() as s:
            row = s.get(ContainmentRequest, request_id)
            if row.status in FINISHED:
                bot.idle(15)
                return row
        assert time.monotonic() < deadline, f"request #{request_id} stuck in {row.status}"
        time.sleep(0.05)


# -- impact ----------------------------------------------------------------------------------


def test_impact_command_and_card(env: Env) -> None:
    bot = env.start()
    key = open_with_card(bot, env.world["victim"])
    assert command(bot, f"impact {key}", "impact") == {}
    answer = reply(bot, "impact", "Blast radius of INC-1")
    text = json.dumps(answer.args)
    assert "data classification: PII" in text and "owner: payments" in text
    assert "web-2" in text  # the neighbour in the same group and subnet
    bot.idle()
    assert "Blast radius" in card(bot, key) and "1 tagged" in card(bot, key)
    assert any(e.kind == "impact.estimated" for e in events(bot, key))


def test_impact_without_resource_is_refused_in_the_ack(env: Env) -> None:
    bot = env.start()
    key = open_with_card(bot, None, title="phishing report")
    ack = command(bot, f"impact {key}", "impact-none")
    assert "names no affected resource" in ack["text"]


def test_new_incidents_get_their_blast_radius(env: Env) -> None:
    """The sweeper estimates incidents that name a resource (GuardDuty, /contain, ...)."""
    from bot.investigation_work import ImpactSweeper

    bot = env.start()
    key = open_with_card(bot, env.world["victim"])
    open_with_card(bot, None, title="no resource")
    sweeper = ImpactSweeper(bot.runtime, every=60)
    assert sweeper.sweep() == [key]
    assert sweeper.sweep() == []  # once per incident
    with bot.session() as s:
        assert get_incident(session=s, key=key).facts["impact"]["tags"]["owner"] == "payments"
    assert "Blast radius" in card(bot, key)


def test_impact_of_a_role_lists_the_instances_that_carry_it(env: Env) -> None:
    iam = boto3.client("iam")
    iam.create_role(RoleName="app", AssumeRolePolicyDocument="{}")
    profile = iam.create_instance_profile(InstanceProfileName="app")["InstanceProfile"]
    iam.add_role_to_instance_profile(InstanceProfileName="app", RoleName="app")
    carrier = boto3.client("ec2", "us-east-1").run_instances(
        ImageId=env.world["image"],
        MinCount=1,
        MaxCount=1,
        IamInstanceProfile={"Arn": profile["Arn"]},
        TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "api-<1>"}]}
        ],
    )["Instances"][0]["InstanceId"]
    bot = env.start()
    with bot.runtime.database.session() as s:
        key = open_incident(
            session=s,
            title="role misuse",
            created_by=RESPONDER,
            resource_id="app",
            resource_type="IAMRole",
            region="us-east-1",
        ).key
    post_new_incident(bot.runtime, key, opener=RESPONDER, fallback_channel="C0INCIDENT")
    assert command(bot, f"impact {key}", "impact-role") == {}
    blocks = json.dumps(reply(bot, "impact-role", "Blast radius of").args["blocks"])
    assert "EC2 instances carrying the role (us-east-1)" in blocks
    assert f"`{carrier}` running" in blocks
    assert "name=api-&lt;1&gt;" in blocks  # tag text from AWS is escaped
    bot.idle()
    # The card's investigation section is rich text: AWS's text shown exactly, unescaped.
    assert "used by 1 EC2 instances in us-east-1 (api-<1>)" in card_rich_text(bot, key)


# -- CloudTrail ------------------------------------------------------------------------------


def test_trail_summary_file_and_timeline(env: Env) -> None:
    victim = env.world["victim"]
    page = [ct_event(i, "DescribeInstances", minutes_ago=i) for i in range(1, 21)]
    env.stubs.responses["cloudtrail"] = [("lookup_events", {"Events": page}, None)]
    bot = env.start()
    key = open_with_card(bot, victim)
    assert command(bot, f"trail {victim} 6", "trail") == {}
    answer = reply(bot, "trail", "CloudTrail for")
    assert "20 events in the last 6 h" in answer.args["text"]
    assert "```" in json.dumps(answer.args["blocks"])
    bot.idle()
    files = [f for f in bot.slack.files.values() if f.get("channel")]
    assert len(files) == 1
    rows = list(csv.DictReader(io.StringIO(files[0]["content"].decode())))
    assert len(rows) == 20 and rows[0]["event_name"] == "DescribeInstances"
    with bot.session() as s:
        assert files[0]["thread_ts"] == get_incident(session=s, key=key).thread_ts
    assert any(e.kind == "trail.lookup" for e in events(bot, key))


def test_trail_bad_arguments_answer_in_the_ack(env: Env) -> None:
    bot = env.start()
    ack = command(bot, "trail my-bucket", "trail-bad")
    assert "neither an instance id" in ack["text"]
    ack = command(bot, "trail i-0123456789abcdef0", "trail-none")
    assert "No open incident names i-0123456789abcdef0" in ack["text"]


# -- abuse -----------------------------------------------------------------------------------


def test_abuse_report_opens_incident_and_reminds_until_answered(env: Env) -> None:
    env.stubs.responses["support"] = [("create_case", {"caseId": CASE}, None)]
    bot = env.start()
    assert command(bot, "abuse AWS-ABUSE-8123 outbound SSH scans from 198.51.100.7", "abuse") == {}
    answer = reply(bot, "abuse", "Opened *INC-1*")
    assert CASE in answer.args["text"]
    bot.idle()
    with bot.session() as s:
        inc = get_incident(session=s, key="INC-1")
        assert inc.support_case_id == CASE and inc.card_ts
        reminders = s.scalars(select(Reminder).where(Reminder.kind == "abuse")).all()
        assert [r.status for r in reminders] == ["pending"]
    assert "Abuse report" in card(bot, "INC-1") and "NOT answered yet" in card(bot, "INC-1")

    assert command(bot, "abuse answered INC-1", "answered") == {}
    reply(bot, "answered", "reminders stopped")
    bot.idle()
    with bot.session() as s:
        assert s.scalars(select(Reminder).where(Reminder.status == "pending")).all() == []
    assert "answered" in card(bot, "INC-1")


def test_abuse_without_support_api_says_so(env: Env) -> None:
    env.stubs.responses["support"] = [
        ("create_case", Exception("SubscriptionRequiredException", "Premium required", 400), None)
    ]
    bot = env.start()
    command(bot, "abuse AWS-ABUSE-9 spam relay", "abuse-basic")
    answer = reply(bot, "abuse-basic", "INC-1")
    assert "no AWS Support API" in answer.args["text"]


# -- forensics -------------------------------------------------------------------------------


def test_forensics_build_and_teardown_through_approval(env: Env) -> None:
    bot = env.start()
    key = open_with_card(bot, env.world["victim"])
    assert command(bot, key, "forensics", command="/forensics") == {}
    reply(bot, "forensics", "posted for approval")
    row = latest_request(bot, "forensics")
    posted = request_card(bot, row.id)
    flat = json.dumps(posted["blocks"], ensure_ascii=False)
    assert "Forensic clean room" in flat and "CreateStack" in flat
    assert env.world["snapshot"] in flat
    labels = [
        el["text"]["text"]
        for b in posted["blocks"]
        if b["type"] == "actions"
        for el in b["elements"]
    ]
    assert any(t.startswith("Approve") for t in labels)
    assert any(t.startswith("Reject") for t in labels)
    # Nothing is built before the approval.
    cfn = boto3.client("cloudformation", "us-east-1")
    assert cfn.list_stacks()["StackSummaries"] == []

    done = approve(bot, row.id)
    assert done.status == "succeeded", [(s.action, s.status, s.error) for s in done.steps]
    stack = cfn.describe_stacks(StackName=stack_name(key))["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE"
    assert "Succeeded" in json.dumps(request_card(bot, row.id)["blocks"])
    assert "CREATE_COMPLETE" in card(bot, key) and "ssm start-session" in card(bot, key)

    command(bot, f"teardown {key}", "teardown", command="/forensics")
    reply(bot, "teardown", "posted for approval")
    down = approve(bot, latest_request(bot, "forensics_teardown").id)
    assert down.status == "succeeded", [(s.action, s.status, s.error) for s in down.steps]
    status = cfn.describe_stacks(StackName=stack["StackId"])["Stacks"][0]["StackStatus"]
    assert status == "DELETE_COMPLETE"
    assert "DELETE_COMPLETE" in card(bot, key)


def test_forensics_unknown_word_gets_help(env: Env) -> None:
    bot = env.start()
    ack = command(bot, "frobnicate", "forensics-help", command="/forensics")
    assert "There is no `/forensics frobnicate`" in ack["text"]
    assert "/forensics teardown [INC-N]" in ack["text"]


# -- wipe ------------------------------------------------------------------------------------


def test_wipe_refused_until_resolved_then_approved(env: Env) -> None:
    bot = env.start()
    key = open_with_card(bot, env.world["victim"])
    ack = command(bot, f"wipe {key}", "wipe-open")
    assert "is open: resolve it first" in ack["text"]

    with bot.runtime.database.session() as s:
        resolve_incident(
            session=s, incident=get_incident(session=s, key=key), actor=RESPONDER, summary="cleaned"
        )
    assert command(bot, f"wipe {key}", "wipe") == {}
    reply(bot, "wipe", "posted for approval")
    row = latest_request(bot, "wipe")
    bot.idle()
    # The full list also goes into the card's thread as a file.
    listed = [
        f for f in bot.slack.files.values() if f["filename"] == f"{key}-wipe-plan-{row.id}.md"
    ]
    assert len(listed) == 1 and listed[0]["thread_ts"] == row.card_ts
    assert f"DeleteSnapshot(SnapshotId={env.world['snapshot']})" in listed[0]["content"].decode()
    flat = json.dumps(request_card(bot, row.id)["blocks"], ensure_ascii=False)
    assert "Deletes: *only what the incident created" in flat
    assert "Evidence wipe" in flat and f"DeleteSnapshot(SnapshotId={env.world['snapshot']})" in flat
    ec2 = boto3.client("ec2", "us-east-1")
    assert ec2.describe_snapshots(SnapshotIds=[env.world["snapshot"]])["Snapshots"]

    done = approve(bot, row.id)
    assert done.status == "succeeded", [(s.action, s.status, s.error) for s in done.steps]
    left = ec2.describe_snapshots(
        OwnerIds=["self"], Filters=[{"Name": "snapshot-id", "Values": [env.world["snapshot"]]}]
    )["Snapshots"]
    assert left == []
    final = request_card(bot, row.id)
    assert "Roll back" not in json.dumps(final["blocks"])
    assert "wiped: 1 snapshots" in card(bot, key)
    assert any(
        e.kind == "wipe.deleted" and env.world["snapshot"] in e.summary for e in events(bot, key)
    )


def test_command_names_are_in_the_help(env: Env) -> None:
    bot = env.start()
    ack = command(bot, "help", "help")
    for usage in (
        "/incident impact [INC-N]",
        "/incident trail <instance-id|access-key-id>",
        "/incident abuse <case-id> <summary>",
        "/incident wipe [INC-N] [terminate]",
    ):
        assert esc(usage) in ack["text"], usage


# -- flow logs in the containment plan ------------------------------------------------------


@pytest.mark.parametrize("enabled", [True, False])
def test_flow_logs_step_in_the_containment_plan(env: Env, enabled: bool) -> None:
    boto3.client("s3", "us-east-1").create_bucket(Bucket="ir-evidence")
    bot = env.start({"containment": {"flow_logs": enabled, "evidence_bucket": "ir-evidence"}})
    victim = env.world["victim"]
    command(bot, victim, "contain", command="/contain")
    posted = bot.slack.wait_for(
        "chat.postMessage", lambda c: "containment_approve" in json.dumps(c.args), timeout=20
    )
    flat = json.dumps(posted.args["blocks"], ensure_ascii=False)
    if enabled:
        assert "flow_logs" in flat
        assert "ec2.CreateFlowLogs(" in flat
        assert "arn:aws:s3:::ir-evidence/incidents/INC-1/flow-logs/" in flat
    else:
        assert "flow_logs" not in flat and "CreateFlowLogs" not in flat
    bot.idle()


def test_serving_process_starts_the_impact_sweeper(env: Env) -> None:
    """start_services calls investigation_work.start: new incidents get estimated unprompted."""
    from bot import investigation_work

    bot = env.start()
    bot.runtime.options.impact_sweep_seconds = 0.1
    key = open_with_card(bot, env.world["victim"])
    investigation_work.start(bot.runtime)
    deadline = time.monotonic() + 20
    while True:
        with bot.session() as s:
            if get_incident(session=s, key=key).facts.get("impact"):
                break
        assert time.monotonic() < deadline, "the sweeper never estimated the new incident"
        time.sleep(0.05)
    bot.slack.wait_for("chat.update", lambda c: "Blast radius" in json.dumps(c.args), timeout=10)
    assert [e.actor for e in events(bot, key) if e.kind == "impact.estimated"] == ["system"]


def test_partial_wipe_then_retry_what_is_left(env: Env) -> None:
    kms = boto3.client("kms", "us-east-1")
    key_id = kms.create_key(Tags=[{"TagKey": INCIDENT_TAG, "TagValue": "INC-1"}])["KeyMetadata"][
        "KeyId"
    ]
    env.stubs.deny_once.add("kms.ScheduleKeyDeletion")
    bot = env.start()
    key = open_with_card(bot, env.world["victim"])
    with bot.runtime.database.session() as s:
        resolve_incident(
            session=s, incident=get_incident(session=s, key=key), actor=RESPONDER, summary="ok"
        )
    command(bot, f"wipe {key}", "wipe")
    reply(bot, "wipe", "posted for approval")
    first = approve(bot, latest_request(bot, "wipe").id)
    assert first.status == "partial"
    failed = [s for s in first.steps if s.status == "failed"]
    assert [s.action for s in failed] == ["schedule_key_deletion"]
    assert "AccessDeniedException" in (failed[0].error or "")
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "Enabled"
    labels = [
        el["text"]["text"]
        for b in request_card(bot, first.id)["blocks"]
        if b["type"] == "actions"
        for el in b["elements"]
    ]
    assert labels == ["Retry what is left"]

    payload = block_actions_payload(
        "containment_retry",
        str(first.id),
        user_id=RESPONDER,
        response_url=bot.slack.response_url("retry"),
    )
    assert bot.sender.post(interactivity_body(payload)).status_code == 200
    reply(bot, "retry", "posted for approval")
    retry = latest_request(bot, "retry")
    assert [s["action"] for s in retry.plan["steps"]] == ["schedule_key_deletion"]
    second = approve(bot, retry.id)
    assert second.status == "succeeded", [(s.action, s.status, s.error) for s in second.steps]
    assert kms.describe_key(KeyId=key_id)["KeyMetadata"]["KeyState"] == "PendingDeletion"
    deleted = [e.summary for e in events(bot, key) if e.kind == "wipe.deleted"]
    assert len(deleted) == 2  # the snapshot once, the key once


def test_abuse_report_joins_the_named_incident(env: Env) -> None:
    env.stubs.responses["support"] = [("create_case", {"caseId": CASE}, None)]
    bot = env.start()
    key = open_with_card(bot, env.world["victim"])
    assert command(bot, f"abuse {key} AWS-ABUSE-5 port scans", "abuse-join") == {}
    reply(bot, "abuse-join", f"Recorded on *{key}*")
    bot.idle()
    with bot.session() as s:
        inc = get_incident(session=s, key=key)
        assert inc.support_case_id == CASE
        assert inc.facts["abuse"]["reference"] == "AWS-ABUSE-5"
    # The line in the incident's thread says what was recorded.
    bot.slack.wait_for("chat.postMessage", lambda c: "AWS-ABUSE-5" in c.args.get("text", ""))


def test_abuse_watcher_stops_reminders_when_aws_answers(env: Env) -> None:
    from bot.investigation_work import AbuseWatcher

    env.stubs.responses["support"] = [("create_case", {"caseId": CASE}, None)]
    bot = env.start()
    command(bot, "abuse AWS-ABUSE-8 crypto mining", "abuse-watch")
    reply(bot, "abuse-watch", "Opened *INC-1*")
    bot.idle()
    env.stubs.responses["support"] = [
        (
            "describe_cases",
            {"cases": [{"caseId": CASE, "status": "pending-customer-action"}]},
            None,
        ),
        (
            "describe_communications",
            {
                "communications": [
                    {
                        "caseId": CASE,
                        "body": "Thanks, closing.",
                        "submittedBy": "Amazon Web Services",
                        "timeCreated": "2099-01-01T00:00:00Z",
                    }
                ]
            },
            None,
        ),
    ]
    assert AbuseWatcher(bot.runtime, every=60).check() == ["INC-1"]
    with bot.session() as s:
        assert s.scalars(select(Reminder).where(Reminder.status == "pending")).all() == []
    assert "answered" in card(bot, "INC-1") and "NOT answered" not in card(bot, "INC-1")


def test_guardduty_cards_get_their_blast_radius_through_the_card_pacing(env: Env) -> None:
    """A GuardDuty incident's card is the publisher's: the sweeper asks it for the update, so
    a finding storm's cards stay within one update per incident per 10 s."""
    from bot.guardduty import publisher as pub
    from bot.investigation_work import ImpactSweeper

    bot = env.start()
    with bot.runtime.database.session() as s:
        incident = open_incident(
            session=s,
            title="c2",
            created_by=pub.ACTOR,
            resource_id=env.world["victim"],
            region="us-east-1",
        )
        key, incident_id = incident.key, incident.id
    marked: list[int] = []
    publisher = pub.publisher_for(bot.runtime)
    publisher.mark_stale = marked.append  # type: ignore[method-assign]
    updates_before = len(bot.slack.calls_for("chat.update"))
    assert ImpactSweeper(bot.runtime, every=60).sweep() == [key]
    assert marked == [incident_id]
    assert len(bot.slack.calls_for("chat.update")) == updates_before  # no direct refresh
    with bot.session() as s:
        assert get_incident(session=s, key=key).facts["impact"]["tags"]["owner"] == "payments"
