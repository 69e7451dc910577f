"""`incident-bot drill`: a whole incident, offline, through the real bot.

Nothing is simulated below the Slack and AWS APIs: the sandbox is built in moto with real
boto3 calls, the finding goes through the real intake, the bot's Web API calls land on a
local console that prints them as Slack would show them, and the second responder's Approve
is a signed Slack interaction dispatched into the real Bolt app. Each check is named; any
failure makes the drill exit non-zero and says which.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlencode

import boto3
import botocore.client
from botocore.exceptions import ClientError
from sqlalchemy import func, select

from bot.clock import SystemClock
from bot.drill.console import ConsoleSlack
from bot.settings import AppConfig, EnvSettings, Settings
from commands.drills.sandbox import Sandbox, build_sandbox, describe
from commands.drills.scenarios import SCENARIOS, Scenario, host_of

RESPONDER = "U0RESPONDER1"
SECOND_RESPONDER = "U0RESPONDER2"
CHANNEL = "C0DRILLINC"
SIGNING_SECRET = "drill-signing-secret"
WAIT_S = 60.0
SETTLE_S = 15.0


# What each check says when it fails: named by what went wrong, never by what was hoped for.
FAILED_AS = {
    "incident opened": "no incident opened",
    "containment planned": "no plan posted",
    "second responder approved": "approval not recorded",
    "containment ran": "containment incomplete",
    "snapshots taken": "volumes not snapshotted",
    "network isolated": "network not isolated",
    "out of Auto Scaling": "still in Auto Scaling",
    "out of the load balancer": "still behind the load balancer",
    "access key deactivated": "access key still active",
    "old sessions revoked": "old sessions not revoked",
    "role sessions revoked": "role sessions not revoked",
    "public access blocked": "public access not blocked",
    "caller denied on the bucket": "caller not denied on the bucket",
    "function throttled": "function not throttled",
    "public invoke removed": "function still public",
    "no regulator clock": "regulator clock started without personal data",
    "clock started by the PII tag": "PII tag did not start the clock",
    "GDPR clock started": "GDPR clock not started",
    "reminders scheduled": "reminders missing",
    "timeline exported": "timeline export incomplete",
    "timeline verified": "timeline hash chain broken",
    "retry completed the rest": "retry did not complete the rest",
}


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    phase: str = ""  # "after retry" for the recovery's checks

    @property
    def label(self) -> str:
        """The line's name: the check's when it passed, what went wrong when it failed."""
        text = self.name if self.ok else FAILED_AS.get(self.name, f"{self.name}: failed")
        return f"{self.phase}: {text}" if self.phase else text


@dataclass
class DrillReport:
    scenario: str
    checks: list[Check] = field(default_factory=list)
    detect_to_contain_s: float | None = None
    steps_succeeded: int = 0
    steps_total: int = 0
    deadlines: list[str] = field(default_factory=list)
    # The chaos drill's recovery: None when nothing failed (or no retry was rehearsed).
    recovered: bool | None = None

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def recovery_checks(self) -> list[Check]:
        return [c for c in self.checks if c.phase]


class DrillAborted(Exception):
    """A check failed in a way that makes the following ones meaningless."""


def _config(scenario: Scenario) -> AppConfig:
    return AppConfig.model_validate(
        {
            "slack": {"incident_channel": CHANNEL},
            "approvals": {
                "approvers": [RESPONDER, SECOND_RESPONDER],
                "two_person_rule": True,
                "expire_after_minutes": 30,
                "auto_request_min_severity": 7.0,
            },
            "guardduty": {"min_severity": 4.0, "poll_interval_seconds": 0},
            "containment": {"evidence_bucket": "drill-evidence", "dry_run": False},
            "contacts": {"slack_usergroup": None},
            # The offline drill's AWS is in-process moto: its containment really runs.
            "drills": {"allow_changes": True},
        }
    )


@contextlib.contextmanager
def _offline_aws() -> Iterator[None]:
    """In-process moto with throwaway credentials: no real account can be reached."""
    from moto import mock_aws

    saved = {k: os.environ.get(k) for k in _AWS_ENV}
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "drill",
            "AWS_SECRET_ACCESS_KEY": "drill",
            "AWS_SESSION_TOKEN": "drill",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    for k in ("AWS_PROFILE", "AWS_ENDPOINT_URL"):
        os.environ.pop(k, None)
    try:
        with mock_aws():
            yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


_AWS_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_PROFILE",
    "AWS_ENDPOINT_URL",
)


@dataclass
class Faults:
    """The injected failures; `lift()` is the responder fixing their cause (say, granting the
    missing permission) before retrying."""

    operations: list[str]
    active: bool = True

    def lift(self) -> None:
        self.active = False


@contextlib.contextmanager
def inject_faults(operations: list[str]) -> Iterator[Faults]:
    """Make the named AWS operations ("ec2:CreateSnapshots") fail with AccessDenied.

    A chaos drill: rehearse what responders see when a containment step fails.
    """
    faults = Faults(list(operations), active=bool(operations))
    if not operations:
        yield faults
        return
    wanted = {tuple(op.lower().split(":", 1)) for op in operations}
    original = botocore.client.BaseClient._make_api_call

    def failing(self: Any, operation_name: str, api_params: Any) -> Any:
        service = self.meta.service_model.service_name.lower()
        if faults.active and (service, operation_name.lower()) in wanted:
            raise ClientError(
                {"Error": {"Code": "AccessDenied", "Message": "injected by the drill"}},
                operation_name,
            )
        return original(self, operation_name, api_params)

    botocore.client.BaseClient._make_api_call = failing  # type: ignore[method-assign]
    try:
        yield faults
    finally:
        botocore.client.BaseClient._make_api_call = original  # type: ignore[method-assign]


class Drill:
    def __init__(
        self, scenario: Scenario, *, db_url: str, out: TextIO, faults: Faults | None = None
    ) -> None:
        self.scenario = scenario
        self.faults = faults or Faults([], active=False)
        self.phase = ""
        self.db_url = db_url
        self.out = out
        self.report = DrillReport(scenario.name)
        self.response_url = ""
        self.runtime: Any = None

    # -- output ----------------------------------------------------------------------------

    def say(self, text: str = "") -> None:
        self.settle()
        self.out.write(text + "\n")
        self.out.flush()

    def settle(self) -> None:
        """Let the bot finish what it is posting, so the transcript reads in the order things
        happen (the bot's Slack writes run in its background pool)."""
        if self.runtime is None:
            return
        # GuardDuty cards and their proposals come from the publisher's own worker.
        publisher = self.runtime.services.publisher
        if publisher is not None:
            publisher.wait_idle(SETTLE_S)
        self.runtime.background.wait_idle(timeout=SETTLE_S)

    def stage(self, text: str) -> None:
        self.say(f"\n▶ {text}")

    def check(self, name: str, ok: bool, detail: str, *, fatal: bool = False) -> bool:
        check = Check(name, ok, detail, self.phase)
        self.report.checks.append(check)
        self.say(f"  {'✔' if ok else '✘'} {check.label}: {detail}")
        if not ok and fatal:
            raise DrillAborted(name)
        return ok

    # -- the exercise ------------------------------------------------------------------------

    def run(self) -> DrillReport:
        from bot.server import drain
        from bot.wiring import create_app, start_services
        from storage.migrate import upgrade

        self.say(f"DRILL · {self.scenario.name}: {self.scenario.title}")
        self.say("Offline: AWS is moto in this process; Slack is the console below.")
        upgrade(self.db_url)
        self.stage("Building the sandbox environment")
        sandbox = build_sandbox(region="us-east-1")
        for k, v in describe(sandbox).items():
            self.say(f"  {k}: {v}")
        s3 = boto3.client("s3", region_name=sandbox.region)
        s3.create_bucket(Bucket="drill-evidence")

        with ConsoleSlack(self.out, users={RESPONDER: "alice", SECOND_RESPONDER: "bob"}) as slack:
            settings = Settings(
                env=EnvSettings.model_validate(
                    {
                        "slack_bot_token": "xoxb-drill",
                        "slack_signing_secret": SIGNING_SECRET,
                        "slack_api_url": slack.url,
                        "database_url": self.db_url,
                    }
                ),
                config=_config(self.scenario),
            )
            self.response_url = slack.url + "response"
            app = create_app(settings, clock=SystemClock(), token_verification=False)
            runtime = app.runtime
            start_services(runtime)
            self.runtime = runtime
            try:
                self._exercise(app, runtime, slack, sandbox)
            except DrillAborted as exc:
                self.say(f"\n  drill stopped: check '{exc}' failed")
            finally:
                drain(runtime, grace=10)
                self.runtime = None
        return self.report

    def _exercise(self, app: Any, runtime: Any, slack: ConsoleSlack, sb: Sandbox) -> None:
        from bot.guardduty.intake import intake
        from commands.findings.normalize import normalize
        from storage.models import ContainmentRequest, Incident, Reminder

        db = runtime.database
        self.stage("GuardDuty finding arrives")
        detected = runtime.now()
        event = self.scenario.finding(sb, detected)
        finding = normalize(event)[0]
        self.say(f"  {finding.type} · severity {finding.severity:g} · {finding.resource_id}")
        results = intake(runtime, [finding])
        opened = results[0] if results else None
        self.check(
            "incident opened",
            bool(opened and opened.outcome == "opened" and opened.incident_key),
            f"{opened.incident_key} ({opened.outcome})" if opened else "no result",
            fatal=True,
        )
        assert opened is not None and opened.incident_key is not None
        key = opened.incident_key

        self.stage("Containment is planned and posted for approval")
        button = self._wait(lambda: slack.find_button("containment_approve"), "approval card")
        if button is None:
            # Auto-proposal is off or failed: the first responder asks, as they would.
            self._slash(app, "/contain", f"{sb_target(self.scenario, sb)} {key} drill", RESPONDER)
            button = self._wait(lambda: slack.find_button("containment_approve"), "approval card")
        self.check(
            "containment planned",
            button is not None,
            "approval card with Approve/Reject posted" if button else "no approval card",
            fatal=True,
        )
        assert button is not None
        msg, approve = button
        with db.read_session() as s:
            request = s.scalars(
                select(ContainmentRequest).order_by(ContainmentRequest.id.desc())
            ).first()
            planned = len((request.plan or {}).get("steps", [])) if request else 0
            requested_by = request.requested_by if request else "?"
        self.say(f"  plan: {planned} steps, requested by {requested_by}")

        self.stage(f"A second responder ({SECOND_RESPONDER}) clicks Approve")
        self._click(app, msg, approve, SECOND_RESPONDER)
        t_start = time.monotonic()
        done = self._wait(lambda: self._finished(db), "containment to finish", timeout=WAIT_S)
        with db.read_session() as s:
            req = s.get(ContainmentRequest, request.id) if request else None
            steps = list(req.steps) if req else []
            finished_at = req.finished_at if req else None
            status = req.status if req else "missing"
            decided_by = req.decided_by if req else None
        self.check(
            "second responder approved", decided_by == SECOND_RESPONDER, f"decided by {decided_by}"
        )
        self.report.steps_total = len(steps)
        self.report.steps_succeeded = sum(1 for st in steps if st.status == "succeeded")
        if finished_at:
            self.report.detect_to_contain_s = (finished_at - detected).total_seconds()
        self.check(
            "containment ran",
            bool(done) and status == "succeeded",
            f"{status}: {self.report.steps_succeeded}/{self.report.steps_total} steps succeeded"
            + "".join(f"; {st.action} failed: {st.error}" for st in steps if st.status == "failed"),
        )
        self.say(f"  ({time.monotonic() - t_start:.1f}s from approval)")

        self.stage("Verifying the containment in AWS")
        self._verify_aws(sb, key)
        if status != "succeeded" and self.faults.operations and request is not None:
            self._rehearse_recovery(app, db, slack, sb, key, request.id)

        self.stage("Regulator clock")
        if not self.scenario.personal_data:
            # No personal data at stake: nothing may start the clock on its own.
            self.check(
                "no regulator clock",
                not self._personal(db, key),
                "no personal data: no GDPR clock started"
                if not self._personal(db, key)
                else "a GDPR clock started without personal data",
            )
            self._export(db, key, slack)
            return
        if self.scenario.target_kind == "instance":
            # The instance is tagged DataClassification=PII: reading its tags starts the clock.
            from_tag = self._wait(lambda: self._personal(db, key), "the PII tag to start the clock")
            self.check(
                "clock started by the PII tag",
                bool(from_tag),
                "DataClassification=PII on the instance" if from_tag else "tag not acted on",
            )
        personal = self._personal(db, key)
        if not personal:
            # No PII tag to go on: the responder decides personal data was exposed.
            self._slash(app, "/incident", f"personal-data {key}", RESPONDER)
            self._wait(lambda: self._personal(db, key), "the regulator clock")
        with db.read_session() as s:
            inc = s.scalars(select(Incident).where(Incident.number == int(key.split("-")[1]))).one()
            reminders = s.scalars(
                select(Reminder)
                .where(Reminder.incident_id == inc.id, Reminder.kind.in_(("gdpr", "gdpr_overdue")))
                .order_by(Reminder.due_at)
            ).all()
            aware_at = inc.aware_at
        expected = len(runtime.config.deadlines.reminder_hours_before) + 1
        self.report.deadlines = [f"{r.kind} {r.due_at:%Y-%m-%d %H:%M}Z" for r in reminders]
        deadline = (
            aware_at + dt.timedelta(hours=runtime.config.deadlines.gdpr_hours) if aware_at else None
        )
        self.check(
            "GDPR clock started",
            aware_at is not None,
            f"aware at {aware_at:%H:%M:%S}Z, notice due {deadline:%Y-%m-%d %H:%M}Z"
            if aware_at and deadline
            else "no aware_at",
        )
        self.check(
            "reminders scheduled",
            len(reminders) >= expected and all(r.status == "pending" for r in reminders),
            f"{len(reminders)} pending ({', '.join(self.report.deadlines[:5])})",
        )

        self._export(db, key, slack)

    def _export(self, db: Any, key: str, slack: ConsoleSlack) -> None:
        from commands.exports import export_timeline
        from storage.models import Incident
        from storage.timeline import verify_chain

        self.stage("Timeline exported and verified")

        with db.read_session() as s:
            inc = s.scalars(select(Incident).where(Incident.number == int(key.split("-")[1]))).one()
            import io

            buf = io.StringIO()
            n = export_timeline(session=s, incident=inc, fmt="md", out=buf)
            chain = verify_chain(conn=s, incident=inc)
        lines = buf.getvalue().splitlines()
        for line in [*lines[:4], "| … |", *lines[-3:]]:
            self.say(f"  {line[:160]}")
        self.check("timeline exported", n > 5, f"{n} events in the Markdown export")
        self.check(
            "timeline verified",
            chain.ok,
            f"hash chain intact over {chain.events} events"
            if chain.ok
            else f"broken at #{chain.first_bad_seq}: {chain.reason}",
        )
        slack_calls = len(slack.calls)
        self.say(
            f"\n  ({slack_calls} Slack Web API calls made; "
            f"{slack.count('chat.postMessage')} messages, {slack.count('chat.update')} updates)"
        )

    def _rehearse_recovery(
        self, app: Any, db: Any, slack: ConsoleSlack, sb: Sandbox, key: str, failed_id: int
    ) -> None:
        """What responders do after a partial containment: fix the cause, retry what is left,
        approve the retry, and see the rest complete."""
        from bot.views.approval_card import RETRY
        from storage.models import ContainmentRequest

        self.stage(
            "Recovery: the cause is fixed (the drill stops failing "
            f"{', '.join(self.faults.operations)}); a responder retries what is left"
        )
        self.faults.lift()
        self.phase = "after retry"
        retry = self._wait(lambda: slack.find_button(RETRY), "the Retry what is left button")
        if retry is None:
            self.report.recovered = False
            self.check("retry completed the rest", False, "no [Retry what is left] on the card")
            return
        self._click(app, retry[0], retry[1], RESPONDER)
        card = self._wait(
            lambda: self._newer_approval(slack, db, failed_id), "the retry's approval card"
        )
        if card is None:
            self.report.recovered = False
            self.check("retry completed the rest", False, "the retry was not posted for approval")
            return
        msg, approve, retry_id = card
        self._click(app, msg, approve, SECOND_RESPONDER)
        self._wait(lambda: self._request_done(db, retry_id), "the retry to finish", timeout=WAIT_S)
        with db.read_session() as s:
            req = s.get(ContainmentRequest, retry_id)
            status = req.status if req else "missing"
            steps = list(req.steps) if req else []
        done = sum(1 for st in steps if st.status == "succeeded")
        ok = self.check(
            "retry completed the rest",
            status == "succeeded",
            f"request #{retry_id} {status}: {done}/{len(steps)} remaining step(s) succeeded"
            + "".join(f"; {st.action} failed: {st.error}" for st in steps if st.status == "failed"),
        )
        self._verify_aws(sb, key)
        self.report.recovered = ok and all(c.ok for c in self.report.recovery_checks())
        self.phase = ""

    def _newer_approval(
        self, slack: ConsoleSlack, db: Any, older_than: int
    ) -> tuple[Any, dict[str, Any], int] | None:
        from bot.views.approval_card import APPROVE
        from storage.models import ContainmentRequest

        found = slack.find_button(APPROVE)
        if found is None:
            return None
        try:
            request_id = int(found[1].get("value", "0"))
        except ValueError:
            return None
        with db.read_session() as s:
            ok = request_id > older_than and s.get(ContainmentRequest, request_id) is not None
        return (found[0], found[1], request_id) if ok else None

    def _request_done(self, db: Any, request_id: int) -> bool:
        from storage.models import ContainmentRequest

        with db.read_session() as s:
            req = s.get(ContainmentRequest, request_id)
            return bool(req and req.finished_at)

    # -- AWS checks --------------------------------------------------------------------------

    def _verify_aws(self, sb: Sandbox, key: str) -> None:
        kind = self.scenario.target_kind
        if kind == "access_key":
            self._verify_access_key(sb)
        elif kind == "role":
            self._verify_role(sb)
        elif kind == "bucket":
            self._verify_bucket(sb)
        elif kind == "function":
            self._verify_function(sb)
        else:
            self._verify_instance(sb, key)

    def _verify_access_key(self, sb: Sandbox) -> None:
        iam = boto3.client("iam", region_name=sb.region)
        keys = iam.list_access_keys(UserName=sb.user_name)["AccessKeyMetadata"]
        status = next((k["Status"] for k in keys if k["AccessKeyId"] == sb.access_key_id), "?")
        self.check("access key deactivated", status == "Inactive", f"{sb.access_key_id} {status}")
        policies = iam.list_user_policies(UserName=sb.user_name)["PolicyNames"]
        self.check("old sessions revoked", bool(policies), f"user policies: {policies}")

    def _verify_role(self, sb: Sandbox) -> None:
        iam = boto3.client("iam", region_name=sb.region)
        revoking = []
        for name in iam.list_role_policies(RoleName=sb.app_role_name)["PolicyNames"]:
            doc = iam.get_role_policy(RoleName=sb.app_role_name, PolicyName=name)["PolicyDocument"]
            text = doc if isinstance(doc, str) else json.dumps(doc)
            if "aws:TokenIssueTime" in text:
                revoking.append(name)
        self.check(
            "role sessions revoked",
            bool(revoking),
            f"{sb.app_role_name} denies sessions issued before now ({', '.join(revoking)})"
            if revoking
            else f"no aws:TokenIssueTime deny on {sb.app_role_name}",
        )

    def _verify_bucket(self, sb: Sandbox) -> None:
        s3 = boto3.client("s3", region_name=sb.region)
        try:
            block = s3.get_public_access_block(Bucket=sb.bucket_name)[
                "PublicAccessBlockConfiguration"
            ]
        except ClientError:
            block = {}
        blocked = bool(block) and all(block.values())
        self.check(
            "public access blocked",
            blocked,
            f"{sb.bucket_name}: all four Block Public Access settings on"
            if blocked
            else f"{sb.bucket_name}: public access block {block or 'absent'}",
        )
        policy = json.loads(s3.get_bucket_policy(Bucket=sb.bucket_name)["Policy"])
        user_arn = f"arn:aws:iam::{sb.account_id}:user/{sb.user_name}"
        denies = [
            st for st in policy["Statement"] if st.get("Effect") == "Deny" and user_arn in str(st)
        ]
        self.check(
            "caller denied on the bucket",
            bool(denies),
            f"bucket policy denies {sb.user_name}"
            if denies
            else "no deny for the finding's caller",
        )

    def _verify_function(self, sb: Sandbox) -> None:
        lam = boto3.client("lambda", region_name=sb.region)
        reserved = lam.get_function_concurrency(FunctionName=sb.function_name).get(
            "ReservedConcurrentExecutions"
        )
        self.check(
            "function throttled",
            reserved == 0,
            f"{sb.function_name} reserved concurrency {reserved}",
        )
        try:
            statements = json.loads(lam.get_policy(FunctionName=sb.function_name)["Policy"])[
                "Statement"
            ]
        except ClientError:
            statements = []
        public = [st.get("Sid") for st in statements if "*" in str(st.get("Principal"))]
        self.check(
            "public invoke removed",
            not public,
            f"{len(statements)} statement(s) left, none public"
            if not public
            else f"still public: {', '.join(map(str, public))}",
        )

    def _verify_instance(self, sb: Sandbox, key: str) -> None:
        instance_id, volume_ids, eni_ids, group_id, _ = host_of(sb, self.scenario.host)
        ec2 = boto3.client("ec2", region_name=sb.region)
        snaps = ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]
        ours = [
            s
            for s in snaps
            if s.get("VolumeId") in volume_ids
            and any(t.get("Value") == key for t in s.get("Tags", []))
        ]
        self.check(
            "snapshots taken",
            {s["VolumeId"] for s in ours} == set(volume_ids),
            f"{len(ours)} of {len(volume_ids)} volumes snapshotted and tagged {key}",
        )
        enis = ec2.describe_network_interfaces(NetworkInterfaceIds=eni_ids)["NetworkInterfaces"]
        groups = {e["NetworkInterfaceId"]: [g["GroupId"] for g in e["Groups"]] for e in enis}
        isolated = all(group_id not in g and len(g) == 1 for g in groups.values())
        self.check("network isolated", isolated, f"ENI groups now {groups}")
        if self.scenario.host != "web":
            return  # the batch host is in no Auto Scaling group and behind no load balancer
        asg = boto3.client("autoscaling", region_name=sb.region)
        member = asg.describe_auto_scaling_instances(InstanceIds=[instance_id])[
            "AutoScalingInstances"
        ]
        state = member[0]["LifecycleState"] if member else "detached"
        self.check("out of Auto Scaling", state in ("Standby", "detached"), f"instance {state}")
        elbv2 = boto3.client("elbv2", region_name=sb.region)
        targets = elbv2.describe_target_health(TargetGroupArn=sb.target_group_arn)[
            "TargetHealthDescriptions"
        ]
        self.check(
            "out of the load balancer",
            all(t["Target"]["Id"] != instance_id for t in targets),
            f"{len(targets)} target(s) left in checkout-web",
        )

    # -- Slack interactions ---------------------------------------------------------------------

    def _dispatch(self, app: Any, body: str, content_type: str) -> Any:
        from slack_bolt.request import BoltRequest
        from slack_sdk.signature import SignatureVerifier

        ts = str(int(time.time()))
        sig = SignatureVerifier(SIGNING_SECRET).generate_signature(timestamp=ts, body=body)
        headers = {
            "content-type": [content_type],
            "x-slack-request-timestamp": [ts],
            "x-slack-signature": [sig],
        }
        return app.dispatch(BoltRequest(body=body, headers=headers))

    def _slash(self, app: Any, command: str, text: str, user: str) -> None:
        self.say(f"  {user} types: {command} {text}")
        body = urlencode(
            {
                "token": "drill",
                "team_id": "T0DRILL",
                "team_domain": "drill",
                "channel_id": CHANNEL,
                "channel_name": "incidents",
                "user_id": user,
                "user_name": user.lower(),
                "command": command,
                "text": text,
                "api_app_id": "A0DRILL",
                "response_url": self.response_url,
                "trigger_id": "drill.trigger",
            }
        )
        resp = self._dispatch(app, body, "application/x-www-form-urlencoded")
        if resp.status != 200:
            self.say(f"  (Slack would show an error: HTTP {resp.status})")
        elif resp.body:
            with contextlib.suppress(ValueError):
                data = json.loads(resp.body)
                self.say(f"  (only visible to {user}) {str(data.get('text', ''))[:300]}")

    def _click(self, app: Any, msg: Any, button: dict[str, Any], user: str) -> None:
        self.say(f"  {user} clicks [{button.get('text', {}).get('text', '?')}]")
        payload = {
            "type": "block_actions",
            "team": {"id": "T0DRILL", "domain": "drill"},
            "user": {"id": user, "username": user.lower(), "team_id": "T0DRILL"},
            "api_app_id": "A0DRILL",
            "token": "drill",
            "container": {"type": "message", "message_ts": msg.ts, "channel_id": msg.channel},
            "trigger_id": "drill.trigger",
            "channel": {"id": msg.channel, "name": "incidents"},
            "message": {"ts": msg.ts, "text": msg.text, "blocks": msg.blocks},
            "response_url": self.response_url,
            "actions": [
                {
                    "action_id": button["action_id"],
                    "block_id": button.get("block_id", "b"),
                    "text": button.get("text"),
                    "value": button.get("value", ""),
                    "type": "button",
                    "action_ts": str(time.time()),
                }
            ],
        }
        resp = self._dispatch(
            app, urlencode({"payload": json.dumps(payload)}), "application/x-www-form-urlencoded"
        )
        if resp.status != 200:
            self.say(f"  (the click failed: HTTP {resp.status} {resp.body[:200]})")

    # -- waiting -------------------------------------------------------------------------------

    def _wait(self, probe: Callable[[], Any], what: str, *, timeout: float = 20.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = probe()
            if got:
                return got
            time.sleep(0.05)
        self.say(f"  (gave up waiting for {what} after {timeout:.0f}s)")
        return None

    def _personal(self, db: Any, key: str) -> bool:
        from storage.models import Incident

        with db.read_session() as s:
            return bool(
                s.scalar(
                    select(Incident.personal_data).where(Incident.number == int(key.split("-")[1]))
                )
            )

    def _finished(self, db: Any) -> bool:
        from storage.models import ContainmentRequest

        with db.read_session() as s:
            live = s.scalar(
                select(func.count())
                .select_from(ContainmentRequest)
                .where(ContainmentRequest.status.in_(("pending", "approved", "running")))
            )
            done = s.scalar(
                select(func.count())
                .select_from(ContainmentRequest)
                .where(ContainmentRequest.finished_at.is_not(None))
            )
        return live == 0 and bool(done)


def sb_target(scenario: Scenario, sb: Sandbox) -> str:
    """What the responder types after /contain for this scenario's subject."""
    return {
        "access_key": sb.access_key_id,
        "role": f"role:{sb.app_role_name}",
        "bucket": f"bucket:{sb.bucket_name}",
        "function": f"lambda:{sb.function_name}",
    }.get(scenario.target_kind) or host_of(sb, scenario.host)[0]


def print_score(report: DrillReport, out: TextIO) -> None:
    out.write("\n════ Score ════\n")
    ttc = report.detect_to_contain_s
    out.write(
        f"  detection → containment: {f'{ttc:.1f}s' if ttc is not None else 'not contained'}\n"
    )
    out.write(f"  steps succeeded:         {report.steps_succeeded}/{report.steps_total}\n")
    out.write(
        f"  deadlines set:           {len(report.deadlines)}"
        + (f" (first {report.deadlines[0]})" if report.deadlines else "")
        + "\n"
    )
    passed = sum(c.ok for c in report.checks)
    out.write(f"  checks passed:           {passed}/{len(report.checks)}\n")
    if report.recovered is not None:
        out.write(
            "  recovery:                "
            + ("the retry completed the rest" if report.recovered else "NOT recovered")
            + "\n"
        )
    if report.ok:
        out.write("  RESULT: PASS\n")
    else:
        out.write("  RESULT: FAIL — " + "; ".join(c.label for c in report.failed()) + "\n")
    out.flush()


def run_drill(
    *,
    scenario: str,
    db_path: str | None = None,
    faults: list[str] | None = None,
    out: TextIO | None = None,
) -> int:
    """Run one scenario; returns the process exit code (0 pass, 1 a check failed, 2 usage)."""
    out = out or sys.stdout
    chosen = SCENARIOS.get(scenario)
    if chosen is None:
        sys.stderr.write(
            f"incident-bot: error: unknown scenario {scenario!r}: "
            f"choose one of {', '.join(SCENARIOS)}\n"
        )
        return 2
    with contextlib.ExitStack() as stack:
        if db_path:
            path = Path(db_path).resolve()
            if path.exists():
                sys.stderr.write(f"incident-bot: error: {path} exists: pass a new file for --db\n")
                return 2
            if not path.parent.is_dir():
                sys.stderr.write(
                    f"incident-bot: error: the folder {path.parent} does not exist: "
                    "create it, or pass --db a file in an existing folder\n"
                )
                return 2
        else:
            path = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "drill.db"
        stack.enter_context(_offline_aws())
        injected = stack.enter_context(inject_faults(faults or []))
        report = Drill(chosen, db_url=f"sqlite:///{path}", out=out, faults=injected).run()
        print_score(report, out)
        if db_path:
            out.write(f"  database kept at {path}\n")
    return 0 if report.ok else 1
