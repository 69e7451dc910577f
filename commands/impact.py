"""Blast radius: who owns the affected resource, how sensitive it is, and what sits next to it.

`estimate_impact` reads AWS only (tags, Organizations, neighbours in the same security groups
and subnet for an instance; the per-type reads of commands/impact_lookups/ for buckets,
functions, databases, clusters, users and roles) and returns a JSON-safe dict; `record_impact`
stores it in `incident.facts` and on the timeline. `refresh_impact` does both with the AWS
reads outside any database transaction, and is what `/incident impact` and new-incident
intake call.

Every read is best effort: an AccessDenied or a missing resource becomes a note on the
estimate instead of failing the whole command, because a partial picture early in an incident
beats none.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import replace
from typing import Any, cast

from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy.orm import Session

from commands.errors import UserError
from commands.impact_lookups import LOOKUPS, kind_lines
from commands.impact_lookups.identity import user_details
from commands.impact_lookups.reads import DENIED, labelled, note_for, tag_dict
from commands.incidents import get_incident
from containment.capabilities import Permissions
from containment.context import ActionContext
from containment.errors import error_code
from containment.targets import TARGET_KINDS, Target, TargetKind, identify, kind_of
from storage.db import Database
from storage.facts import IMPACT, ImpactFacts
from storage.models import Incident
from storage.timeline import append_event

# What the impact read calls (triage: read-only).
PERMISSIONS = Permissions(
    "impact",
    "triage",
    (
        "ec2:DescribeInstances",
        "ec2:DescribeNetworkInterfaces",
        "iam:GetAccessKeyLastUsed",
        "iam:ListUserTags",
        "iam:ListAttachedUserPolicies",
        "iam:ListGroupsForUser",
        "organizations:DescribeAccount",
        "organizations:ListParents",
        "organizations:DescribeOrganizationalUnit",
        # S3 bucket (GetPublicAccessBlock and GetBucketEncryption are authorised by these).
        "s3:GetBucketLocation",
        "s3:GetBucketTagging",
        "s3:GetBucketPublicAccessBlock",
        "s3:GetBucketPolicyStatus",
        "s3:GetBucketVersioning",
        "s3:GetBucketObjectLockConfiguration",
        "s3:GetEncryptionConfiguration",
        # Lambda function (GetFunction returns the tags only with ListTags).
        "lambda:GetFunction",
        "lambda:ListTags",
        "lambda:GetPolicy",
        "lambda:GetFunctionUrlConfig",
        # RDS DB instance, Aurora Limitless shard group, and their cluster.
        "rds:DescribeDBInstances",
        "rds:DescribeDBClusters",
        "rds:DescribeDBShardGroups",
        # EKS and ECS clusters.
        "eks:DescribeCluster",
        "eks:ListNodegroups",
        "ecs:DescribeClusters",
        # IAM user and role, and the instances that carry the role.
        "iam:ListAccessKeys",
        "iam:ListRoleTags",
        "iam:ListAttachedRolePolicies",
        "iam:ListInstanceProfilesForRole",
        "ec2:DescribeIamInstanceProfileAssociations",
    ),
)
# GuardDuty's resource types (and /contain's, commands/approvals/plans.RESOURCE_TYPES) to the
# lookup that examines them. A Container finding that names no container is keyed on its host
# instance and stored as Instance; one that names a container has no lookup of its own.
KINDS_BY_TYPE: dict[str, str] = {
    "Instance": "instance",
    "AccessKey": "access_key",
    "S3Bucket": "bucket",
    "Lambda": "function",
    "RDSDBInstance": "db_instance",
    "RDSLimitlessDB": "db_shard_group",
    "EKSCluster": "eks_cluster",
    "ECSCluster": "ecs_cluster",
    "IAMUser": "user",
    "IAMRole": "role",
    "Container": "container",
}
MAX_NEIGHBOURS = 25  # listed; the counts always cover all of them
DEFAULT_REGION = "us-east-1"
_NOT_IN_ORG = {"AWSOrganizationsNotInUseException", "AccountNotFoundException"}


def account_info(*, organizations: Any, account_id: str | None) -> dict[str, Any]:
    """The account's name and OU path from AWS Organizations, or why they are unknown."""
    info: dict[str, Any] = {"id": account_id}
    if not account_id:
        info["note"] = "account unknown"
        return info
    try:
        account = organizations.describe_account(AccountId=account_id)["Account"]
        info["name"] = account.get("Name")
        info["status"] = account.get("Status")
        path: list[dict[str, str]] = []
        child = account_id
        # Walk up to the root; OUs nest at most five deep.
        for _ in range(6):
            parents = organizations.list_parents(ChildId=child)["Parents"]
            if not parents or parents[0]["Type"] == "ROOT":
                break
            ou_id = parents[0]["Id"]
            ou = organizations.describe_organizational_unit(OrganizationalUnitId=ou_id)
            path.insert(0, {"id": ou_id, "name": ou["OrganizationalUnit"].get("Name", ou_id)})
            child = ou_id
        info["ou_path"] = path
        info["ou"] = path[-1]["name"] if path else "Root"
    except ClientError as exc:
        code = error_code(exc)
        if code in _NOT_IN_ORG:
            info["note"] = "not readable in AWS Organizations (no organization, or not a member)"
        elif code in DENIED:
            info["note"] = "AWS Organizations not readable from this account (access denied)"
        else:
            info["note"] = f"AWS Organizations: {code}"
    except BotoCoreError as exc:
        info["note"] = f"AWS Organizations: {type(exc).__name__}"
    return info


