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
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import botocore.client
from botocore.exceptions import ClientError
from sqlalchemy import func, select

from bot.clock import SystemClock
from bot.drill.aws_checks import AwsChecks
from bot.drill.console import ConsoleSlack
from bot.drill.report import Check, DrillReport, print_score
from bot.drill.slack_clicks import CHANNEL, SIGNING_SECRET, SlackClicks
from bot.guardduty.publisher import publisher_for
from bot.settings import AppConfig, EnvSettings, Settings
from commands.drills.sandbox import Sandbox, build_sandbox, deployed_functions, describe
from commands.drills.scenarios import SCENARIOS, Scenario, host_of
from containment.clients import aws_client

RESPONDER = "U0RESPONDER1"
SECOND_RESPONDER = "U0RESPONDER2"
WAIT_S = 60.0
SETTLE_S = 15.0
CONSOLE_UPDATE_INTERVAL = 0.2  # seconds between a card's updates on the console


class DrillAborted(Exception):
    """A check failed in a way that makes the following ones meaningless."""


def _config(scenario: Scenario) -> AppConfig:
    return AppConfig.model_validate(
        {
            # Slack is the console: no rate limit to keep to, so nothing waits for one.
            "slack": {"incident_channel": CHANNEL, "pace": False},
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


class Drill(AwsChecks, SlackClicks):
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
        s3 = aws_client("s3", sandbox.region)
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
            hooks = deployed_functions(runtime.clock.now)  # the sandbox's deployed revoker
            runtime.options.client_hooks = (*runtime.options.client_hooks, *hooks)
            start_services(runtime)
            # Card updates wait UPDATE_INTERVAL (10 s) to spare Slack's limits; the console
            # has none, and the transcript would only wait for them.
            publisher_for(runtime).update_interval = CONSOLE_UPDATE_INTERVAL
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
