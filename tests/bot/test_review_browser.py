"""The post-incident report page as a person sees it: `incident-bot export --format html`,
opened from disk in headless Chromium; the chart and every section render, no user text runs
as script; a screenshot is kept in the test output folder (INCIDENT_BOT_TEST_OUTPUT, else
test-output/ in the repository)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from matplotlib.image import imread

from storage.migrate import upgrade
from tests.browser import Browser
from tests.commands.review import world

pytestmark = pytest.mark.dates

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = ["review", "metrics", "chart", "containment", "evidence", "timeline"]


def output_dir() -> Path:
    return Path(os.environ.get("INCIDENT_BOT_TEST_OUTPUT") or ROOT / "test-output")


def test_report_page_renders_in_chromium(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    upgrade(url)
    world.build(url).dispose()
    page = tmp_path / "INC-1-review.html"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "INCIDENT_BOT_"))}
    env["DATABASE_URL"] = url
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "export", "INC-1", "--format", "html", "--out", page],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr

    with Browser() as browser:
        browser.open(page.as_uri())
        state = browser.run(
            """
            const img = document.getElementById('timeline-chart');
            const box = img.getBoundingClientRect();
            const sections = [...document.querySelectorAll('section')].map(s => ({
              id: s.id, height: s.offsetHeight, heading: s.querySelector('h2').textContent}));
            return {
              title: document.title,
              pwned: window.__pwned === undefined ? null : window.__pwned,
              chart: {complete: img.complete, w: img.naturalWidth, h: img.naturalHeight,
                      x: box.left + window.scrollX, y: box.top + window.scrollY,
                      width: box.width, height: box.height},
              sections: sections,
              timelineRows: document.querySelectorAll('#timeline tr').length - 1,
              evidenceText: document.getElementById('evidence').innerText,
              heading: document.getElementById('title').textContent,
              pageHeight: document.documentElement.scrollHeight,
            };
            """
        )
        chart = state["chart"]
        # The embedded PNG decoded: matplotlib drew it 1100 x 420 (11 x 4.2 in at 100 dpi).
        assert chart["complete"] and (chart["w"], chart["h"]) == (1100, 420), chart
        assert chart["width"] > 300 and chart["height"] > 100
        sections = {s["id"]: s for s in state["sections"]}
        assert [s["id"] for s in state["sections"]] == SECTIONS  # in the page's order
        assert all(s["height"] > 0 for s in sections.values()), sections
        assert sections["timeline"]["heading"].startswith("Timeline (")
        assert state["timelineRows"] >= 8
        assert world.CONSOLE_SHA in state["evidenceText"]
        # The hostile title shows as text and nothing in it ran.
        assert state["pwned"] is None
        assert "<script>window.__pwned = 1</script>" in state["heading"]

        browser.resize(1280, min(int(state["pageHeight"]) + 200, 6000))
        shot = browser.screenshot(output_dir() / "INC-1-review.png")

    # The screenshot shows the chart: its area is drawn (dark marks on white), not blank.
    pixels = imread(io.BytesIO(shot), format="png")
    top, left = int(chart["y"]), int(chart["x"])
    area = pixels[top : top + int(chart["height"]), left : left + int(chart["width"]), :3]
    assert area.size and (area.mean(axis=2) < 0.5).mean() > 0.01
