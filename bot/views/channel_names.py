"""The names of incidents' own channels: `inc-12-ssh-brute-force`, within Slack's rules
(lowercase letters, digits and hyphens, at most 80 characters)."""

from __future__ import annotations

import re

from storage.models import Incident

MAX_CHANNEL_NAME = 80
_SLUG_JUNK = re.compile(r"[^a-z0-9]+")


def slugify(text: str, *, limit: int = 40) -> str:
    """Lowercase ASCII words joined by '-', for channel names like inc-12-ssh-brute-force."""
    slug = _SLUG_JUNK.sub("-", text.lower()).strip("-")
    return slug[:limit].rstrip("-") or "incident"


def channel_name(incident: Incident) -> str:
    prefix = f"inc-{incident.number}-"
    return prefix + slugify(incident.title, limit=MAX_CHANNEL_NAME - len(prefix))


def channel_name_candidate(name: str, attempt: int) -> str:
    """The name to try on `attempt` (0 first) when the earlier ones were taken: -2, -3, …"""
    return name if attempt == 0 else f"{name[: MAX_CHANNEL_NAME - 3]}-{attempt + 1}"
