"""The one sentence the person who clicked Approve/Reject reads, and the contacts' mention."""

from __future__ import annotations

from commands.approvals.requests import Decision


def _who(user_id: str | None) -> str:
    if not user_id:
        return "nobody"
    return f"<@{user_id}>" if user_id[:1] in ("U", "W") else user_id


def decision_text(decision: Decision) -> str:
    request = decision.request
    if decision.won:
        if request.status == "rejected":
            return f"You rejected request #{request.id}."
        return f"You approved request #{request.id}; running it now."
    if request.status == "expired":
        return f"Request #{request.id} expired without a decision; request it again if needed."
    who = _who(request.decided_by)
    if request.status == "rejected":
        return f"Request #{request.id} was already rejected by {who}."
    return f"Request #{request.id} was already approved by {who} ({request.status})."


def usergroup_mention(group: str | None) -> str:
    """`<!subteam^ID>` pages the contacts' user group; nothing without one."""
    if not group:
        return ""
    return f"<!subteam^{group}>"
