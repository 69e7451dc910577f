"""The CLI as an operator uses it: real processes, real SQLite files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from commands.incidents import open_incident
from storage.db import Database
from storage.migrate import upgrade
from storage.models import Incident
from storage.timeline import append_event


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
        ("slack:\n  incident_chanel: C1\n", "slack.incident_chanel"),
        ("wipe:\n  kms_pending_days: 3\n", "wipe.kms_pending_days"),
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
    db = Database(url)
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
    db = Database(url)
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE timeline_events SET actor = 'U9' WHERE seq = 3"))
    db.dispose()
    bad = cli("verify", "INC-1", env=env)
    assert bad.returncode == 1
    assert "#3" in bad.stderr


def test_unknown_incident_is_one_line(populated) -> None:
    _, url = populated
    r = cli("verify", "INC-9", env={"DATABASE_URL": url})
    assert r.returncode == 2
    assert "No incident INC-9. /incident list shows the open ones." in r.stderr


def test_incident_lookup_is_case_insensitive(populated) -> None:
    _, url = populated
    db = Database(url)
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
