"""The affected resource's tags (Name, data classification, criticality, owner) for its card.

Tags come from AWS at the time the incident opens: EC2 `describe_instances` (falling back to
`describe_tags`) for instances, IAM `list_user_tags` for an IAM user's access key. The tags
GuardDuty copied into the finding are the fallback when AWS cannot be asked. The result is
stored on the incident (`facts["tags"]`) and on its timeline, since it is an AWS call result.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from commands.deadlines.gdpr import start_clock_from_tags
from commands.deadlines.policy import DeadlinePolicy
from commands.findings.normalize import NormalizedFinding
from containment.capabilities import Permissions
from storage.db import Database
from storage.facts import set_resource_tags
from storage.models import Incident
from storage.timeline import append_event

log = logging.getLogger(__name__)

ClientFactory = Callable[[str, str | None], Any]  # (service, region) -> boto3 client
_AWS_ERRORS = (BotoCoreError, ClientError)
# The affected resource's tags, for its card.
PERMISSIONS = Permissions(
    "resource_tags", "triage", ("ec2:DescribeInstances", "ec2:DescribeTags", "iam:ListUserTags")
)


def read_resource_tags(
    *, finding: NormalizedFinding, client_for: ClientFactory
) -> tuple[dict[str, str], str]:
    """(tags, source) where source says where they came from: `ec2`, `iam` or `finding`."""
    tags = dict(finding.tags)
    try:
        if finding.resource_type in (None, "Instance") and finding.instance_id:
            live = _instance_tags(client_for("ec2", finding.region), finding.instance_id)
            if live is not None:
                return {**tags, **live}, "ec2"
        elif finding.resource_type == "AccessKey" and finding.user_name:
            live = _user_tags(client_for("iam", finding.region), finding.user_name)
            if live is not None:
                return {**tags, **live}, "iam"
    except _AWS_ERRORS as exc:
        log.warning("reading tags of %s failed: %s", finding.resource_id, exc)
    return tags, "finding"


def _instance_tags(ec2: Any, instance_id: str) -> dict[str, str] | None:
    try:
        reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "InvalidInstanceID.NotFound":
            raise
        reservations = []
    for reservation in reservations:
        for instance in reservation.get("Instances", []):
            if instance.get("InstanceId") == instance_id:
                return _pairs(instance.get("Tags", []))
    # Terminated long ago or not visible: describe_tags still answers for the resource id.
    tags: dict[str, str] = {}
    paginator = ec2.get_paginator("describe_tags")
    for page in paginator.paginate(Filters=[{"Name": "resource-id", "Values": [instance_id]}]):
        tags.update(_pairs(page.get("Tags", [])))
    return tags or None


def _user_tags(iam: Any, user_name: str) -> dict[str, str] | None:
    try:
        return _pairs(iam.list_user_tags(UserName=user_name).get("Tags", []))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "NoSuchEntity":
            return None
        raise


def _pairs(items: list[Mapping[str, Any]]) -> dict[str, str]:
    return {str(t["Key"]): str(t.get("Value", "")) for t in items if "Key" in t}


def store_resource_tags(
    *,
    database: Database,
    incident_id: int,
    tags: Mapping[str, str],
    source: str,
    policy: DeadlinePolicy,
) -> None:
    """Keep the tags on the incident for its card, and the lookup on its timeline."""
    with database.session() as session:
        incident = session.get(Incident, incident_id)
        if incident is None:
            return
        set_resource_tags(incident, tags, source)
        append_event(
            session=session,
            incident=incident,
            actor="system",
            kind="resource.tags",
            summary=f"Read {len(tags)} tag(s) of {incident.resource_id} from {source}",
            details={"tags": dict(tags), "source": source},
        )
        # A resource tagged as holding personal data starts the regulator clock, counted from
        # when the finding made us aware (the incident's opening), not from this lookup.
        start_clock_from_tags(
            session=session,
            incident=incident,
            tags=tags,
            policy=policy,
            actor="system",
            resource_id=incident.resource_id,
            aware_at=incident.created_at,
        )
