"""The post-incident report from a real SQLite timeline: metrics, sections, escaping."""

from __future__ import annotations

import base64
import datetime as dt
import re
from html.parser import HTMLParser

import pytest

from commands.errors import UserError
from commands.incidents import get_incident
from commands.review.metrics import duration_text
from commands.review.report import build_report, record_review, to_html, to_markdown
from storage.migrate import upgrade
from storage.models import TimelineEvent
from tests.commands.review import world

pytestmark = pytest.mark.dates  # the regulator clock's state depends on "now"

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def reviewed(sqlite_url: str):
    upgrade(sqlite_url)
    db = world.build(sqlite_url)
    with db.read_session() as session:
        incident = get_incident(session=session, key="INC-1")
        report = build_report(
            session=session, incident=incident, gdpr_hours=72, now=world.at(days=6)
        )
    yield db, report
    db.dispose()


def test_metrics_come_from_the_timeline(reviewed) -> None:
    _, report = reviewed
    got = {k: duration_text(v) for k, v in report.milestones.durations().items()}
    assert got == {
        "detect": "10m",  # the finding's first sighting to the opening
        "acknowledge": "4m",  # the responder's note
        "approve": "8m",
        "contain": "20m",
        "resolve": "4d",
    }
    clock = report.milestones.regulator
    assert clock is not None and clock.state == "late" and clock.met is False
    assert clock.due_at == world.at(hours=72, minutes=1)


def test_regulator_clock_states() -> None:
    from commands.review.metrics import RegulatorClock

    due = world.at(hours=72)
    now = world.at(hours=10)
    assert RegulatorClock(world.T0, due, world.at(hours=71), now).state == "on time"
    assert RegulatorClock(world.T0, due, None, now).state == "running"
    assert RegulatorClock(world.T0, due, None, world.at(hours=73)).state == "overdue"


def test_steps_and_evidence_with_hashes(reviewed) -> None:
    _, report = reviewed
    assert [s.action for s in report.steps] == ["capture", "isolate", "snapshot", "evidence"]
    hashes = {e.what: e.sha256 for e in report.evidence}
    assert hashes["console_output"] == world.CONSOLE_SHA
    assert hashes["screenshot"] == world.SCREENSHOT_SHA
    wheres = [e.where for e in report.evidence]
    assert "snap-1 of vol-1" in wheres
    assert "s3://ir-evidence/incidents/INC-1/instance/i-0abc/capture.json (version v1)" in wheres


class _Sections(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.scripts = 0
        self.handlers: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "section" and a.get("id"):
            self.ids.append(a["id"] or "")
        if tag == "script":
            self.scripts += 1
        if tag == "img":
            self.images.append(a.get("src") or "")
        self.handlers += [k for k in a if k.startswith("on")]


def test_html_is_self_contained_and_escapes_user_text(reviewed) -> None:
    _, report = reviewed
    page = to_html(report)
    parser = _Sections()
    parser.feed(page)
    assert parser.ids == ["review", "metrics", "chart", "containment", "evidence", "timeline"]
    # The hostile title and answers are text, never markup.
    assert parser.scripts == 0 and parser.handlers == []
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in page
    # One image, embedded: the file stands alone (no http, no file references).
    assert len(parser.images) == 1 and parser.images[0].startswith("data:image/png;base64,")
    assert base64.b64decode(parser.images[0].split(",", 1)[1]).startswith(PNG_MAGIC)
    assert not re.search(r"""(src|href)=["']?(https?:|file:|//)""", page)
    assert "notice late" in page and "20m" in page


def test_markdown_report(reviewed) -> None:
    _, report = reviewed
    md = to_markdown(report, chart_name="INC-1-timeline.png")
    assert md.startswith("# Post-incident review: INC-1: C2 beacon")
    assert "| Time to contain | 20m |" in md
    assert "tables must survive pipes" in md
    assert "<script>" not in md and "&lt;script&gt;window.__pwned = 1" in md  # no raw HTML
    assert world.CONSOLE_SHA in md and "`INC-1-timeline.png`" in md
    assert md.count("\n| ") >= len(report.events)


def test_review_needs_a_summary_and_writes_nothing_without_one(reviewed) -> None:
    db, _ = reviewed
    with db.read_session() as session:
        before = session.query(TimelineEvent).count()
    with pytest.raises(UserError, match="summary"), db.session() as session:
        incident = get_incident(session=session, key="INC-1")
        record_review(session=session, incident=incident, actor="U1", answers={"summary": " "})
    with db.read_session() as session:
        assert session.query(TimelineEvent).count() == before


def test_a_person_opening_acknowledges_at_once(sqlite_url: str) -> None:
    from commands.incidents import open_incident
    from commands.review.metrics import milestones
    from storage.db import Database
    from storage.timeline import stream_event_rows
    from tests.clock import manual

    upgrade(sqlite_url)
    db = Database(sqlite_url, clock=manual(world.T0))
    with db.session() as session:
        incident = open_incident(session=session, title="phish", created_by="U0ME")
        session.flush()
        rows = list(stream_event_rows(conn=session, incident_id=incident.id))
        marks = milestones(
            rows, started_at=None, gdpr_hours=72, now=world.T0, fallback_opened_at=world.T0
        )
    assert marks.durations()["acknowledge"] == dt.timedelta(0)
    assert marks.durations()["detect"] is None and marks.regulator is None
    db.dispose()
