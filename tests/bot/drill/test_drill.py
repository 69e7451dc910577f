"""`incident-bot drill` as a responder runs it: a real process, exit code and transcript."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from commands.drills.scenarios import SCENARIOS


def drill(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "AWS_"))}
    env.pop("DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", "drill", *args],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=cwd,
        env=env,
    )


# What each scenario checks in AWS (moto) state after the approval, and about the clock.
AWS_CHECKS = {
    "ec2-c2": ("snapshots taken", "network isolated", "out of the load balancer"),
    "ssh-brute-force": ("snapshots taken", "network isolated", "no regulator clock"),
    "iam-exfil": ("access key deactivated", "old sessions revoked", "GDPR clock started"),
    "iam-role-outside": ("role sessions revoked", "no regulator clock"),
    "s3-public": ("public access blocked", "caller denied on the bucket", "GDPR clock started"),
    "lambda-c2": ("function throttled", "public invoke removed", "no regulator clock"),
}


@dataclass
class Run:
    result: subprocess.CompletedProcess[str]
    folder: Path


@pytest.fixture(scope="module")
def green_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """One run per scenario, shared by the tests that read its transcript (a drill takes
    seconds: running each once keeps the suite quick)."""
    runs: dict[str, Run] = {}
    for scenario in sorted(SCENARIOS):
        folder = tmp_path_factory.mktemp(scenario)
        result = drill("--scenario", scenario, "--db", str(folder / "drill.db"), cwd=folder)
        runs[scenario] = Run(result, folder)
    return runs


def test_every_scenario_has_its_aws_checks() -> None:
    assert sorted(AWS_CHECKS) == sorted(SCENARIOS)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_each_scenario_runs_green(scenario: str, green_runs: dict[str, Run]) -> None:
    r, tmp_path = green_runs[scenario].result, green_runs[scenario].folder
    out = r.stdout
    assert r.returncode == 0, out[-3000:] + r.stderr[-3000:]
    assert "RESULT: PASS" in out
    for check in AWS_CHECKS[scenario]:
        assert f"✔ {check}" in out, (check, out[-3000:])
    # The transcript shows what Slack would: the card, the plan and the approval.
    assert "== 🚨 INC-1" in out
    assert "[ Approve ]  [ Reject ]" in out
    assert "U0RESPONDER2 clicks [Approve]" in out
    assert "✔ timeline verified" in out
    assert "detection → containment:" in out and "not contained" not in out
    # --db keeps the database for inspection, and it verifies from the CLI too.
    assert (tmp_path / "drill.db").exists()
    v = subprocess.run(
        [sys.executable, "-m", "bot.cli", "verify", "INC-1"],
        capture_output=True,
        text=True,
        env={**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'drill.db'}"},
        timeout=60,
    )
    assert v.returncode == 0, v.stderr


def test_ec2_scenario_checks_the_isolation_in_aws(green_runs: dict[str, Run]) -> None:
    r = green_runs["ec2-c2"].result
    for check in (
        "snapshots taken",
        "network isolated",
        "out of Auto Scaling",
        "out of the load balancer",
        "reminders scheduled",
    ):
        assert f"✔ {check}" in r.stdout, r.stdout[-3000:]


def test_the_transcript_reads_in_the_order_things_happen(green_runs: dict[str, Run]) -> None:
    r = green_runs["ec2-c2"].result
    lines = r.stdout.splitlines()

    def first(text: str) -> int:
        return next(i for i, line in enumerate(lines) if text in line)

    posts = [i for i, line in enumerate(lines) if line.startswith("┌ incident-bot")]
    # Everything the bot posts lands before the drill moves on to the export and the totals.
    assert posts and max(posts) < first("▶ Timeline exported")
    assert first("awaits approval") < first("clicks [Approve]")
    assert first("approved by @U0RESPONDER2") > first("clicks [Approve]")
    # Each thread is named by its parent: the incident card's or the plan's.
    assert not any(line.rstrip() == "┌ incident-bot in thread" for line in lines)
    outcome = [line for line in lines if line.startswith("┌") and "thread of" in line]
    assert any('thread of "[DRILL] Containment plan: INC-1"' in line for line in outcome)
    assert any('thread of "🚨 INC-1' in line for line in outcome)


def test_the_exported_event_count_is_the_same_every_run(
    tmp_path: Path, green_runs: dict[str, Run]
) -> None:
    counts = set()
    for r in (green_runs["lambda-c2"].result, drill("--scenario", "lambda-c2", cwd=tmp_path)):
        assert r.returncode == 0, r.stdout[-2000:]
        counts.add(re.search(r"timeline exported: (\d+) events", r.stdout).group(1))  # type: ignore[union-attr]
    assert len(counts) == 1, counts


def test_a_broken_step_fails_the_drill_names_what_failed_and_rehearses_recovery(
    tmp_path: Path,
) -> None:
    r = drill("--scenario", "ec2-c2", "--fail", "ec2:CreateSnapshots", cwd=tmp_path)
    out = r.stdout
    assert r.returncode == 1
    # The failed checks are named by what failed, never by what was hoped for.
    assert "✘ volumes not snapshotted" in out and "✘ snapshots taken" not in out
    fail_line = next(line for line in out.splitlines() if "RESULT: FAIL" in line)
    assert fail_line == "  RESULT: FAIL — containment incomplete; volumes not snapshotted"
    # The failed step and its AWS error are shown, as responders would see them.
    assert "AccessDenied" in out
    # Recovery: the cause fixed, a responder retries what is left and the rest completes.
    assert "U0RESPONDER1 clicks [Retry what is left]" in out
    assert out.index("clicks [Retry what is left]") < out.index("== [DRILL] Containment retry")
    assert "✔ after retry: retry completed the rest: request #2 succeeded" in out
    assert "✔ after retry: snapshots taken: 3 of 3 volumes" in out
    assert "recovery:                the retry completed the rest" in out


def test_list_prints_the_names_one_per_line(tmp_path: Path) -> None:
    r = drill("--list", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == list(SCENARIOS)


def test_help_names_every_scenario(tmp_path: Path) -> None:
    r = drill("--help", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for name, scenario in SCENARIOS.items():
        assert name in r.stdout and scenario.title.split()[0] in r.stdout


def test_unknown_scenario_is_one_line_exit_2(tmp_path: Path) -> None:
    r = drill("--scenario", "alien-invasion", cwd=tmp_path)
    assert r.returncode == 2
    assert "unknown scenario 'alien-invasion'" in r.stdout + r.stderr


def test_existing_db_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "keep.db").write_text("precious")
    r = drill("--db", str(tmp_path / "keep.db"), cwd=tmp_path)
    assert r.returncode == 2
    assert (tmp_path / "keep.db").read_text() == "precious"
