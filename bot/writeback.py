"""The write-back on close, run after the close is committed (commands/writeback.py does the
AWS calls and the timeline; this picks the clients and tells the thread)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from slack_sdk.errors import SlackApiError

from bot.listeners.incident_posts import FOLLOW_UP_ATTEMPTS, not_shown, post_line
from bot.views.writeback import writeback_line
from commands.incidents import get_incident
from commands.writeback import write_back
from containment.clients import aws_client

if TYPE_CHECKING:
    from bot.runtime import Runtime


def write_back_on_close(runtime: Runtime, key: str, summary: str) -> list[str]:
    """Archive / resolve the closed incident's findings as configured; what Slack did not
    show of it (the outcome is on the timeline either way)."""
    config = runtime.config
    result = write_back(
        database=runtime.database,
        key=key,
        summary=summary,
        archive=config.guardduty.archive_on_close,
        securityhub=config.securityhub.enabled,
        client_for=runtime.options.writeback_clients or aws_client,
    )
    line = writeback_line(key, result)
    if not line:
        return []
    with runtime.database.read_session() as session:
        incident = get_incident(session=session, key=key)
    if not incident.channel_id:
        return []
    try:
        post_line(runtime, incident, line, attempts=FOLLOW_UP_ATTEMPTS)
    except (SlackApiError, OSError) as exc:
        return not_shown(runtime, key, [("the write-back line", exc)])
    return []
