"""The one sentence the person who clicked Approve/Reject reads."""

from __future__ import annotations

from bot.views import blocks as bk
from commands.approvals.requests import Decision


def decision_text(decision: Decision) -> str:
    request = decision.request
    if decision.won:
        if request.status == "rejected":
            return f"You rejected request #{request.id}."
        return f"You approved request #{request.id}; running it now."
    if request.status == "expired":
        return f"Request #{request.id} expired without a decision; request it again if needed."
    who = bk.user(request.decided_by)
    if request.status == "rejected":
        return f"Request #{request.id} was already rejected by {who}."
    return f"Request #{request.id} was already approved by {who} ({request.status})."
