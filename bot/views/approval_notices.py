"""What contacts and the incident's thread are told about a containment request: the SNS
subject, body and Slack line on approval and on the outcome, and the thread line when it is
asked for, decided or expires."""

from __future__ import annotations

from typing import Literal

from bot.views import blocks as bk
from commands.approvals.execution import Outcome
from storage.models import ContainmentRequest, Incident


def notice_texts(
    request: ContainmentRequest, incident: Incident, what: str, outcome: Outcome | None
) -> tuple[str, str, str]:
    """(SNS subject, plain-text body, escaped Slack line) for an approval or an outcome."""
    tag = "[DRY RUN] " if request.dry_run else ""
    target = f"{request.target_type} {request.target_id}"
    verb = {"contain": "Containment", "retry": "Containment retry", "rollback": "Rollback"}.get(
        request.kind, request.kind
    )
    if what == "approved":
        head = f"{tag}{incident.key}: {verb} of {target} approved by {request.decided_by}"
    elif what == "interrupted":
        head = f"{tag}{incident.key}: {verb} of {target} was interrupted by a restart"
    else:
        head = f"{tag}{incident.key}: {verb} of {target} {what}"
    lines = [
        head,
        f"Incident: {incident.key} {incident.title}",
        f"Request #{request.id}, requested by {request.requested_by}"
        + (f": {request.reason}" if request.reason else ""),
    ]
    if request.decided_by:
        lines.append(f"Approved by {request.decided_by}")
    if outcome is not None and outcome.failed:
        lines.append("Failed steps:")
        lines.extend(f"- {f['action']}: {f['error']}" for f in outcome.failed)
    slack = bk.esc(head)
    if request.decided_by:
        slack = slack.replace(bk.esc(request.decided_by), bk.user(request.decided_by))
    if outcome is not None and outcome.failed:
        slack += "\n" + "\n".join(
            f"• {bk.esc(f['action'])}: {bk.esc_cut(f['error'], 300)}" for f in outcome.failed
        )
    return head, "\n".join(lines), slack


RequestEvent = Literal["requested", "approved", "rejected", "expired"]


def request_line(
    request: ContainmentRequest,
    event: RequestEvent,
    *,
    actor: str | None = None,
    reason: str | None = None,
) -> str:
    """The incident thread's line on a request (escaped mrkdwn); `actor` decided it."""
    verb = {"retry": "Retry", "rollback": "Rollback"}.get(request.kind, "Plan")
    what = {
        "requested": "awaits approval",
        "approved": f"approved by {bk.user(actor)}",
        "rejected": f"rejected by {bk.user(actor)}: {bk.esc(reason)}",
        "expired": "expired without a decision",
    }[event]
    target = f"{bk.esc(request.target_type)} {bk.code(request.target_id)}"
    return f"🛡️ {verb} #{request.id} for {target} {what}."
