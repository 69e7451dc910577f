"""IAM lookups: users (policies, groups, access keys) and roles, whose blast radius is the EC2
instances carrying them in an instance profile; and their summary lines."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from commands.impact_lookups.reads import (
    MAX_LISTED,
    MISSING,
    Clients,
    Reader,
    Unread,
    first_read,
    labelled,
    tag_dict,
)
from storage.facts import RoleInstancesImpact


def user_details(
    *,
    iam: Any,
    user: str,
    tag_keys: Mapping[str, str],
    notes: list[str],
    keys: bool = False,
) -> dict[str, Any]:
    """An IAM user's tags, attached policies and groups (and, with `keys`, its access keys)."""
    what = f"IAM user {user}"
    read = Reader(notes)
    out: dict[str, Any] = {"user": user}
    tags = first_read(
        notes, what, lambda: iam.list_user_tags(UserName=user).get("Tags"), {"NoSuchEntity"}
    )
    if tags is MISSING:
        return out
    if not isinstance(tags, Unread):
        out["tags"] = labelled(tag_dict(tags), tag_keys)
    _keep(
        out,
        "attached_policies",
        read(
            f"{what} attached policies",
            lambda: _listed(
                iam, "list_attached_user_policies", "AttachedPolicies", "PolicyName", UserName=user
            ),
        ),
    )
    _keep(
        out,
        "groups",
        read(
            f"{what} groups",
            lambda: _listed(iam, "list_groups_for_user", "Groups", "GroupName", UserName=user),
        ),
    )
    if keys:
        listed = read(
            f"{what} access keys",
            lambda: iam.list_access_keys(UserName=user)["AccessKeyMetadata"],
        )
        if not isinstance(listed, Unread):
            out["access_keys"] = [
                {
                    "id": k["AccessKeyId"],
                    "status": k.get("Status"),
                    "created": k["CreateDate"].isoformat() if k.get("CreateDate") else None,
                }
                for k in listed
            ]
    return out


def _listed(iam: Any, operation: str, key: str, field: str | None = None, **kw: Any) -> list[Any]:
    """Every page's `key` items of a paginated IAM list (their `field`, when named)."""
    items = [x for page in iam.get_paginator(operation).paginate(**kw) for x in page[key]]
    return [x[field] for x in items] if field else items


def _keep(out: dict[str, Any], key: str, value: Any) -> None:
    if not isinstance(value, Unread):  # an unread value is a note already, not a fact
        out[key] = value


def user_impact(
    *, client: Clients, name: str, region: str, tag_keys: Mapping[str, str], notes: list[str]
) -> dict[str, Any]:
    return user_details(
        iam=client("iam", region), user=name, tag_keys=tag_keys, notes=notes, keys=True
    )


def role_impact(
    *, client: Clients, name: str, region: str, tag_keys: Mapping[str, str], notes: list[str]
) -> dict[str, Any]:
    """A role's tags and policies, and its blast radius: the EC2 instances (in the incident's
    region) whose instance profiles carry it."""
    what = f"IAM role {name}"
    read = Reader(notes)
    iam = client("iam", region)
    tags = first_read(
        notes, what, lambda: iam.list_role_tags(RoleName=name).get("Tags"), {"NoSuchEntity"}
    )
    if tags is MISSING:
        return {}
    out: dict[str, Any] = {"role": name}
    if not isinstance(tags, Unread):
        out["tags"] = labelled(tag_dict(tags), tag_keys)
    _keep(
        out,
        "attached_policies",
        read(
            f"{what} attached policies",
            lambda: _listed(
                iam, "list_attached_role_policies", "AttachedPolicies", "PolicyName", RoleName=name
            ),
        ),
    )
    profiles = read(
        f"{what} instance profiles",
        lambda: _listed(iam, "list_instance_profiles_for_role", "InstanceProfiles", RoleName=name),
    )
    if isinstance(profiles, Unread):
        return out
    out["instance_profiles"] = [p["InstanceProfileName"] for p in profiles]
    if profiles:
        found = _role_instances(
            ec2=client("ec2", region),
            arns={p["Arn"] for p in profiles},
            region=region,
            tag_keys=tag_keys,
            read=read,
        )
        if found is not None:
            out["role_instances"] = found
    return out


def _role_instances(
    *, ec2: Any, arns: set[str], region: str, tag_keys: Mapping[str, str], read: Reader
) -> RoleInstancesImpact | None:
    # EC2 has no filter by instance-profile ARN that every API answers the same way; the
    # associations list is one short item per instance with a profile.
    associations = read(
        "instance-profile associations",
        lambda: [
            a
            for page in ec2.get_paginator("describe_iam_instance_profile_associations").paginate(
                Filters=[{"Name": "state", "Values": ["associated"]}]
            )
            for a in page["IamInstanceProfileAssociations"]
        ],
    )
    if isinstance(associations, Unread):
        return None
    ids = sorted(
        {
            a["InstanceId"]
            for a in associations
            if (a.get("IamInstanceProfile") or {}).get("Arn") in arns
        }
    )
    result: RoleInstancesImpact = {"region": region, "count": len(ids), "instances": []}
    if not ids:
        return result
    listed = ids[:MAX_LISTED]
    described = read(
        "instances using the role",
        lambda: [
            inst
            for page in ec2.get_paginator("describe_instances").paginate(InstanceIds=listed)
            for r in page["Reservations"]
            for inst in r["Instances"]
        ],
    )
    by_id = {} if isinstance(described, Unread) else {i["InstanceId"]: i for i in described}
    instances = []
    for instance_id in listed:
        inst = by_id.get(instance_id, {})
        item: dict[str, Any] = {"id": instance_id}
        if inst:
            item["state"] = (inst.get("State") or {}).get("Name")
            tags = labelled(tag_dict(inst.get("Tags")), tag_keys)
            if tags:
                item["tags"] = tags
        instances.append(item)
    # Sensitive instances first: they are what widens the blast radius.
    instances.sort(key=lambda i: (-len(i.get("tags", {})), i["id"]))
    result["instances"] = instances
    return result


def user_lines(impact: Mapping[str, Any]) -> list[str]:
    lines = []
    if impact.get("groups"):
        lines.append("groups: " + ", ".join(impact["groups"]))
    keys = impact.get("access_keys")
    if keys is not None:
        active = sum(1 for k in keys if k.get("status") == "Active")
        lines.append(f"{len(keys)} access keys ({active} active)")
    return lines


def role_lines(impact: Mapping[str, Any]) -> list[str]:
    extra = ", ".join(impact.get("attached_policies") or []) or "no attached policies"
    lines = [f"IAM role {impact['role']} ({extra})"]
    profiles = impact.get("instance_profiles")
    if profiles is not None:
        used = impact.get("role_instances")
        where = ""
        if used is not None:
            names = [
                i.get("tags", {}).get("name") or i["id"] for i in used.get("instances", [])[:5]
            ]
            more = used["count"] - len(names)
            where = f", used by {used['count']} EC2 instances in {used['region']}" + (
                f" ({', '.join(names)}{f', +{more}' if more > 0 else ''})" if names else ""
            )
        lines.append(
            ("instance profiles: " + ", ".join(profiles) if profiles else "no instance profiles")
            + where
        )
    return lines
