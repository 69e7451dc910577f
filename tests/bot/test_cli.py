"""The CLI as an operator uses it: real processes, real SQLite files."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text

from bot.cli import main
from commands.incidents import open_incident
from storage.db import Database
from storage.migrate import upgrade
from storage.models import Incident
from storage.timeline import append_event
from tests.clock import TEST_CLOCK


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None):
    full = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "INCIDENT_BOT_"))}
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        capture_output=True,
        text=True,
        env=full,
        cwd=cwd,
        timeout=60,
    )


def _config(tmp_path: Path, body: str) -> dict[str, str]:
    path = tmp_path / "incident-bot.yml"
    path.write_text(body)
    return {"INCIDENT_BOT_CONFIG": str(path), "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"}


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("approvals:\n  expire_after_minutes: soon\n", "approvals.expire_after_minutes"),
        ("approvals:\n  expire_after_minutes: -5\n", "approvals.expire_after_minutes"),
        ("guardduty:\n  min_severity: 11\n", "guardduty.min_severity"),
        ("guardduty:\n  regions: us-east-1\n", "guardduty.regions"),
        ("deadlines:\n  gdpr_hours: 0\n", "deadlines.gdpr_hours"),
        ("deadlines:\n  timezone: Mars/Olympus\n", "deadlines.timezone"),
        ("deadlines:\n  digest_time: '25:00'\n", "deadlines.digest_time"),
        ("containment:\n  examiner_cidrs: [examiners]\n", "containment.examiner_cidrs"),
        ("containment:\n  examiner_cidrs: [0.0.0.0/0]\n", "admits everyone"),
        ("slack:\n  incident_chanel: C1\n", "slack.incident_chanel"),
        ("wipe:\n  kms_pending_days: 3\n", "wipe.kms_pending_days"),
        ("forensics:\n  account_id: '1234'\n", "forensics.account_id"),
        ("forensics:\n  account_id: '111122223333'\n", "set forensics.role_name"),
        ("containment:\n  evidence_lock_mode: legal\n", "containment.evidence_lock_mode"),
        ("slack: [oops\n", "is not valid YAML"),
        ("- a\n- b\n", "must be a mapping"),
    ],
)
def test_bad_config_is_one_line_naming_the_key_and_exit_2(tmp_path, body, expected) -> None:
    r = cli("db", "upgrade", env=_config(tmp_path, body))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert expected in lines[0]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL"),
        ({"INCIDENT_BOT_SLACK_API_URL": "slack.example"}, "INCIDENT_BOT_SLACK_API_URL"),
        ({"INCIDENT_BOT_CONFIG": "/nonexistent/incident-bot.yml"}, "INCIDENT_BOT_CONFIG"),
        ({"SLACK_SIGNING_SECRET": ""}, "SLACK_SIGNING_SECRET: Value error, is set but empty"),
        ({"SLACK_SIGNING_SECRET": " "}, "SLACK_SIGNING_SECRET: Value error, is set but empty"),
        ({"SLACK_BOT_TOKEN": ""}, "SLACK_BOT_TOKEN"),
        ({"INCIDENT_BOT_INGEST_TOKEN": " "}, "INCIDENT_BOT_INGEST_TOKEN"),
        ({"INCIDENT_BOT_INGEST_TOKEN": "tok "}, "must not start or end with whitespace"),
    ],
)
def test_bad_environment_is_one_line_and_exit_2(env, expected) -> None:
    r = cli("db", "upgrade", env=env)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1
    assert expected in r.stderr


def test_run_names_the_missing_slack_credentials(tmp_path) -> None:
    env = _config(tmp_path, "slack:\n  incident_channel: C0INCIDENT\n")
    r = cli("run", env=env)
    assert r.returncode == 2
    assert "SLACK_BOT_TOKEN" in r.stderr and "SLACK_SIGNING_SECRET" in r.stderr
    r = cli(
        "run",
        env={**env, "SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s"}
        | _config(tmp_path, "slack: {}\n"),
    )
    assert r.returncode == 2
    assert "slack.incident_channel" in r.stderr


@pytest.mark.parametrize("secret", ["", " "])
def test_run_refuses_a_blank_signing_secret_before_serving(tmp_path, secret) -> None:
    """It used to start, say 200 on /healthz and answer every Slack request 500."""
    env = _config(tmp_path, "slack:\n  incident_channel: C0INCIDENT\n")
    env |= {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": secret}
    r = cli("run", "--http", "--port", "3999", env=env)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "incident-bot: error: SLACK_SIGNING_SECRET: Value error, is set but empty; set the real "
        "value or unset the variable (check the environment)"
    ]


def test_unknown_option_is_one_line_exit_2() -> None:
    r = cli("export", "INC-1", "--format", "pdf")
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1


def test_secrets_never_show_in_repr(monkeypatch) -> None:
    from bot.settings import load_settings

    s = load_settings(
        {
            "SLACK_BOT_TOKEN": "xoxb-secret-123",
            "SLACK_SIGNING_SECRET": "sig-456",
            "INCIDENT_BOT_INGEST_TOKEN": "tok-789",
        }
    )
    text_ = repr(s) + str(s) + repr(s.env) + s.model_dump_json()
    for secret in ("xoxb-secret-123", "sig-456", "tok-789"):
        assert secret not in text_
    assert s.env.slack_bot_token.get_secret_value() == "xoxb-secret-123"


@pytest.fixture
def populated(tmp_path) -> tuple[dict[str, str], str]:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    upgrade(url)
    db = Database(url, clock=TEST_CLOCK)
    with db.session() as s:
        inc = open_incident(session=s, title="C2 | beacon", created_by="U1")
        for i in range(5):
            append_event(session=s, incident=inc, actor="U2", kind="note", summary=f"line\n{i}")
    db.dispose()
    return {"DATABASE_URL": url, "INCIDENT_BOT_CONFIG": str(tmp_path / "none.yml")}, url


def test_db_upgrade_creates_the_schema(tmp_path) -> None:
    r = cli("db", "upgrade", env={"DATABASE_URL": f"sqlite:///{tmp_path / 'n.db'}"}, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "n.db").exists()


def test_export_md_json_csv(populated) -> None:
    env, _ = populated
    env = {"DATABASE_URL": env["DATABASE_URL"]}
    md = cli("export", "INC-1", "--format", "md", env=env)
    assert md.returncode == 0, md.stderr
    assert "| # | Time (UTC) | Actor | Event | Summary |" in md.stdout
    assert "C2 \\| beacon" in md.stdout and "line<br>4" in md.stdout
    data = json.loads(cli("export", "INC-1", "--format", "json", env=env).stdout)
    assert data["incident"] == "INC-1" and len(data["events"]) == 6
    assert data["events"][0]["at"].endswith("Z")
    csv_out = cli("export", "INC-1", "--format", "csv", env=env).stdout
    assert csv_out.splitlines()[0].startswith("incident,seq,at")


def test_verify_ok_then_tampered(populated) -> None:
    env, url = populated
    env = {"DATABASE_URL": url}
    ok = cli("verify", "INC-1", env=env)
    assert ok.returncode == 0 and "chain intact" in ok.stdout
    db = Database(url, clock=TEST_CLOCK)
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE timeline_events SET actor = 'U9' WHERE seq = 3"))
    db.dispose()
    bad = cli("verify", "INC-1", env=env)
    assert bad.returncode == 1
    assert "#3" in bad.stderr


def test_unknown_incident_is_one_line_naming_the_database(populated) -> None:
    _, url = populated
    r = cli("verify", "INC-9", env={"DATABASE_URL": url})
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"incident-bot: error: no incident INC-9 in the database at {url}: check the key, or "
        "DATABASE_URL (`/incident list` in Slack shows the open ones)"
    ]


def test_plan_as_asl_and_its_one_line_errors(populated) -> None:
    import datetime as dt

    from commands.approvals import request_containment
    from containment.targets import Target

    _, url = populated
    env = {"DATABASE_URL": url}
    r = cli("plan", "INC-1", "--format", "asl", env=env)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [
        "incident-bot: error: INC-1 has no containment plan: request one with /contain in "
        "Slack first."
    ]
    plan = {
        "steps": [
            {
                "action": "snapshot",
                "depends_on": [],
                "after": [],
                "calls": [
                    {
                        "service": "ec2",
                        "operation": "CreateSnapshots",
                        "params": {"InstanceSpecification": {"InstanceId": "i-0abc"}},
                        "mutating": True,
                        "text": "ec2.CreateSnapshots(...)",
                    },
                    {
                        "service": "ec2",
                        "operation": "CreateTags",
                        # A value nothing in the machine can fill: said on stderr.
                        "params": {"Resources": ["<an id only a person knows>"], "Tags": []},
                        "mutating": True,
                        "text": "ec2.CreateTags(...)",
                    },
                ],
            }
        ]
    }
    db = Database(url, clock=TEST_CLOCK)
    with db.session() as s:
        incident = s.query(Incident).one()
        request_containment(
            session=s,
            incident=incident,
            target=Target(kind="instance", resource_id="i-0abc", region="us-east-1"),
            plan=plan,
            requested_by="U1",
            expire_after=dt.timedelta(minutes=30),
        )
    db.dispose()
    ok = cli("plan", "inc-1", "--format", "asl", env=env)
    assert ok.returncode == 0, ok.stderr
    asl = json.loads(ok.stdout)
    assert asl["States"]["snapshot ec2.CreateSnapshots"]["Resource"] == (
        "arn:aws:states:::aws-sdk:ec2:createSnapshots"
    )
    # Stdout is the JSON alone; what needs editing is said on stderr.
    assert ok.stderr.strip().splitlines() == [
        "incident-bot: 1 state(s) need editing before the machine runs (their Comment starts "
        "EDIT BEFORE RUNNING): snapshot ec2.CreateTags"
    ]
    for args, expected in (
        (("plan", "INC-9"), "no incident INC-9"),
        (("plan", "nine"), "INC-"),
        (("plan", "INC-1", "--format", "yaml"), "yaml"),
    ):
        bad = cli(*args, env=env)
        assert bad.returncode == 2, args
        assert len(bad.stderr.strip().splitlines()) == 1 and expected in bad.stderr, bad.stderr


def test_incident_lookup_is_case_insensitive(populated) -> None:
    _, url = populated
    db = Database(url, clock=TEST_CLOCK)
    from commands.incidents import get_incident

    with db.read_session() as s:
        assert get_incident(session=s, key="inc-1").number == 1
    db.dispose()
    assert isinstance(Incident, type)


def test_policy_prints_the_generated_least_privilege_policy(tmp_path) -> None:
    env = _config(tmp_path, "containment:\n  cross_account_role_name: ir-responder\n")
    r = cli("policy", env=env)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    actions = {a for st in doc["Statement"] for a in st["Action"]}
    for needed in (
        "ec2:ModifyNetworkInterfaceAttribute",
        "ec2:CreateSnapshots",
        "autoscaling:EnterStandby",
        "iam:UpdateAccessKey",
        "sns:Publish",
        "guardduty:GetFindings",
        "kms:ScheduleKeyDeletion",
    ):
        assert needed in actions
    assert "*" not in actions
    assume = next(st for st in doc["Statement"] if st["Action"] == ["sts:AssumeRole"])
    assert assume["Resource"].endswith(":role/ir-responder")


# Operator errors about the database: one line, exit 2, no traceback, and no file left behind.
# These run in-process through main(), the entry point the console script calls.

SLACK_ENV = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s"}


@dataclass
class Ran:
    code: int
    out: str
    lines: list[str]


@pytest.fixture
def operator(tmp_path, monkeypatch, capsys) -> Callable[..., Ran]:
    """Run main(argv) in an empty working folder with only the given environment."""
    for name in list(os.environ):
        if name.startswith(("SLACK_", "INCIDENT_BOT_")) or name == "DATABASE_URL":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()
    monkeypatch.setattr(root, "level", root.level)  # drill lowers it; give it back

    def run(*argv: str, **env: str) -> Ran:
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        with pytest.raises(SystemExit) as exited:
            main(list(argv))
        out, err = capsys.readouterr()
        return Ran(code=exited.value.code, out=out, lines=err.strip().splitlines())

    return run


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*"))


def test_a_malformed_window_is_quoted_plainly(operator, tmp_path) -> None:
    """The terminal gets what was typed as it was typed (no word joiners, no entities)."""
    r = operator("report", "--since", "*30*d_<x>")
    assert r.code == 2
    assert r.lines == [
        "incident-bot: error: --since '*30*d_<x>': give a window like 30d, 12w or 48h."
    ]
    assert _files(tmp_path) == []


READERS = [("export", "INC-1"), ("export", "INC-1", "--format", "json"), ("verify", "INC-1")]


@pytest.mark.parametrize("argv", [*READERS, ("db", "downgrade")])
def test_a_missing_database_names_db_upgrade_and_creates_no_file(operator, tmp_path, argv) -> None:
    r = operator(*argv)
    assert r.code == 2
    assert r.lines == [
        "incident-bot: error: there is no database at sqlite:///incident-bot.db: run "
        "`incident-bot db upgrade` first (or point DATABASE_URL at the existing one)"
    ]
    assert _files(tmp_path) == []


@pytest.mark.parametrize("argv", READERS)
def test_an_empty_database_file_names_db_upgrade_and_stays_empty(operator, tmp_path, argv) -> None:
    (tmp_path / "incident-bot.db").touch()  # what `export` used to leave behind
    r = operator(*argv)
    assert r.code == 2
    assert r.lines == [
        "incident-bot: error: the database at sqlite:///incident-bot.db has no incident-bot "
        "tables: run `incident-bot db upgrade` first"
    ]
    assert _files(tmp_path) == ["incident-bot.db"]
    assert (tmp_path / "incident-bot.db").stat().st_size == 0


@pytest.mark.parametrize("argv", READERS)
def test_a_database_behind_the_latest_migration_names_db_upgrade(operator, tmp_path, argv) -> None:
    upgrade(f"sqlite:///{tmp_path / 'incident-bot.db'}", revision="0001")
    r = operator(*argv)
    assert r.code == 2
    assert len(r.lines) == 1
    assert "is at revision 0001, not the latest 0005: run `incident-bot db upgrade`" in r.lines[0]


UNREACHABLE = "postgresql+psycopg://postgres:hunter2@127.0.0.1:1/x"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mysql://postgres:hunter2@127.0.0.1/x", "DATABASE_URL: Value error, must be a sqlite:///"),
        ("postgresql+nodriver://u:hunter2@h/x", "names an unknown database or driver"),
        ("postgresql+psycopg://u:hunter2@h:port/x", "postgresql+psycopg://u:***@h:port/x is malf"),
        ("sqlite://x.db", "sqlite://x.db is not a SQLite file URL: use three slashes"),
        (UNREACHABLE, "cannot reach the database at postgresql+psycopg://postgres:***@127.0.0.1:1"),
        ("sqlite:///no/such/folder/x.db", "the folder "),
    ],
)
@pytest.mark.parametrize(
    "argv", [*READERS, ("db", "upgrade"), ("db", "downgrade"), ("run", "--http")]
)
def test_a_wrong_database_url_is_one_line_without_the_password(
    operator, tmp_path, url, expected, argv
) -> None:
    config = tmp_path / "incident-bot.yml"
    config.write_text("slack:\n  incident_channel: C0INCIDENT\n")
    r = operator(*argv, DATABASE_URL=url, INCIDENT_BOT_CONFIG=str(config), **SLACK_ENV)
    assert r.code == 2
    assert len(r.lines) == 1, r.lines
    assert r.lines[0].startswith("incident-bot: error: ") and expected in r.lines[0]
    assert "hunter2" not in r.lines[0] + r.out
    assert _files(tmp_path) == ["incident-bot.yml"]


@pytest.mark.parametrize("key", ["INC-x", "42", "INC-", "INC-*1*_"])
@pytest.mark.parametrize("command", ["export", "verify"])
def test_a_malformed_key_is_named_before_any_database(operator, tmp_path, key, command) -> None:
    r = operator(command, key)
    assert r.code == 2
    assert r.lines == [f"incident-bot: error: {key} is not an incident key: use the form INC-42."]
    assert _files(tmp_path) == []


def test_an_unknown_revision_is_one_line_and_creates_no_file(operator, tmp_path) -> None:
    r = operator("db", "upgrade", "--revision", "nope")
    assert r.code == 2
    assert r.lines == [
        "incident-bot: error: unknown revision 'nope': use head, base or one of "
        "0001, 0002, 0003, 0004, 0005"
    ]
    assert _files(tmp_path) == []


def test_db_upgrade_is_the_command_that_creates_the_database(operator, tmp_path) -> None:
    assert operator("db", "upgrade").code == 0
    assert "incident-bot.db" in _files(tmp_path)
    r = operator("export", "INC-1")
    assert r.code == 2
    assert r.lines == [
        "incident-bot: error: no incident INC-1 in the database at sqlite:///incident-bot.db: "
        "check the key, or DATABASE_URL (`/incident list` in Slack shows the open ones)"
    ]


def test_drill_into_a_missing_folder_is_one_line(operator, tmp_path) -> None:
    r = operator("drill", "--db", str(tmp_path / "no" / "drill.db"))
    assert r.code == 2
    assert r.lines == [
        f"incident-bot: error: the folder {tmp_path / 'no'} does not exist: create it, or pass "
        "--db a file in an existing folder"
    ]
    assert _files(tmp_path) == []


def test_policy_needs_no_database_and_creates_none(operator, tmp_path) -> None:
    r = operator("policy", DATABASE_URL=UNREACHABLE)
    assert r.code == 0
    assert json.loads(r.out)["Statement"]
    assert _files(tmp_path) == []


def test_export_in_an_empty_folder_as_an_operator_runs_it(tmp_path) -> None:
    """The console script itself, as installed: the case that used to print a traceback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "INCIDENT_BOT_"))}
    env.pop("DATABASE_URL", None)
    r = subprocess.run(
        [str(Path(sys.executable).parent / "incident-bot"), "export", "INC-1"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert "run `incident-bot db upgrade` first" in r.stderr
    assert r.stdout == ""
    assert _files(tmp_path) == []


def test_policy_capability_triage_is_read_only_and_bad_capability_exits_2(tmp_path) -> None:
    env = _config(tmp_path, "containment:\n  evidence_bucket: ir-evidence\n")
    r = cli("policy", "--capability", "triage", env=env)
    assert r.returncode == 0, r.stderr
    allowed = [s for s in json.loads(r.stdout)["Statement"] if s["Effect"] == "Allow"]
    writes = [a for s in allowed if s["Sid"] != "Read" for a in s["Action"]]
    assert writes == ["sts:AssumeRole"]  # the default responder role; no write
    r = cli("policy", "--capability", "contain", env=env)
    put = next(s for s in json.loads(r.stdout)["Statement"] if "s3:PutObject" in s["Action"])
    assert put["Resource"] == "arn:aws:s3:::ir-evidence/incidents/*"
    r = cli("policy", "--capability", "admin", env=env)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
