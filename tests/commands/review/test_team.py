"""Team metrics over real timelines: per-week counts, time to contain, regulator clocks,
drills; and `incident-bot report` as an operator runs it."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest

from commands import incidents as svc
from commands.errors import UserError
from commands.review.team import parse_since, percentile, report_chart, report_lines, team_report
from storage.db import Database
from storage.migrate import upgrade
from tests.clock import manual
from tests.commands.review import world

pytestmark = pytest.mark.dates

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MIN = dt.timedelta(minutes=1)


def populate(url: str) -> None:
    upgrade(url)
    world.build(url).dispose()  # INC-1: high, guardduty, contained in 20m, notice late
    world.build(url, drill=True).dispose()  # INC-2: a drill, contained in 20m
    clock = manual(world.at(days=8))
    db = Database(url, clock=clock)
    with db.session() as session:  # INC-3: low, opened in Slack, contained after 2h
        opened = svc.open_incident(
            session=session, title="phish", created_by="U0ME", severity="low"
        )
        key = opened.key
    clock.set(world.at(days=8, hours=2))
    with db.session() as session:
        target = svc.get_incident(session=session, key=key)
        svc.set_status(session=session, incident=target, actor="U0ME", status="contained")
        svc.mark_personal_data(session=session, incident=target, actor="U0ME")
    db.dispose()


def test_team_report_figures(sqlite_url: str) -> None:
    populate(sqlite_url)
    db = Database(sqlite_url, clock=manual(world.at(days=10)))
    with db.read_session() as session:
        report = team_report(
            session=session, since=dt.timedelta(days=30), now=world.at(days=10), gdpr_hours=72
        )
    db.dispose()
    assert [r.key for r in report.incidents] == ["INC-1", "INC-3"]
    assert [r.key for r in report.drills] == ["INC-2"]
    by_severity = report.per_week("severity")
    # T0 is Friday 2026-11-27 (week of 11-23); T0 + 8 days is in the week of 11-30.
    assert by_severity == {"high": {dt.date(2026, 11, 23): 1}, "low": {dt.date(2026, 11, 30): 1}}
    assert {s: sum(w.values()) for s, w in report.per_week("source").items()} == {
        "guardduty": 1,
        "slack": 1,
    }
    assert report.contain_times() == [20 * MIN, 120 * MIN]
    assert report.regulator() == {"late": 1, "running": 1}
    text = "\n".join(report_lines(report))
    assert "Time to contain (2 contained): median 20m, p90 2h" in text
    assert "Regulator clocks: 0 met, 1 missed (1 late, 0 overdue), 1 running" in text
    assert "INC-2  contained in 20m" in text
    assert report_chart(report).startswith(PNG_MAGIC)


def test_percentile_nearest_rank() -> None:
    values = [n * MIN for n in range(1, 11)]
    assert percentile(values, 50) == 5 * MIN and percentile(values, 90) == 9 * MIN
    assert percentile([], 90) is None


@pytest.mark.parametrize("bad", ["", "30", "0d", "3x", "d30"])
def test_since_is_checked(bad: str) -> None:
    with pytest.raises(UserError, match="like 30d"):
        parse_since(bad)


def test_report_command_prints_and_plots(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    populate(url)
    # The CLI runs on the machine's clock: a window reaching back to T0 whatever today is.
    days = (dt.datetime.now(dt.UTC) - world.T0).days + 2
    out = tmp_path / "team.png"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "INCIDENT_BOT_"))}
    env["DATABASE_URL"] = url
    argv = [sys.executable, "-m", "bot.cli", "report", "--since", f"{days}d", "--out", str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Incidents opened" in done.stdout and "(drills: 1)" in done.stdout
    assert "median 20m, p90 2h" in done.stdout
    assert out.read_bytes().startswith(PNG_MAGIC)
    bad = subprocess.run(
        [*argv[:4], "--since", "soon"], capture_output=True, text=True, env=env, timeout=60
    )
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
