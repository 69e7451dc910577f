"""Approval-gated containment end to end: signed requests over HTTP into the HTTP-mode app,
the fake Slack Web API, moto for AWS (the containment test world), a real SQLite file."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from wsgiref.simple_server import make_server

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from sqlalchemy import select

from bot.approvals import propose, service
from bot.background import Background
from bot.runtime import make_runtime
from bot.wiring import build_wsgi_app, create_app
from commands.approvals import decide
from commands.approvals.engine import wants_volatile
from containment.revoker.local import in_process_revoker
from storage.clock import FlowingClock
from storage.models import ActionStep, ContainmentRequest, Incident, TimelineEvent
from storage.timeline import verify_chain
from tests.bot.conftest import (
    SECRET,
    BotUnderTest,
    _QuietHandler,
    _ThreadingWSGIServer,
    bot_settings,
)
from tests.containment.world import World, build_world
from tests.slack_fake import Call, FakeSlack
from tests.slack_signing import (
    SlackSender,
    block_actions_payload,
    interactivity_body,
    view_submission_payload,
)

APPROVER1, APPROVER2 = "U0APPROVER1", "U0APPROVER2"
REQUESTER = "W111"
FINISHED = ("succeeded", "partial", "failed", "interrupted", "rejected", "expired", "rolled_back")
READ_PREFIXES = ("Describe", "Get", "List", "Lookup")


class _Server(_ThreadingWSGIServer):
    request_queue_size = 64  # twenty clicks connect at once; the default backlog is 5


@dataclass
class AwsRecorder:
    """Every AWS operation the bot's containment clients make; optional injected failures."""

    ops: list[str] = field(default_factory=list)
    fail: set[str] = field(default_factory=set)  # "lambda.Invoke"
    lock: threading.Lock = field(default_factory=threading.Lock)

    def hook(self, client: Any) -> None:
        service_id = client.meta.service_model.service_name

        def before(model: Any, **_: Any) -> None:
            name = f"{service_id}.{model.name}"
            with self.lock:
                self.ops.append(name)
            if name in self.fail:
                raise ClientError(
                    {"Error": {"Code": "AccessDenied", "Message": f"denied: {model.name}"}},
                    model.name,
                )

        client.meta.events.register("before-call.*.*", before)

    def count(self, name: str) -> int:
        with self.lock:
            return self.ops.count(name)

    def mutating(self) -> list[str]:
        with self.lock:
            return [o for o in self.ops if not o.split(".", 1)[1].startswith(READ_PREFIXES)]


@dataclass
class Env:
    world: World
    aws: AwsRecorder
    topic_arn: str
    published: list[dict[str, Any]]
    slack: FakeSlack
    start: Callable[..., BotUnderTest]