def _describe_instance(ec2: Any, instance_id: str) -> dict[str, Any] | None:
    try:
        reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    except ClientError as exc:
        if error_code(exc).endswith("NotFound"):
            return None
        raise
    for reservation in reservations:
        for instance in reservation["Instances"]:
            return instance
    return None


def _neighbour(eni: dict[str, Any], via: list[str]) -> dict[str, Any]:
    attachment = eni.get("Attachment") or {}
    item: dict[str, Any] = {
        "eni": eni["NetworkInterfaceId"],
        "type": eni.get("InterfaceType") or "interface",
        "description": (eni.get("Description") or "")[:120],
        "private_ip": eni.get("PrivateIpAddress"),
        "via": via,
    }
    if attachment.get("InstanceId"):
        item["instance_id"] = attachment["InstanceId"]
    if eni.get("RequesterId") or eni.get("RequesterManaged"):
        item["managed_by"] = eni.get("RequesterId") or "AWS"
    return item


def _paginate_enis(ec2: Any, name: str, values: list[str]) -> list[dict[str, Any]]:
    pages = ec2.get_paginator("describe_network_interfaces").paginate(
        Filters=[{"Name": name, "Values": values}]
    )
    return [eni for page in pages for eni in page["NetworkInterfaces"]]


def network_neighbours(
    *, ec2: Any, instance: dict[str, Any], tag_keys: dict[str, str]
) -> dict[str, Any]:
    """What else shares the instance's security groups and subnets (other ENIs and instances)."""
    own_enis = {e["NetworkInterfaceId"] for e in instance.get("NetworkInterfaces", [])}
    groups: dict[str, str] = {}
    subnets: set[str] = set()
    for eni in instance.get("NetworkInterfaces", []):
        for g in eni.get("Groups", []):
            groups[g["GroupId"]] = g.get("GroupName", g["GroupId"])
        if eni.get("SubnetId"):
            subnets.add(eni["SubnetId"])
    for g in instance.get("SecurityGroups", []):
        groups.setdefault(g["GroupId"], g.get("GroupName", g["GroupId"]))
    if instance.get("SubnetId"):
        subnets.add(instance["SubnetId"])

    found: dict[str, dict[str, Any]] = {}
    per_group: dict[str, int] = {}
    per_subnet: dict[str, int] = {}

    def add(eni: dict[str, Any], via: str) -> None:
        if eni["NetworkInterfaceId"] in own_enis:
            return
        item = found.setdefault(eni["NetworkInterfaceId"], _neighbour(eni, []))
        if via not in item["via"]:
            item["via"].append(via)

    if groups:
        for eni in _paginate_enis(ec2, "group-id", sorted(groups)):
            for g in eni.get("Groups", []):
                if g["GroupId"] in groups and eni["NetworkInterfaceId"] not in own_enis:
                    per_group[g["GroupId"]] = per_group.get(g["GroupId"], 0) + 1
                    add(eni, g["GroupId"])
    if subnets:
        for eni in _paginate_enis(ec2, "subnet-id", sorted(subnets)):
            if eni["NetworkInterfaceId"] not in own_enis:
                per_subnet[eni["SubnetId"]] = per_subnet.get(eni["SubnetId"], 0) + 1
                add(eni, eni["SubnetId"])

    # Name and classify the neighbouring instances in one call.
    instance_ids = sorted({n["instance_id"] for n in found.values() if "instance_id" in n})
    by_instance: dict[str, dict[str, str]] = {}
    if instance_ids:
        pages = ec2.get_paginator("describe_instances").paginate(InstanceIds=instance_ids)
        for page in pages:
            for reservation in page["Reservations"]:
                for inst in reservation["Instances"]:
                    by_instance[inst["InstanceId"]] = tag_dict(inst.get("Tags"))
    for item in found.values():
        tags = by_instance.get(item.get("instance_id", ""), {})
        shown = labelled(tags, tag_keys)
        if shown:
            item["tags"] = shown

    neighbours = sorted(
        found.values(),
        # Sensitive neighbours first: they are what widens the blast radius.
        key=lambda n: (-len(n.get("tags", {})), n.get("instance_id") or "~", n["eni"]),
    )
    return {
        "vpc_id": instance.get("VpcId"),
        "subnets": sorted(subnets),
        "security_groups": [{"id": gid, "name": name} for gid, name in sorted(groups.items())],
        "per_security_group": per_group,
        "per_subnet": per_subnet,
        "neighbour_count": len(neighbours),
        "neighbour_instances": len(instance_ids),
        "neighbours": neighbours[:MAX_NEIGHBOURS],
    }


