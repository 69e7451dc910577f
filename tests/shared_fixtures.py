"""Where the public payloads the tests run against live (GuardDuty, SNS and Slack fixtures,
with their SOURCES.md): `shared/fixtures/` beside the repository, or the folder named by
INCIDENT_BOT_FIXTURES for a checkout that lives elsewhere."""

from __future__ import annotations

import os
from pathlib import Path

FIXTURES = Path(
    os.environ.get("INCIDENT_BOT_FIXTURES")
    or Path(__file__).resolve().parents[2] / "shared" / "fixtures"
)


def missing_reason() -> str | None:
    """One line for the user when the fixtures cannot be found, else None."""
    if (FIXTURES / "guardduty").is_dir():
        return None
    return (
        f"the test fixtures are not at {FIXTURES}: set INCIDENT_BOT_FIXTURES to the "
        "shared/fixtures folder (the one holding guardduty/, sns/ and slack/)"
    )