@pytest.fixture
def env(tmp_path: Path, fake_slack: FakeSlack, clock: FlowingClock) -> Iterator[Env]:
    with mock_aws():
        world = build_world()
        sns = boto3.client("sns", region_name="us-east-1")
        topic = sns.create_topic(Name="security-contacts")["TopicArn"]
        published: list[dict[str, Any]] = []
        recorder = AwsRecorder()
        started: list[tuple[Any, Any]] = []
        for user in (APPROVER1, APPROVER2):
            fake_slack.add_user(user)
            fake_slack.add_channel(user)  # the bot's DM with them (modal replies)

        def sns_factory(region: str) -> Any:
            client = boto3.client("sns", region_name=region)
            client.meta.events.register(
                "before-parameter-build.sns.Publish", lambda params, **_: published.append(params)
            )
            return client

        def start(config: dict[str, Any] | None = None, *, sweep: float = 0) -> BotUnderTest:
            base = {
                "approvals": {"approvers": [APPROVER1, APPROVER2], "two_person_rule": True},
                "contacts": {
                    "sns_topic_arn": topic,
                    "slack_usergroup": "S0SECURITY",
                    "emails": ["security@example.com"],
                },
                "guardduty": {"regions": ["us-east-1"]},
            }
            for section, values in (config or {}).items():
                base.setdefault(section, {}).update(values)
            settings = bot_settings(tmp_path, fake_slack, base)
            runtime = make_runtime(
                settings, clock=clock, background=Background(max_workers=8, name="t-bg")
            )
            # The recorder first: it sees (and fails) the bot's Invoke of incident-bot-revoker,
            # which then runs in this process (moto runs no Lambda code).
            runtime.options.client_hooks = (recorder.hook, in_process_revoker(clock.now))
            runtime.options.sns_factory = sns_factory
            runtime.options.containment_sweep_seconds = sweep
            app = create_app(settings, runtime=runtime)
            server = make_server(
                "127.0.0.1",
                0,
                build_wsgi_app(app),
                server_class=_Server,
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

        yield Env(world, recorder, topic, published, fake_slack, start)
        for server, runtime in started:
            server.shutdown()
            server.server_close()
            service(runtime).stop()
            runtime.background.shutdown(grace=5)
            runtime.database.dispose()


# -- helpers ---------------------------------------------------------------------------------


def blocks_text(call: Call) -> str:
    return json.dumps(call.args.get("blocks", []), ensure_ascii=False)


def buttons(message: dict[str, Any]) -> dict[str, str]:
    """Visible button text -> action_id of a message's buttons."""
    return {
        el["text"]["text"]: el["action_id"]
        for b in message.get("blocks", [])
        if b["type"] == "actions"
        for el in b["elements"]
    }


def contain(bot: BotUnderTest, text: str, user: str = REQUESTER) -> tuple[int, Call]:
    response = bot.command(text, command="/contain", user_id=user)
    assert response.status_code == 200, response.text
    card = bot.slack.wait_for(
        "chat.postMessage", lambda c: "containment_approve" in blocks_text(c), timeout=15
    )
    bot.idle(15)
    with bot.session() as session:
        request = session.scalars(
            select(ContainmentRequest).where(ContainmentRequest.card_ts == card.response["ts"])
        ).one()
        return request.id, card


def click(
    bot: BotUnderTest,
    action_id: str,
    request_id: int,
    user: str,
    headers: dict[str, str] | None = None,
    ts: str = "1.1",
) -> int:
    payload = block_actions_payload(
        action_id,
        str(request_id),
        user_id=user,
        message_ts=ts,
        response_url=bot.slack.response_url(f"{action_id}-{user}"),
    )
    return bot.sender.post(interactivity_body(payload), headers=headers).status_code


def request(bot: BotUnderTest, request_id: int) -> ContainmentRequest:
    with bot.session() as session:
        row = session.get(ContainmentRequest, request_id)
        assert row is not None
        return row


def wait_status(
    bot: BotUnderTest, request_id: int, statuses: tuple[str, ...] = FINISHED, timeout: float = 30
) -> ContainmentRequest:
    deadline = time.monotonic() + timeout
    while True:
        row = request(bot, request_id)
        if row.status in statuses:
            bot.idle(15)
            return request(bot, request_id)
        assert time.monotonic() < deadline, f"request #{request_id} stuck in {row.status}"
        time.sleep(0.05)


def timeline(bot: BotUnderTest) -> list[TimelineEvent]:
    with bot.session() as session:
        return list(session.scalars(select(TimelineEvent).order_by(TimelineEvent.id)))


def eni_groups(world: World) -> dict[str, list[str]]:
    ec2 = boto3.client("ec2", region_name="us-east-1")
    found = ec2.describe_network_interfaces(NetworkInterfaceIds=world.enis)["NetworkInterfaces"]
    return {n["NetworkInterfaceId"]: sorted(g["GroupId"] for g in n["Groups"]) for n in found}


def isolation_group(world: World) -> str:
    ec2 = boto3.client("ec2", region_name="us-east-1")
    groups = ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": ["incident-bot-isolation"]}]
    )["SecurityGroups"]
    assert len(groups) == 1
    return groups[0]["GroupId"]


def responses_to(bot: BotUnderTest, name: str) -> list[str]:
    return [
        c.args.get("text", "")
        for c in bot.slack.calls_for("response_url")
        if c.path.endswith("/" + name)
    ]


def card_message(bot: BotUnderTest, row: ContainmentRequest) -> dict[str, Any]:
    return bot.slack.channels[row.card_channel].messages[row.card_ts]


