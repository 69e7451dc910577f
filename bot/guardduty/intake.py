"""Record normalised findings and hand the results to the card publisher.

Shared by the HTTP route, trusted-bot channel messages and polling. The findings are stored
(one transaction for the whole delivery) before this returns, so the sender's 200 means the
findings are durable; Slack work happens afterwards on the publisher's thread.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError, OperationalError

from bot.guardduty.publisher import publisher_for
from commands.findings.ingest import Ingested, record_findings
from commands.findings.normalize import NormalizedFinding

if TYPE_CHECKING:
    from bot.app import Runtime

log = logging.getLogger(__name__)

ATTEMPTS = 3  # a concurrent first insert (PostgreSQL) or a lock timeout (SQLite) is retried


def intake(runtime: Runtime, findings: Sequence[NormalizedFinding]) -> list[Ingested]:
    if not findings:
        return []
    config = runtime.config
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with runtime.database.session() as session:
                results = record_findings(
                    session=session,
                    findings=findings,
                    min_severity=config.guardduty.min_severity,
                    channel_id=config.slack.incident_channel,
                    now=runtime.now(),
                )
            break
        except (IntegrityError, OperationalError) as exc:
            if attempt == ATTEMPTS:
                raise
            log.warning("recording findings failed (%s); retrying", type(exc).__name__)
            time.sleep(0.05 * attempt)
    publisher_for(runtime).submit(results)
    return results
