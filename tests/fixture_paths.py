"""Where the public payloads the tests run against live: `tests/fixtures/` (GuardDuty, SNS and
Slack payloads nobody on this project wrote, with their SOURCES.md). A clone anywhere has them."""

from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures"