# -- the full path ---------------------------------------------------------------------------


def test_contain_to_isolated_instance(env: Env) -> None:
    bot = env.start()
    iid = env.world.instance_id
    request_id, card = contain(bot, f"{iid} beaconing to a known C2")
    # The card: the plan with every API call, the blast radius from the tags, two buttons.
    flat = blocks_text(card)
    assert card.args["channel"] == "C0INCIDENT"
    for needle in (
        "ModifyNetworkInterfaceAttribute",
        "CreateSnapshots",
        "DeregisterTargets",
        "DescribeInstances",
        "Blast radius",
        "web-1",
        "web-asg",
        "web-classic",
        "beaconing to a known C2",
    ):
        assert needle in flat, needle
    labels = buttons(card.args)
    assert any(t.startswith("Approve") for t in labels)
    assert any(t.startswith("Reject") for t in labels)
    row = request(bot, request_id)
    assert sum(len(s["calls"]) for s in row.plan["steps"]) == flat.count("• `")
    assert env.aws.mutating() == []  # planning changed nothing
    with bot.session() as session:
        incident = session.scalars(select(Incident)).one()
        assert incident.resource_id == iid and incident.status == "open"
    reply = bot.slack.wait_for(
        "response_url", lambda c: "Posted containment plan" in c.args.get("text", "")
    )
    assert "INC-1" in reply.args["text"]

    assert click(bot, "containment_approve", request_id, APPROVER1) == 200
    row = wait_status(bot, request_id)
    assert row.status == "succeeded", [(s.action, s.status, s.error) for s in row.steps]
    assert row.decided_by == APPROVER1

    # AWS: every ENI is in the isolation group only.
    isolation = isolation_group(env.world)
    assert eni_groups(env.world) == {eni: [isolation] for eni in env.world.enis}
    with bot.session() as session:
        assert session.scalars(select(Incident)).one().status == "contained"
        steps = session.scalars(select(ActionStep).where(ActionStep.request_id == request_id))
        assert {s.status for s in steps} <= {"succeeded", "skipped"}

    # The timeline: request, decision, every step start and result, the outcome.
    kinds = [e.kind for e in timeline(bot)]
    assert kinds.count("containment.requested") == 1
    assert kinds.count("containment.approved") == 1
    assert kinds.count("containment.step.started") == len(row.plan["steps"])
    finished_steps = [
        k for k in kinds if k in ("containment.step.succeeded", "containment.step.skipped")
    ]
    assert len(finished_steps) == len(row.plan["steps"])
    assert "containment.finished" in kinds and "incident.status" in kinds

    # The card went live: updates at most once a second, ending on the outcome without buttons.
    updates = [c for c in bot.slack.calls_for("chat.update") if c.args.get("ts") == row.card_ts]
    assert updates
    gaps = [b.at - a.at for a, b in itertools.pairwise(updates)]
    assert all(gap >= 0.95 for gap in gaps), gaps
    final = card_message(bot, row)
    assert "Succeeded" in json.dumps(final["blocks"])
    assert set(buttons(final)) == {"Roll back"}

    # Contacts: SNS on approval and on the outcome; the user group in the card's thread.
    subjects = [p["Subject"] for p in env.published]
    assert any("approved by U0APPROVER1" in s for s in subjects)
    assert any("succeeded" in s for s in subjects)
    assert all(p["TopicArn"] == env.topic_arn for p in env.published)
    thread = [
        c for c in bot.slack.calls_for("chat.postMessage") if c.args.get("thread_ts") == row.card_ts
    ]
    assert any(
        "<!subteam^S0SECURITY>" in c.args["text"] and "security@example.com" in c.args["text"]
        for c in thread
    )
    assert any(e.kind == "contacts.notified" for e in timeline(bot))
    # The incident's own thread tells the story too.
    with bot.session() as session:
        thread_ts = session.scalars(select(Incident)).one().thread_ts
    told = " ".join(
        c.args.get("text", "")
        for c in bot.slack.calls_for("chat.postMessage")
        if c.args.get("thread_ts") == thread_ts
    )
    assert "awaits approval" in told and "approved by <@U0APPROVER1>" in told
    assert "succeeded" in told
    with bot.session() as session:  # every event went through the hash chain
        assert verify_chain(conn=session, incident=session.scalars(select(Incident)).one()).ok


