"""What a contacts notice says in Slack: the user group, the line, and what the e-mails did."""

from __future__ import annotations

from typing import Any

from bot.views import blocks as bk
from storage.models import Incident


def opened_notice_texts(incident: Incident) -> tuple[str, str, str]:
    """(subject, plain-text body, escaped Slack line) for a high/critical incident opening."""
    head = f"{incident.key}: {incident.severity} incident opened: {incident.title}"
    lines = [head, f"Severity: {incident.severity}", f"Opened by {incident.created_by}"]
    if incident.resource_id:
        lines.append(f"Resource: {incident.resource_type or 'resource'} {incident.resource_id}")
    slack = "🚨 " + bk.esc(head)
    return head, "\n".join(lines), slack


def email_line(email: dict[str, Any] | None) -> str:
    """One line on what happened to the e-mail contacts (empty when none are configured)."""
    if not email:
        return ""
    status = email.get("status")
    listed = email.get("listed") or []
    if status == "listed, not sent":
        return "E-mail contacts (listed, not sent: SES is not configured): " + bk.esc(
            ", ".join(listed)
        )
    if status == "not sent (dry run)":
        return "E-mail contacts (not sent: dry run): " + bk.esc(", ".join(listed))
    parts = []
    if email.get("sent"):
        parts.append("E-mailed through SES: " + bk.esc(", ".join(email["sent"])))
    if email.get("failed"):
        parts.append("E-mail failed: " + bk.esc(", ".join(email["failed"])))
    return "\n".join(parts) or "E-mail contacts: " + bk.esc(str(email.get("error", status)))


def notice_text(line: str, *, usergroup: str | None, channels: dict[str, Any]) -> str:
    """The thread message of a contacts notice: the mention, the line, the e-mail outcome."""
    group = bk.subteam(usergroup)
    text = f"{group} {line}" if group else line
    emails = email_line(channels.get("email"))
    return f"{text}\n{emails}" if emails else text