def _instance_impact(
    *, ctx: ActionContext, target: Target, tag_keys: dict[str, str], notes: list[str]
) -> dict[str, Any]:
    ec2 = ctx.client("ec2", target)
    out: dict[str, Any] = {}
    try:
        instance = _describe_instance(ec2, target.resource_id)
    except (ClientError, BotoCoreError) as exc:
        notes.append(note_for(exc, "instance"))
        return out
    if instance is None:
        notes.append(f"instance {target.resource_id} not found (terminated, or another region)")
        return out
    tags = tag_dict(instance.get("Tags"))
    out["tags"] = labelled(tags, tag_keys)
    out["state"] = (instance.get("State") or {}).get("Name")
    out["instance_type"] = instance.get("InstanceType")
    out["availability_zone"] = (instance.get("Placement") or {}).get("AvailabilityZone")
    profile = instance.get("IamInstanceProfile") or {}
    if profile.get("Arn"):
        out["instance_profile"] = profile["Arn"]
    if instance.get("PublicIpAddress"):
        out["public_ip"] = instance["PublicIpAddress"]
    try:
        out["network"] = network_neighbours(ec2=ec2, instance=instance, tag_keys=tag_keys)
    except (ClientError, BotoCoreError) as exc:
        notes.append(note_for(exc, "security-group and subnet neighbours"))
    return out


