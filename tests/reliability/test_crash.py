"""Crash anywhere: kill -9 the bot at every step boundary of a containment, and mid-step.

Each case runs real bot processes (`incident-bot run --http` through
tests/reliability/crash_main.py, whose crash switch SIGKILLs the process group at the chosen
point) against moto_server behind the logging proxy, the fake Slack and a SQLite file:
  1. `/contain <instance>` and an approval click start the containment; the bot dies at the
     point (after the approval, after the claim, after a step's start or result is committed,
     or after an AWS call was answered but before its step recorded it);
  2. a reminder comes due while no bot runs;
  3. a new process starts. A request the dead process never claimed resumes; a running one
     is marked interrupted once its heartbeat is stale (the test ages the heartbeat instead
     of waiting the minute recovery allows) and its card offers Retry; Retry and an approval
     finish the rest.
Then: AWS holds exactly what a clean run holds (no duplicate snapshot, group, key, role), no
create call was made more often than in the clean run, no step that had succeeded ran again,
the reminder was posted once and late, and `incident-bot verify` passes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import select, update

from bench._proxy import free_port
from bot.clock import SystemClock
from commands.deadlines import queue as dl
from storage.db import Database
from storage.migrate import upgrade
from storage.models import ActionStep, ContainmentRequest, Incident, Reminder, TimelineEvent
from tests.containment.world import World
from tests.reliability.aws_state import aws_state
from tests.reliability.conftest import Bench
from tests.slack_fake import Call, FakeSlack
from tests.slack_signing import SlackSender, block_actions_payload, interactivity_body

pytestmark = pytest.mark.wall_processes

ROOT = Path(__file__).resolve().parents[2]
SECRET = "crash-signing-secret"
CHANNEL = "C0INCIDENT"
REQUESTER, APPROVER = "W111", "U0APPROVER1"
WALL = SystemClock()
# Creates that make a second resource when sent twice: AWS refuses a second group, role,
# profile or alias of the same name, CreateTags overwrites, evidence objects are written with
# If-None-Match; these have no such guard in AWS, only the bot's own (a look-up first).
DUPLICABLE = ("ec2.CreateSnapshots", "ec2.CreateSnapshot", "kms.CreateKey", "ec2.CreateFlowLogs")

# The containment of the test world's instance, in plan order (checked against the real plan
# in every case, so a change to the plan is seen here).
PLAN = (
    "capture",
    "evidence",
    "volatile_capture",
    "protect",
    "snapshot",
    "asg",
    "lb",
    "isolation_groups",
    "isolate",
    "drop_transit",
    "iam",
    "tag",
)
# Where the bot dies. "approved": the decision committed, nothing claimed; "claimed": running,
# no step started; "finished:X": X's result committed (a step boundary); "started:X" and
# "call:..." are mid-step (the step running; or AWS answered a create before its step could
# record it). By default the boundaries after each wave of the plan (steps that run together
# end close together); INCIDENT_BOT_TEST_CRASH_ALL=1 kills after every one of the 12 steps.
WAVES = ("capture", "protect", "isolation_groups", "snapshot", "isolate", "tag")
BOUNDARIES = PLAN if os.environ.get("INCIDENT_BOT_TEST_CRASH_ALL") else WAVES
POINTS = (
    "approved",
    "claimed",
    *(f"finished:{a}" for a in BOUNDARIES),
    "started:isolate",
    "call:ec2.CreateSnapshots",
    "call:kms.CreateKey",
)


@dataclass
class Rig:
    bench: Bench
    slack: FakeSlack
    clean: dict[str, Any]
    clean_creates: Counter[str]


class Bot:
    """One bot process (gunicorn master + worker) in its own process group."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.sender = SlackSender(f"{self.url}/slack/events", SECRET)
        self.log = tmp / f"bot-{self.port}.log"
        argv = [sys.executable, "-m", "tests.reliability.crash_main", "run", "--http"]
        argv += ["--host", "127.0.0.1", "--port", str(self.port)]
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "bot exited at start:\n" + self.log.read_text()
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        self.kill()
        raise AssertionError("bot did not start:\n" + self.log.read_text())

    def died(self, timeout: float) -> bool:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def click(self, slack: FakeSlack, action_id: str, value: int, user: str) -> None:
        payload = block_actions_payload(
            action_id,
            str(value),
            user_id=user,
            message_ts="1.1",
            response_url=slack.response_url(f"{action_id}-{user}-{value}"),
        )
        assert self.sender.post(interactivity_body(payload)).status_code == 200