# -- who may decide --------------------------------------------------------------------------


def test_self_approval_refused(env: Env) -> None:
    bot = env.start()
    request_id, _ = contain(bot, env.world.instance_id, user=APPROVER1)
    assert click(bot, "containment_approve", request_id, APPROVER1) == 200
    bot.idle()
    texts = responses_to(bot, f"containment_approve-{APPROVER1}")
    assert texts and "another approver has to approve it" in texts[-1]
    assert request(bot, request_id).status == "pending"
    assert env.aws.mutating() == []
    # Any other approver may.
    click(bot, "containment_approve", request_id, APPROVER2)
    assert wait_status(bot, request_id).status == "succeeded"


def test_non_approver_refused(env: Env) -> None:
    bot = env.start()
    request_id, _ = contain(bot, env.world.instance_id)
    click(bot, "containment_approve", request_id, "W999")
    click(bot, "containment_reject", request_id, "W999")
    bot.idle()
    for action in ("containment_approve", "containment_reject"):
        texts = responses_to(bot, f"{action}-W999")
        assert texts and "Only the configured approvers" in texts[-1], action
    assert not bot.slack.calls_for("views.open")
    assert request(bot, request_id).status == "pending"
    assert env.aws.mutating() == []


def test_twenty_approve_clicks_at_once_run_once(env: Env) -> None:
    bot = env.start()
    other = env.start()  # a second worker process on the same database
    request_id, _ = contain(bot, env.world.instance_id)
    barrier = threading.Barrier(20)

    def one(i: int) -> int:
        barrier.wait()
        # Two approvers, two workers, and Slack retrying some deliveries of the same click.
        headers = (
            {"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"} if i % 3 else None
        )
        return click(
            (bot, other)[i % 4 // 2],
            "containment_approve",
            request_id,
            (APPROVER1, APPROVER2)[i % 2],
            headers=headers,
        )

    with ThreadPoolExecutor(20) as pool:
        codes = list(pool.map(one, range(20)))
    assert codes == [200] * 20
    row = wait_status(bot, request_id)
    other.idle(15)
    assert row.status == "succeeded"
    kinds = [e.kind for e in timeline(bot)]
    assert kinds.count("containment.approved") == 1
    assert kinds.count("containment.started") == 1
    assert env.aws.count("ec2.CreateSnapshots") == 1
    assert env.aws.count("lambda.Invoke") >= 1  # the revoker: the bot writes no policy itself
    assert env.aws.count("iam.PutRolePolicy") == 0
    with bot.session() as session:
        steps = session.scalars(select(ActionStep).where(ActionStep.request_id == request_id))
        assert len(list(steps)) == len(row.plan["steps"])
    losers = [
        t
        for u in (APPROVER1, APPROVER2)
        for t in responses_to(bot, f"containment_approve-{u}")
        if "already" in t
    ]
    assert len(losers) == 19


# -- expiry and rejection --------------------------------------------------------------------


def test_expiry_updates_card_and_removes_buttons(env: Env) -> None:
    bot = env.start({"approvals": {"expire_after_minutes": 0.01}}, sweep=0.2)
    request_id, _ = contain(bot, env.world.instance_id)
    row = wait_status(bot, request_id, ("expired",), timeout=10)
    bot.slack.wait_for(
        "chat.update",
        lambda c: c.args.get("ts") == row.card_ts and "Expired" in blocks_text(c),
        timeout=10,
    )
    assert buttons(card_message(bot, row)) == {}
    click(bot, "containment_approve", request_id, APPROVER1)
    bot.idle()
    assert "expired" in responses_to(bot, f"containment_approve-{APPROVER1}")[-1]
    assert request(bot, request_id).status == "expired"
    assert env.aws.mutating() == []
    assert any(e.kind == "containment.expired" for e in timeline(bot))


def test_reject_asks_reason_in_modal(env: Env) -> None:
    bot = env.start()
    request_id, _ = contain(bot, env.world.instance_id)
    click(bot, "containment_reject", request_id, APPROVER1)
    opened = bot.slack.wait_for("views.open")
    view = opened.args["view"]
    assert view["callback_id"] == "containment_reject_modal"
    assert request(bot, request_id).status == "pending"  # nothing decided yet

    # An empty reason is refused inside the modal.
    empty = view_submission_payload(
        "containment_reject_modal",
        {"reason": {"reason": {"type": "plain_text_input", "value": " "}}},
        user_id=APPROVER1,
        private_metadata=view["private_metadata"],
    )
    answer = bot.sender.post(interactivity_body(empty))
    assert answer.json()["response_action"] == "errors"
    assert request(bot, request_id).status == "pending"

    submit = view_submission_payload(
        "containment_reject_modal",
        {"reason": {"reason": {"type": "plain_text_input", "value": "authorised pentest"}}},
        user_id=APPROVER1,
        private_metadata=view["private_metadata"],
    )
    assert bot.sender.post(interactivity_body(submit)).status_code == 200
    row = wait_status(bot, request_id, ("rejected",))
    assert (row.decided_by, row.decision_reason) == (APPROVER1, "authorised pentest")
    bot.slack.wait_for(
        "chat.update",
        lambda c: c.args.get("ts") == row.card_ts and "authorised pentest" in blocks_text(c),
    )
    assert buttons(card_message(bot, row)) == {}
    rejected = [e for e in timeline(bot) if e.kind == "containment.rejected"]
    assert rejected[0].actor == APPROVER1 and "authorised pentest" in rejected[0].summary
    assert env.aws.mutating() == []


# -- failure, retry, rollback ----------------------------------------------------------------


def test_partial_failure_then_retry(env: Env) -> None:
    bot = env.start()
    env.aws.fail.add("lambda.Invoke")
    request_id, _ = contain(bot, env.world.instance_id)
    click(bot, "containment_approve", request_id, APPROVER1)
    row = wait_status(bot, request_id)
    assert row.status == "partial"
    failed = {s.action: s.error for s in row.steps if s.status == "failed"}
    assert list(failed) == ["iam"] and "AccessDenied" in failed["iam"]
    final = card_message(bot, row)
    flat = json.dumps(final["blocks"])
    assert "Partially failed" in flat and "AccessDenied" in flat
    assert set(buttons(final)) == {"Retry what is left", "Roll back"}
    assert any(
        e.kind == "containment.aws_error" and "AccessDenied" in e.summary for e in timeline(bot)
    )
    with bot.session() as session:
        assert session.scalars(select(Incident)).one().status == "open"

    env.aws.fail.clear()
    isolations_before = env.aws.count("ec2.ModifyNetworkInterfaceAttribute")
    click(bot, "containment_retry", request_id, REQUESTER)
    retry_card = bot.slack.wait_for(
        "chat.postMessage",
        lambda c: "containment_approve" in blocks_text(c) and "Containment retry" in blocks_text(c),
    )
    bot.idle()
    with bot.session() as session:
        retry = session.scalars(
            select(ContainmentRequest).where(ContainmentRequest.kind == "retry")
        ).one()
        assert retry.parent_id == request_id and retry.status == "pending"
        assert [s["action"] for s in retry.plan["steps"]] == ["iam"]
    assert "PutRolePolicy" in blocks_text(retry_card)
    # The retry is approval-gated like the original.
    click(bot, "containment_approve", retry.id, REQUESTER)
    bot.idle()
    assert request(bot, retry.id).status == "pending"
    click(bot, "containment_approve", retry.id, APPROVER2)
    done = wait_status(bot, retry.id)
    assert done.status == "succeeded"
    assert [(s.action, s.status) for s in done.steps] == [("iam", "succeeded")]
    captures = [
        e
        for e in timeline(bot)
        if e.kind == "containment.step.succeeded" and e.summary.startswith("Step capture")
    ]
    assert len(captures) == 1  # the retry did not record the first run's steps again
    assert env.aws.count("ec2.ModifyNetworkInterfaceAttribute") == isolations_before
    with bot.session() as session:
        assert session.scalars(select(Incident)).one().status == "contained"


def test_rollback_restores_the_instance(env: Env) -> None:
    bot = env.start()
    original = {eni: sorted(groups) for eni, groups in env.world.eni_groups.items()}
    request_id, _ = contain(bot, env.world.instance_id)
    click(bot, "containment_approve", request_id, APPROVER1)
    assert wait_status(bot, request_id).status == "succeeded"
    assert eni_groups(env.world) != original

    click(bot, "containment_rollback", request_id, APPROVER1)
    card = bot.slack.wait_for(
        "chat.postMessage",
        lambda c: "Rollback" in blocks_text(c) and "containment_approve" in blocks_text(c),
    )
    assert "ModifyNetworkInterfaceAttribute" in blocks_text(card)
    bot.idle()
    with bot.session() as session:
        rollback = session.scalars(
            select(ContainmentRequest).where(ContainmentRequest.kind == "rollback")
        ).one()
    click(bot, "containment_approve", rollback.id, APPROVER2)
    done = wait_status(bot, rollback.id)
    assert done.status == "succeeded", [(s.action, s.error) for s in done.steps]
    assert eni_groups(env.world) == original
    assert request(bot, request_id).status == "rolled_back"
    with bot.session() as session:
        assert session.scalars(select(Incident)).one().status == "open"
    assert buttons(card_message(bot, request(bot, request_id))) == {}


# -- restart ---------------------------------------------------------------------------------


def test_restart_between_approval_and_execution(env: Env) -> None:
    first = env.start()
    request_id, _ = contain(first, env.world.instance_id)
    # The approval is committed, then the process dies before it runs anything.
    with first.runtime.database.session() as session:
        decision = decide(
            session=session,
            request_id=request_id,
            actor=APPROVER1,
            approve=True,
            approvers=[APPROVER1, APPROVER2],
        )
        assert decision.won
    assert request(first, request_id).status == "approved"
    assert env.aws.mutating() == []

    second = env.start(sweep=0.2)  # a new process on the same database
    row = wait_status(second, request_id)
    assert row.status == "succeeded"
    assert [e.kind for e in timeline(second)].count("containment.started") == 1
    assert eni_groups(env.world) == {e: [isolation_group(env.world)] for e in env.world.enis}


def test_restart_while_running_marks_interrupted(env: Env) -> None:
    first = env.start()
    request_id, _ = contain(first, env.world.instance_id)
    with first.runtime.database.session() as session:
        decide(
            session=session,
            request_id=request_id,
            actor=APPROVER1,
            approve=True,
            approvers=[APPROVER1, APPROVER2],
        )
        row = session.get(ContainmentRequest, request_id)
        # It was running in a process that died ten minutes ago.
        stale = first.runtime.now().replace(microsecond=0) - dt.timedelta(minutes=10)
        row.status, row.started_at, row.heartbeat_at = "running", stale, stale
        session.add(
            ActionStep(
                request_id=request_id,
                position=0,
                action="capture",
                status="succeeded",
                result={"action": "capture", "status": "succeeded"},
            )
        )
        session.add(
            ActionStep(
                request_id=request_id, position=1, action="isolate", status="running", result={}
            )
        )

    second = env.start(sweep=0.2)
    row = wait_status(second, request_id, ("interrupted",), timeout=10)
    assert {s.action: s.status for s in row.steps} == {
        "capture": "succeeded",
        "isolate": "interrupted",
    }
    second.slack.wait_for(
        "chat.update", lambda c: c.args.get("ts") == row.card_ts and "Interrupted" in blocks_text(c)
    )
    assert set(buttons(card_message(second, row))) == {"Retry what is left", "Roll back"}
    assert any(e.kind == "containment.interrupted" for e in timeline(second))
    assert env.aws.mutating() == []


# -- dry run and the finding card's button ---------------------------------------------------


def test_dry_run_changes_nothing(env: Env) -> None:
    bot = env.start({"containment": {"dry_run": True}})
    before = eni_groups(env.world)
    request_id, card = contain(bot, env.world.instance_id)
    assert "DRY RUN" in blocks_text(card)
    click(bot, "containment_approve", request_id, APPROVER1)
    row = wait_status(bot, request_id)
    assert row.status == "succeeded" and row.dry_run
    assert env.aws.mutating() == []
    assert buttons(card_message(bot, row)) == {}  # nothing changed, nothing to roll back
    assert eni_groups(env.world) == before
    with bot.session() as session:
        assert session.scalars(select(Incident)).one().status == "open"
    events = timeline(bot)
    assert any(e.kind == "containment.dry_run" for e in events)
    skipped = [e for e in events if e.kind == "containment.step.skipped"]
    assert skipped and all("[DRY RUN]" in e.summary for e in skipped)
    assert env.published == []  # no SNS publish in a dry run; the timeline says so
    assert any("dry run" in e.summary for e in events if e.kind == "contacts.notified")


def test_plan_containment_button_and_unknown_target(env: Env) -> None:
    bot = env.start()
    assert bot.command("open C2 from web-1").status_code == 200
    bot.idle()
    value = json.dumps({"resource_id": env.world.instance_id, "incident": "INC-1"})
    payload = block_actions_payload(
        "plan_containment", value, user_id=REQUESTER, response_url=bot.slack.response_url("plan")
    )
    assert bot.sender.post(interactivity_body(payload)).status_code == 200
    bot.slack.wait_for("chat.postMessage", lambda c: "containment_approve" in blocks_text(c))
    bot.idle()
    with bot.session() as session:
        row = session.scalars(select(ContainmentRequest)).one()
        incident = session.get(Incident, row.incident_id)
        assert incident.key == "INC-1" and row.requested_by == REQUESTER
        assert incident.resource_id == env.world.instance_id  # now known to the incident

    bad = bot.command("sg-12345", command="/contain")
    assert "neither an instance id" in bad.json()["text"]
    bot.command(
        "i-0000000000000dead INC-1",
        command="/contain",
        response_url=bot.slack.response_url("missing"),
    )
    bot.idle()
    assert "Could not read i-0000000000000dead" in responses_to(bot, "missing")[-1]


def test_guardduty_request_any_approver_with_impact_on_card(env: Env) -> None:
    bot = env.start()
    iid = env.world.instance_id
    assert bot.command("open C2 from web-1").status_code == 200
    bot.idle()
    with bot.runtime.database.session() as session:
        incident = session.scalars(select(Incident)).one()
        incident.resource_id = iid
        # What /incident impact stored earlier: shown on the card, no AWS call needed.
        incident.facts = {
            "impact": {
                "resource": {"id": iid, "kind": "instance"},
                "tags": {"owner": "team-web", "data_classification": "PII"},
            }
        }
    proposal = propose(
        bot.runtime,
        resource_id=iid,
        incident_key="INC-1",
        requested_by="guardduty",
        reason="GuardDuty Backdoor:EC2/C&CActivity.B (8)",
    )
    assert proposal.created and proposal.incident_key == "INC-1"
    card = bot.slack.wait_for("chat.postMessage", lambda c: "containment_approve" in blocks_text(c))
    flat = blocks_text(card)
    assert "owner: team-web" in flat and "PII" in flat
    assert "C&amp;CActivity" in flat  # user text escaped for mrkdwn
    # Again (the finding updated): the same request, no second card.
    again = propose(bot.runtime, resource_id=iid, incident_key="INC-1", requested_by="guardduty")
    assert not again.created and again.request_id == proposal.request_id
    click(bot, "containment_approve", proposal.request_id, APPROVER2)
    row = wait_status(bot, proposal.request_id)
    assert (row.status, row.requested_by, row.decided_by) == ("succeeded", "guardduty", APPROVER2)


def test_expiry_on_time_through_the_reminder_scheduler(env: Env) -> None:
    from bot.scheduler import stop_for_runtime
    from bot.wiring import start_scheduler

    bot = env.start({"approvals": {"expire_after_minutes": 0.02}}, sweep=0)  # no sweeper
    request_id, _ = contain(bot, env.world.instance_id)
    start_scheduler(bot.runtime, poll_seconds=0.5, maintain_at_start=False)
    try:
        row = wait_status(bot, request_id, ("expired",), timeout=10)
        bot.slack.wait_for(
            "chat.update",
            lambda c: c.args.get("ts") == row.card_ts and "Expired" in blocks_text(c),
            timeout=10,
        )
        notice = bot.slack.wait_for(
            "chat.postMessage",
            lambda c: (
                c.args.get("thread_ts") == row.card_ts and "expired" in c.args.get("text", "")
            ),
        )
        assert f"#{request_id}" in notice.args["text"]
        assert buttons(card_message(bot, row)) == {}
    finally:
        stop_for_runtime(bot.runtime)
    assert env.aws.mutating() == []


# -- other kinds of target -------------------------------------------------------------------


def test_contain_a_lambda_function_by_its_plain_name(env: Env) -> None:
    from tests.containment.lambda_code import zipped_handler

    fn = boto3.client("lambda", region_name="us-east-1")
    role = boto3.client("iam").get_role(RoleName=env.world.role_name)["Role"]["Arn"]
    fn.create_function(
        FunctionName="resize",
        Runtime="python3.11",
        Role=role,
        Handler="handler.handle",
        Code={"ZipFile": zipped_handler()},
    )
    fn.add_permission(
        FunctionName="resize", StatementId="public", Action="lambda:InvokeFunction", Principal="*"
    )
    bot = env.start()
    # A plain name: AWS says it is a function (and nothing else).
    request_id, card = contain(bot, "resize invoked from an unknown account")
    flat = blocks_text(card)
    assert "PutFunctionConcurrency" in flat and "RemovePermission" in flat
    with bot.session() as session:
        incident = session.scalars(select(Incident)).one()
        assert (incident.resource_id, incident.resource_type) == ("resize", "Lambda")
    click(bot, "containment_approve", request_id, APPROVER1)
    done = wait_status(bot, request_id)
    assert done.status == "succeeded", [(s.action, s.error) for s in done.steps]
    assert fn.get_function_concurrency(FunctionName="resize")["ReservedConcurrentExecutions"] == 0
    with pytest.raises(ClientError):
        fn.get_policy(FunctionName="resize")  # its only statement was the public one


def test_contain_an_iam_user_by_arn(env: Env) -> None:
    bot = env.start()
    arn = f"arn:aws:iam::123456789012:user/{env.world.user_name}"
    request_id, card = contain(bot, arn)
    assert "DeleteLoginProfile" not in blocks_text(card)  # the user has no console password
    click(bot, "containment_approve", request_id, APPROVER1)
    done = wait_status(bot, request_id)
    assert done.status == "succeeded", [(s.action, s.error) for s in done.steps]
    keys = boto3.client("iam").list_access_keys(UserName=env.world.user_name)
    assert {k["Status"] for k in keys["AccessKeyMetadata"]} == {"Inactive"}


def test_high_severity_plan_captures_volatile_state_first(env: Env) -> None:
    bot = env.start()
    iid = env.world.instance_id
    request_id, card = contain(bot, f"{iid} beaconing")
    actions = [s["action"] for s in request(bot, request_id).plan["steps"]]
    # A containment request opens a high incident: the capture is planned before isolation,
    # and the card says why it will be skipped (this bot has no evidence bucket).
    assert actions.index("volatile_capture") < actions.index("isolate")
    assert "# skipped: no containment.evidence_bucket" in blocks_text(card)


def test_no_volatile_leaves_the_capture_out(env: Env) -> None:
    bot = env.start()
    request_id, _ = contain(bot, f"{env.world.instance_id} --no-volatile beaconing")
    row = request(bot, request_id)
    assert "volatile_capture" not in [s["action"] for s in row.plan["steps"]]
    assert row.reason == "beaconing"


@pytest.mark.parametrize(
    ("asked", "severity", "rule", "expected"),
    [
        (None, "high", "high", True),
        (None, "critical", "high", True),
        (None, "medium", "high", False),
        (None, "low", "always", True),
        (None, "critical", "never", False),
        (True, "low", "never", True),
        (False, "critical", "always", False),
    ],
)
def test_wants_volatile(asked: bool | None, severity: str, rule: str, expected: bool) -> None:
    assert wants_volatile(asked, severity, rule) is expected
