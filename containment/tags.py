"""Tag keys put on every resource a containment touches or creates.

The wipe feature deletes only resources carrying INCIDENT_TAG, so everything created here
carries it from birth (TagSpecifications) and touched resources get it in the tag step.
"""

from __future__ import annotations

INCIDENT_TAG = "incident-bot:incident"
STATUS_TAG = "incident-bot:status"
TIME_TAG = "incident-bot:isolated-at"
FINDING_TAG = "incident-bot:finding"
STATUS_ISOLATED = "Isolated"
# On the instance (and its volumes) once this incident's snapshots exist: a re-run of the
# containment finds it in the captured tags and takes no second set.
SNAPSHOTS_TAG = "incident-bot:snapshots-for"


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())]


def tag_dict(tags: list[dict[str, str]] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in tags or []}


def creation_tags(*, incident_key: str, finding_id: str | None) -> dict[str, str]:
    tags = {INCIDENT_TAG: incident_key}
    if finding_id:
        tags[FINDING_TAG] = finding_id[:256]
    return tags
