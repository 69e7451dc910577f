"""What follows a GuardDuty incident's first card: containment proposed for a high or critical,
real finding's resource, the root-credentials checklist, or the reason nothing was proposed."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from bot.guardduty.writes import write_session
from bot.views.checklist import root_checklist_message
from commands.approvals.plans import finding_target_kind
from commands.approvals.root_checklist import record_checklist, root_checklist
from commands.errors import UserError
from commands.findings.ingest import ACTOR
from commands.findings.normalize import NormalizedFinding
from storage.facts import NOT_AUTOMATIC
from storage.models import Incident
from storage.timeline import append_event

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger(__name__)


def propose_for_finding(
    runtime: Runtime,
    incident_id: int,
    key: str,
    finding: NormalizedFinding | None,
    *,
    on_change: Callable[[int], None],
) -> None:
    """Ask for containment of a high/critical, real finding's resource: its instance,
    access key (the role, for assumed-role credentials), bucket, function or database."""
    threshold = runtime.config.approvals.auto_request_min_severity
    if (
        finding is None
        or threshold is None
        or not runtime.options.guardduty_propose
        or finding.sample
        or finding.severity < threshold
        or not finding.resource_id
    ):
        return
    kind = finding_target_kind(finding.resource_kind, finding.user_type)
    if kind is None and finding.user_type == "Root":
        _root_checklist(runtime, incident_id, key, finding, on_change)
        return
    resource_id = finding.user_name if kind == "role" else finding.resource_id
    if kind is None or not resource_id:
        return
    try:
        from bot.approvals import propose

        propose(
            runtime,
            resource_id=resource_id,
            kind=kind,
            incident_key=key,
            requested_by=ACTOR,
            reason=f"GuardDuty {finding.type} ({finding.severity:g})",
            region=finding.region,
            account_id=finding.account_id,
            finding_id=finding.id,
        )
    except UserError as exc:
        # The finding names something containment cannot act on (its id fails
        # validation): nothing broke, so one line here and the reason on the card.
        log.warning("%s: containment not proposed automatically: %s", key, exc.message)
        _not_automatic(runtime, incident_id, "containment", exc.message, on_change)
    except Exception:
        log.exception("proposing containment for %s failed", key)


def _root_checklist(
    runtime: Runtime,
    incident_id: int,
    key: str,
    finding: NormalizedFinding,
    on_change: Callable[[int], None],
) -> None:
    """Root credentials: the plan is a checklist to verify, on the timeline and in the
    incident's thread (once per incident)."""
    items = root_checklist(account_id=finding.account_id, since=finding.first_seen)
    with write_session(runtime) as session:
        incident = session.get(Incident, incident_id)
        if incident is None or (incident.facts or {}).get("checklist"):
            return
        record_checklist(
            session=session,
            incident=incident,
            items=items,
            reason=f"GuardDuty {finding.type} ({finding.severity:g}) on root credentials",
        )
        channel, thread = incident.channel_id, incident.thread_ts
    if channel:
        try:
            runtime.slack.reply(channel, thread, root_checklist_message(key, items))
        except Exception:
            log.exception("posting the root checklist for %s failed", key)
    on_change(incident_id)


def _not_automatic(
    runtime: Runtime,
    incident_id: int,
    what: str,
    reason: str,
    on_change: Callable[[int], None],
) -> None:
    """Record on the incident (card and timeline) what the bot could not do by itself."""
    with write_session(runtime) as session:
        incident = session.get(Incident, incident_id)
        if incident is None:
            return
        NOT_AUTOMATIC.update(incident, **{what: reason})
        append_event(
            session=session,
            incident=incident,
            actor="system",
            kind=f"{what}.not_automatic",
            summary=f"{what.capitalize()} was not proposed automatically: {reason}",
            details={"reason": reason},
        )
    on_change(incident_id)