class Case:
    """One incident's containment on a fresh world and a fresh database."""

    def __init__(self, bench: Bench, slack: FakeSlack, tmp: Path) -> None:
        self.bench, self.slack, self.tmp = bench, slack, tmp
        self.world: World = bench.fresh()
        bench.proxy.clear_log()
        slack.reset_calls()
        self.url = f"sqlite:///{tmp / 'bot.db'}"
        upgrade(self.url)
        self.database = Database(self.url, clock=WALL)
        self.switch = tmp / "crash.json"
        config = tmp / "incident-bot.yml"
        config.write_text(
            json.dumps(
                {
                    # This fake Slack has no rate limits: keeping Slack's pace (tested in
                    # tests/bot/test_slack_pace.py) would only make the reminder wait out the
                    # thread lines the containment posted before it.
                    "slack": {"incident_channel": CHANNEL, "pace": False},
                    "approvals": {"approvers": [APPROVER], "auto_request_min_severity": None},
                    "containment": {"evidence_bucket": self.world.bucket},
                    "contacts": {"slack_usergroup": "S0SECURITY"},
                    "guardduty": {"poll_interval_seconds": 0},
                }
            )
        )
        self.env = {
            **os.environ,
            "DATABASE_URL": self.url,
            "SLACK_BOT_TOKEN": "xoxb-crash",
            "SLACK_SIGNING_SECRET": SECRET,
            "INCIDENT_BOT_SLACK_API_URL": slack.base_url,
            "INCIDENT_BOT_CONFIG": str(config),
            "INCIDENT_BOT_TIMELINE_KEY": "crash-test-timeline-key-0123456789abcdef",
            "INCIDENT_BOT_TEST_CRASH": str(self.switch),
            "AWS_ENDPOINT_URL": bench.proxy.url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "PYTHONPATH": str(ROOT),
        }
        self.env.pop("SLACK_APP_TOKEN", None)
        self.env.pop("AWS_PROFILE", None)

    def start(self) -> Bot:
        return Bot(self.tmp, self.env)

    def request_containment(self, bot: Bot) -> int:
        text = f"{self.world.instance_id} crash test"
        response = bot.sender.command(
            text,
            command="/contain",
            user_id=REQUESTER,
            response_url=self.slack.response_url("contain"),
        )
        assert response.status_code == 200, response.text
        card = self.slack.wait_for(
            "chat.postMessage", lambda c: "containment_approve" in blocks(c), timeout=20
        )
        return self.request_at(card.response["ts"])

    def request_at(self, ts: str, timeout: float = 10) -> int:
        deadline = time.monotonic() + timeout
        while True:
            with self.database.read_session() as session:
                found = session.scalars(
                    select(ContainmentRequest.id).where(ContainmentRequest.card_ts == ts)
                ).first()
            if found is not None:
                return int(found)
            assert time.monotonic() < deadline, f"no request for card {ts}"
            time.sleep(0.05)

    def retry_of(self, request_id: int, timeout: float = 20) -> int:
        """The retry request of `request_id`, once its card is posted for approval."""
        deadline = time.monotonic() + timeout
        while True:
            with self.database.read_session() as session:
                found = session.scalars(
                    select(ContainmentRequest.id).where(
                        ContainmentRequest.parent_id == request_id,
                        ContainmentRequest.kind == "retry",
                        ContainmentRequest.card_ts.is_not(None),
                    )
                ).first()
            if found is not None:
                return int(found)
            assert time.monotonic() < deadline, f"no retry card for request #{request_id}"
            time.sleep(0.05)

    def status(self, request_id: int) -> str:
        with self.database.read_session() as session:
            row = session.get(ContainmentRequest, request_id)
            assert row is not None
            return row.status

    def wait_status(self, request_id: int, statuses: tuple[str, ...], timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while (status := self.status(request_id)) not in statuses:
            assert time.monotonic() < deadline, f"request #{request_id} stuck in {status}"
            time.sleep(0.05)
        return status

    def run_clean(self) -> None:
        bot = self.start()
        try:
            request_id = self.request_containment(bot)
            bot.click(self.slack, "containment_approve", request_id, APPROVER)
            assert self.wait_status(request_id, FINISHED) == "succeeded", self.steps(request_id)
        finally:
            bot.stop()

    def steps(self, request_id: int) -> dict[str, str]:
        with self.database.read_session() as session:
            rows = session.scalars(
                select(ActionStep)
                .where(ActionStep.request_id == request_id)
                .order_by(ActionStep.position)
            )
            return {s.action: s.status for s in rows}

    def age_heartbeats(self) -> None:
        """What a minute's wait would do: the dead process's heartbeat is now stale."""
        ago = dt.timedelta(minutes=10)
        with self.database.session() as session:
            for row in session.scalars(
                select(ContainmentRequest).where(ContainmentRequest.status == "running")
            ):
                session.execute(
                    update(ContainmentRequest)
                    .where(ContainmentRequest.id == row.id)
                    .values(
                        started_at=row.started_at - ago,
                        heartbeat_at=(row.heartbeat_at or row.started_at) - ago,
                    )
                )

    def schedule_reminder(self) -> None:
        with self.database.session() as session:
            incident = session.scalars(select(Incident)).one()
            dl.schedule_reminder(
                session=session,
                incident=incident,
                kind="followup",
                due_at=WALL.now() + dt.timedelta(seconds=0.2),
                dedupe_key="crash:followup",
                message="follow-up while the bot was down",
            )

    def creates(self) -> Counter[str]:
        return Counter(
            f"{s.service}.{s.operation}"
            for s in self.bench.proxy.seen
            if f"{s.service}.{s.operation}" in DUPLICABLE
        )

    def events(self) -> list[TimelineEvent]:
        with self.database.read_session() as session:
            return list(session.scalars(select(TimelineEvent).order_by(TimelineEvent.id)))

    def close(self) -> None:
        self.database.dispose()


FINISHED = ("succeeded", "partial", "failed", "interrupted")


def blocks(call: Call) -> str:
    return json.dumps(call.args.get("blocks", []), ensure_ascii=False)


@pytest.fixture(scope="module")
def slack() -> Iterator[FakeSlack]:
    with FakeSlack() as fake:
        fake.add_channel(CHANNEL, name="incidents")
        for user in (REQUESTER, APPROVER):
            fake.add_user(user)
            fake.add_channel(user)
        yield fake


@pytest.fixture(scope="module")
def rig(bench: Bench, slack: FakeSlack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """A clean run (no crash) of the same containment: what AWS should hold after each case."""
    case = Case(bench, slack, tmp_path_factory.mktemp("clean"))
    try:
        case.run_clean()
        with case.database.read_session() as session:
            plan = session.scalars(select(ContainmentRequest)).one().plan
        actions = tuple(s["action"] for s in plan["steps"])
        assert actions == PLAN, f"the plan changed: update PLAN (and WAVES) to {actions}"
        yield Rig(bench, slack, aws_state(bench.direct, case.world), case.creates())
    finally:
        case.close()


def test_clean_run_creates_each_resource_once(rig: Rig) -> None:
    # The baseline every crash case is held to: one snapshot of each of the three volumes,
    # one group of each name, one role, one key.
    assert len(rig.clean["snapshots"]) == 3
    assert all(n == 1 for n in rig.clean["snapshots"].values())
    assert all(n == 1 for n in rig.clean["security_groups"].values())
    assert all(n == 1 for n in rig.clean["roles"].values())
    assert rig.clean_creates == {"ec2.CreateSnapshots": 1, "kms.CreateKey": 1}


@pytest.mark.parametrize("point", POINTS)
def test_kill_9_then_restart(rig: Rig, tmp_path: Path, point: str) -> None:
    case = Case(rig.bench, rig.slack, tmp_path)
    slack = rig.slack
    first = case.start()
    try:
        request_id = case.request_containment(first)
        case.switch.write_text(json.dumps({"request_id": request_id, "at": point}))
        first.click(slack, "containment_approve", request_id, APPROVER)
        assert first.died(30), f"the bot never reached {point}: " + str(case.steps(request_id))
    finally:
        first.kill()
    assert not case.switch.exists() and Path(f"{case.switch}.fired").exists()
    done_before = {a for a, s in case.steps(request_id).items() if s in ("succeeded", "skipped")}
    case.schedule_reminder()
    case.age_heartbeats()
    time.sleep(0.3)  # the reminder is due now, with no bot running

    second = case.start()
    try:
        status = case.wait_status(request_id, ("interrupted", "succeeded"), timeout=30)
        if status == "succeeded":
            # Never claimed: resumed, run once by the new process. Or every step was recorded
            # before the kill: settled from the records, nothing left to retry.
            assert point == "approved" or done_before == set(PLAN), (point, done_before)
            final = request_id
        else:
            assert point != "approved"
            assert status == "interrupted"
            row_ts = card_ts(case, request_id)
            card = slack.wait_for(
                "chat.update",
                lambda c: c.args.get("ts") == row_ts and "Interrupted" in blocks(c),
                timeout=15,
            )
            assert "containment_retry" in blocks(card)
            second.click(slack, "containment_retry", request_id, REQUESTER)
            final = case.retry_of(request_id)
            second.click(slack, "containment_approve", final, APPROVER)
            assert case.wait_status(final, FINISHED) == "succeeded", case.steps(final)
            # No step that had succeeded before the crash ran again.
            assert not done_before & set(case.steps(final)), (done_before, case.steps(final))
        reminder = slack.wait_for(
            "chat.postMessage",
            lambda c: "follow-up while the bot was down" in c.args.get("text", ""),
            timeout=15,
        )
    finally:
        second.kill()  # the state is final either way; a graceful drain is not under test
    assert "late" in reminder.args["text"]
    posts = [
        c
        for c in slack.calls_for("chat.postMessage")
        if "follow-up while the bot was down" in c.args.get("text", "")
    ]
    assert len(posts) == 1
    with case.database.read_session() as session:
        sent = session.scalars(select(Reminder).where(Reminder.dedupe_key == "crash:followup"))
        assert [(r.status, r.late) for r in sent] == [("sent", True)]

    # AWS holds what one clean run holds; no create was sent more often than in it.
    assert aws_state(rig.bench.direct, case.world) == rig.clean
    extra = case.creates() - rig.clean_creates
    assert not extra, f"created again after a kill at {point}: {dict(extra)}"
    # Each plan step succeeded once across the request and its retry.
    kinds = Counter(
        (json.loads(e.details).get("action"), e.kind)
        for e in case.events()
        if e.kind == "containment.step.succeeded"
    )
    assert all(n == 1 for n in kinds.values()), kinds
    verify = subprocess.run(
        [str(Path(sys.executable).with_name("incident-bot")), "verify", "INC-1"],
        cwd=ROOT,
        env=case.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    case.close()


def card_ts(case: Case, request_id: int) -> str:
    with case.database.read_session() as session:
        row = session.get(ContainmentRequest, request_id)
        assert row is not None and row.card_ts
        return row.card_ts