def _access_key_impact(
    *, ctx: ActionContext, target: Target, tag_keys: dict[str, str], notes: list[str]
) -> dict[str, Any]:
    iam = ctx.client("iam", target)
    out: dict[str, Any] = {}
    user = target.user_name
    try:
        last = iam.get_access_key_last_used(AccessKeyId=target.resource_id)
        user = user or last.get("UserName")
        used = last.get("AccessKeyLastUsed") or {}
        if used.get("LastUsedDate"):
            out["last_used"] = {
                "at": used["LastUsedDate"].isoformat(),
                "service": used.get("ServiceName"),
                "region": used.get("Region"),
            }
    except (ClientError, BotoCoreError) as exc:
        notes.append(note_for(exc, "access key"))
    if not user:
        return out
    out.update(user_details(iam=iam, user=user, tag_keys=tag_keys, notes=notes))
    return out


def _account_id(ctx: ActionContext, target: Target, notes: list[str]) -> str | None:
    if target.account_id:
        return target.account_id
    try:
        return str(ctx.client("sts", target).get_caller_identity()["Account"])
    except (ClientError, BotoCoreError) as exc:
        notes.append(note_for(exc, "account id"))
        return None


def resolve(
    resource_id: str, resource_type: str | None
) -> tuple[str | None, str, str | None, str | None]:
    """(impact kind, plain name, region, account) of an incident's resource: an id's shape
    first (a Container finding keyed on its host is an instance), then the stored resource
    type, then an ARN or `kind:name`; the region and account only when an ARN says them."""
    shaped = kind_of(resource_id)
    if shaped is not None:
        return shaped, resource_id, None, None
    kind = KINDS_BY_TYPE.get(resource_type or "")
    if kind is None or kind in TARGET_KINDS:
        found = identify(resource_id, kind=cast(TargetKind, kind) if kind else None)
        if found is not None and kind in (None, found.kind):
            return found.kind, found.resource_id, found.region, found.account_id
    return kind, resource_id, None, None


def estimate_impact(
    *,
    ctx: ActionContext,
    resource_id: str | None,
    region: str,
    account_id: str | None = None,
    resource_type: str | None = None,
    tag_keys: dict[str, str],
    now: Callable[[], dt.datetime] | None = None,
) -> dict[str, Any]:
    """Read AWS and return the blast-radius estimate (JSON-safe). No side effects.

    `resource_type` is the incident's (GuardDuty's resource type, or /contain's): it says what
    a plain name such as a bucket's or a function's names."""
    now = now or ctx.now
    notes: list[str] = []
    kind, name, arn_region, arn_account = (
        resolve(resource_id, resource_type) if resource_id else (None, "", None, None)
    )
    region = arn_region or region
    account_id = account_id or arn_account
    impact: dict[str, Any] = {
        "resource": {"id": resource_id, "kind": kind, "type": resource_type, "region": region},
        "computed_at": now().isoformat(),
    }
    # Clients only read the target's account and region; its kind is not consulted.
    target = Target(
        kind=cast(TargetKind, kind) if kind in TARGET_KINDS else "instance",
        resource_id=name,
        region=region,
        account_id=account_id,
    )

    def clients(service: str, where: str) -> Any:
        return ctx.client(service, replace(target, region=where))

    if kind == "instance":
        impact.update(_instance_impact(ctx=ctx, target=target, tag_keys=tag_keys, notes=notes))
    elif kind == "access_key":
        impact.update(_access_key_impact(ctx=ctx, target=target, tag_keys=tag_keys, notes=notes))
    elif kind in LOOKUPS:
        impact.update(
            LOOKUPS[kind](client=clients, name=name, region=region, tag_keys=tag_keys, notes=notes)
        )
    elif kind == "container":
        notes.append(
            f"container {resource_id}: no AWS API describes a container by its id; "
            "its host instance or cluster is the blast radius"
        )
    elif resource_id:
        notes.append(
            f"{resource_id}: no blast-radius lookup for "
            + (f"{resource_type} resources" if resource_type else "a resource of unknown type")
        )
    else:
        notes.append("no affected resource recorded on the incident")
    acct = _account_id(ctx, target, notes)
    impact["account"] = account_info(
        organizations=ctx.home_client("organizations", region), account_id=acct
    )
    impact["notes"] = notes
    return impact


