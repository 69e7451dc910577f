"""Anchoring timeline heads outside the database (commands/anchors.py decides what is due).

An AnchorSweeper in every serving process looks once a minute for incidents due an anchor (a
new status: opened, contained, resolved, closed; or an hour of new events while active),
writes it to S3 Object Lock when an evidence bucket is configured and posts it in the
incident's thread. Posting twice is harmless (verify checks every anchor it finds).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from bot.listeners.investigation import aws_context, default_region
from bot.periodic import Periodic
from bot.views.anchors import anchor_text
from commands import anchors as svc

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger(__name__)


def post_anchor(runtime: Runtime, due: svc.DueAnchor) -> bool:
    """Post one anchor in its incident's thread; False when the incident has no thread yet."""
    if not due.channel_id:
        return False
    runtime.slack.reply(due.channel_id, due.thread_ts, {"text": anchor_text(due.anchor)})
    return True


def anchor_due(runtime: Runtime) -> list[str]:
    """Write and post every anchor due now; returns the incident keys anchored."""
    with runtime.database.read_session() as session:
        due = svc.due_anchors(session=session, now=runtime.now())
    bucket = runtime.config.containment.evidence_bucket
    done = []
    for item in due:
        witnesses = []
        if bucket:
            try:
                s3 = aws_context(runtime, item.anchor.incident_key).home_client(
                    "s3", default_region(runtime)
                )
                witnesses.append(
                    svc.write_s3_anchor(
                        s3=s3,
                        bucket=bucket,
                        anchor=item.anchor,
                        retain_days=runtime.config.containment.anchor_retention_days,
                    )
                )
            except Exception:
                log.exception("could not write the S3 anchor of %s", item.anchor.incident_key)
        try:
            if post_anchor(runtime, item):
                witnesses.append("slack")
        except Exception:
            log.exception("could not post the Slack anchor of %s", item.anchor.incident_key)
        if not witnesses:
            continue  # retried next sweep
        with runtime.database.session() as session:
            svc.record_anchored(session=session, due=item, witnesses=witnesses)
        done.append(item.anchor.incident_key)
    return done


class AnchorSweeper(Periodic):
    name = "anchor-sweeper"

    def __init__(self, runtime: Runtime, every: float) -> None:
        super().__init__(every)
        self.runtime = runtime

    def tick(self) -> list[str]:
        return anchor_due(self.runtime)


def start(runtime: Runtime) -> None:
    """Serving processes only (bot.server.start_services), once the process is configured."""
    if runtime.database.timeline_key is None:
        log.warning(
            "timeline UNKEYED: INCIDENT_BOT_TIMELINE_KEY is not set, so new incidents are "
            "chained with plain SHA-256 and `incident-bot verify` reports them as not keyed"
        )
    every = runtime.options.anchor_sweep_seconds
    services = runtime.services
    with services.create_lock:
        if not every or services.anchor_sweeper is not None:
            return
        worker = services.anchor_sweeper = AnchorSweeper(runtime, float(every))
    worker.start()
    runtime.on_shutdown(worker.stop)
