"""mrkdwn in reminder texts (issue 14: to move to bot/views with the texts themselves)."""

from __future__ import annotations


def mrkdwn_escape(text: str) -> str:
    """User text in a Delivery (mrkdwn): Slack decodes exactly these three entities, so a
    title like `<!channel>` shows literally instead of pinging everyone in the digest."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def mention(user_id: str | None) -> str:
    if user_id and user_id[:1] in ("U", "W") and user_id.isalnum():
        return f"<@{user_id}>"
    return mrkdwn_escape(user_id or "nobody")