def record_impact(
    *, session: Session, incident: Incident, impact: dict[str, Any], actor: str
) -> Incident:
    IMPACT.set(incident, cast(ImpactFacts, impact))
    append_event(
        session=session,
        incident=incident,
        actor=actor,
        kind="impact.estimated",
        summary="Blast radius: " + "; ".join(summary_lines(impact)),
        details=impact,
    )
    return incident


def refresh_impact(
    *,
    db: Database,
    incident_key: str,
    ctx: ActionContext,
    tag_keys: dict[str, str],
    actor: str,
    default_region: str = DEFAULT_REGION,
) -> dict[str, Any]:
    """`/incident impact`: estimate and store. AWS is read outside any DB transaction."""
    with db.read_session() as session:
        incident = get_incident(session=session, key=incident_key)
        resource_id, resource_type, region, account_id = (
            incident.resource_id,
            incident.resource_type,
            incident.region or default_region,
            incident.account_id,
        )
    if not resource_id:
        raise UserError(
            f"{incident_key} names no affected resource: open it from a finding or with "
            "/contain <instance-id|access-key-id|kind:name> first."
        )
    impact = estimate_impact(
        ctx=ctx,
        resource_id=resource_id,
        region=region,
        account_id=account_id,
        resource_type=resource_type,
        tag_keys=tag_keys,
    )
    with db.session() as session:
        incident = get_incident(session=session, key=incident_key, for_update=True)
        record_impact(session=session, incident=incident, impact=impact, actor=actor)
    return impact


def impact_for_new_incident(
    *,
    db: Database,
    incident_key: str,
    ctx: ActionContext,
    tag_keys: dict[str, str],
    default_region: str = DEFAULT_REGION,
) -> dict[str, Any] | None:
    """Intake hook: estimate the blast radius of a just-opened incident, if it names a resource.

    Never raises for AWS trouble (the estimate carries notes instead); returns None when the
    incident has no resource to examine.
    """
    try:
        return refresh_impact(
            db=db,
            incident_key=incident_key,
            ctx=ctx,
            tag_keys=tag_keys,
            actor="system",
            default_region=default_region,
        )
    except UserError:
        return None


def summary_lines(impact: dict[str, Any]) -> list[str]:
    """Short plain-text lines for cards and the timeline (the caller escapes for mrkdwn)."""
    lines: list[str] = []
    tags = impact.get("tags") or {}
    if tags:
        lines.append(", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in tags.items()))
    elif impact.get("resource", {}).get("id"):
        lines.append("no classification tags on the resource")
    acct = impact.get("account") or {}
    if acct.get("name"):
        lines.append(f"account {acct['name']} ({acct.get('id')}), OU {acct.get('ou', '?')}")
    elif acct.get("id"):
        lines.append(f"account {acct['id']}" + (f" ({acct['note']})" if acct.get("note") else ""))
    if impact.get("user"):
        extra = ", ".join(impact.get("attached_policies") or []) or "no attached policies"
        lines.append(f"IAM user {impact['user']} ({extra})")
    lines += kind_lines(impact)
    net = impact.get("network")
    if net:
        groups = ", ".join(
            f"{g['name']} ({net['per_security_group'].get(g['id'], 0)} others)"
            for g in net["security_groups"]
        )
        subnets = ", ".join(f"{s} ({net['per_subnet'].get(s, 0)} others)" for s in net["subnets"])
        lines.append(f"security groups: {groups or 'none'}")
        lines.append(f"subnets: {subnets or 'none'}")
        sensitive = [n for n in net["neighbours"] if n.get("tags")]
        lines.append(
            f"{net['neighbour_count']} neighbouring interfaces "
            f"({net['neighbour_instances']} instances, {len(sensitive)} tagged)"
        )
    return lines
