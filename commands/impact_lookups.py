"""Blast-radius lookups for the resources besides EC2 instances and access keys: S3 buckets,
Lambda functions, RDS DB instances and Limitless shard groups, EKS and ECS clusters, IAM
users and roles. `commands.impact.estimate_impact` picks one by the incident's resource type.

Every read stands alone: an AccessDenied on one (say, a bucket's policy status) becomes a note
and the others still run, because a partial picture early in an incident beats none. A read
whose answer is "not configured" (no bucket policy, no function URL) is a fact, not a note.

Each lookup gets `client(service, region)`: a client in the resource's account, so a bucket in
another region than the finding's is read where it lives.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from containment.errors import error_code
from storage.facts import (
    BucketImpact,
    DatabaseImpact,
    DbClusterImpact,
    EcsImpact,
    EksImpact,
    FunctionImpact,
    RoleInstancesImpact,
    ShardGroupImpact,
)

Clients = Callable[[str, str], Any]  # (service, region) -> boto3 client
MAX_LISTED = 25  # names listed; the counts always cover all of them
DENIED = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"}
# Condition keys that tie a wildcard principal to one account, organization or source: such a
# statement is not open to anyone.
_LIMITING_KEYS = {
    "aws:sourcearn",
    "aws:sourceaccount",
    "aws:sourceowner",
    "aws:sourceorgid",
    "aws:principalorgid",
    "aws:principalaccount",
    "aws:principalarn",
    "aws:principalorgpaths",
}


class Unread:
    """The value of a read that failed (the failure is already a note)."""

    def __init__(self, why: str) -> None:
        self.why = why

    def __repr__(self) -> str:
        return self.why


UNREAD = Unread("UNREAD")
MISSING = Unread("MISSING")  # the resource itself is gone: the lookup ends


def labelled(tags: Mapping[str, str], tag_keys: Mapping[str, str]) -> dict[str, str]:
    """The configured tags present on a resource, under their configured labels."""
    return {label: tags[key] for label, key in tag_keys.items() if key in tags}


def tag_dict(items: Iterable[Mapping[str, str]] | None, key: str = "Key") -> dict[str, str]:
    """[{Key, Value}] (or ECS's [{key, value}]) as a dict."""
    value = "value" if key == "key" else "Value"
    return {t[key]: t.get(value, "") for t in items or [] if key in t}


def note_for(exc: BaseException, what: str) -> str:
    code = error_code(exc)
    if code in DENIED:
        return f"{what}: access denied ({code}); grant the read permission to see it"
    return f"{what}: {code}"


class Reader:
    """Runs one read at a time, turning AWS errors into notes."""

    def __init__(self, notes: list[str]) -> None:
        self.notes = notes

    def __call__(
        self, what: str, call: Callable[[], Any], absent: Mapping[str, Any] | None = None
    ) -> Any:
        """`call()`'s answer; `absent[code]` when the error means "not configured";
        UNREAD (and a note) on any other failure."""
        try:
            return call()
        except ClientError as exc:
            if absent is not None and error_code(exc) in absent:
                return absent[error_code(exc)]
            self.notes.append(note_for(exc, what))
        except BotoCoreError as exc:
            self.notes.append(note_for(exc, what))
        return UNREAD


def not_found(what: str) -> str:
    return f"{what} not found (deleted, or in another account or region)"


def _first(notes: list[str], what: str, call: Callable[[], Any], missing: set[str]) -> Any:
    """The lookup's first read: MISSING (and a note) when the resource is gone, UNREAD (and a
    note) when it could not be read."""
    try:
        return call()
    except ClientError as exc:
        if error_code(exc) in missing:
            notes.append(not_found(what))
            return MISSING
        notes.append(note_for(exc, what))
    except BotoCoreError as exc:
        notes.append(note_for(exc, what))
    return UNREAD


# -- S3 ----------------------------------------------------------------------------------------


def bucket_region(location: str | None) -> str:
    # GetBucketLocation answers null for us-east-1 and "EU" for the oldest eu-west-1 buckets.
    if not location:
        return "us-east-1"
    return "eu-west-1" if location == "EU" else location


def bucket_impact(
    *, client: Clients, name: str, region: str, tag_keys: Mapping[str, str], notes: list[str]
) -> dict[str, Any]:
    read = Reader(notes)
    what = f"S3 bucket {name}"
    s3 = client("s3", region)
    location = _first(notes, what, lambda: s3.get_bucket_location(Bucket=name), {"NoSuchBucket"})
    if location is MISSING:
        return {}
    if isinstance(location, Unread):
        where = region  # the other reads may still be allowed; try the finding's region
    else:
        where = bucket_region(location.get("LocationConstraint"))
        if where != region:
            s3 = client("s3", where)
    out: dict[str, Any] = {}
    bucket: BucketImpact = {"region": where}

    tagging = read(f"{what} tags", lambda: s3.get_bucket_tagging(Bucket=name), {"NoSuchTagSet": {}})
    if not isinstance(tagging, Unread):
        out["tags"] = labelled(tag_dict(tagging.get("TagSet")), tag_keys)
    block = read(
        f"{what} Block Public Access",
        lambda: s3.get_public_access_block(Bucket=name),
        {"NoSuchPublicAccessBlockConfiguration": None},
    )
    if not isinstance(block, Unread):
        bucket["public_access_block"] = (
            {k: bool(v) for k, v in block["PublicAccessBlockConfiguration"].items()}
            if block
            else None
        )
    status = read(
        f"{what} policy status",
        lambda: s3.get_bucket_policy_status(Bucket=name),
        {"NoSuchBucketPolicy": None},
    )
    if not isinstance(status, Unread):
        if status is None:
            bucket["policy"] = "none"
        else:
            public = (status.get("PolicyStatus") or {}).get("IsPublic")
            bucket["policy"] = "public" if public else "not public"
    versioning = read(f"{what} versioning", lambda: s3.get_bucket_versioning(Bucket=name))
    if not isinstance(versioning, Unread):
        bucket["versioning"] = versioning.get("Status") or "Off"
        bucket["mfa_delete"] = versioning.get("MFADelete")
    lock = read(
        f"{what} Object Lock",
        lambda: s3.get_object_lock_configuration(Bucket=name),
        {"ObjectLockConfigurationNotFoundError": {}},
    )
    if not isinstance(lock, Unread):
        config = lock.get("ObjectLockConfiguration") or {}
        retention = (config.get("Rule") or {}).get("DefaultRetention") or {}
        bucket["object_lock"] = {
            "enabled": config.get("ObjectLockEnabled") == "Enabled",
            # A rule sets Days or Years, not both (some answers carry the other as 0).
            **{k.lower(): v for k, v in retention.items() if k in ("Mode", "Days", "Years") and v},
        }
    encryption = read(
        f"{what} default encryption",
        lambda: s3.get_bucket_encryption(Bucket=name),
        {"ServerSideEncryptionConfigurationNotFoundError": None},
    )
    if not isinstance(encryption, Unread):
        rules = ((encryption or {}).get("ServerSideEncryptionConfiguration") or {}).get("Rules")
        if rules:
            default = rules[0].get("ApplyServerSideEncryptionByDefault") or {}
            bucket["encryption"] = {
                "algorithm": default.get("SSEAlgorithm"),
                "kms_key": default.get("KMSMasterKeyID"),
                "bucket_key": rules[0].get("BucketKeyEnabled"),
            }
        else:
            bucket["encryption"] = None
    out["bucket"] = bucket
    return out


# -- Lambda ------------------------------------------------------------------------------------


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def public_statements(policy: str | Mapping[str, Any]) -> list[str]:
    """The Sids of resource-policy statements that allow anyone (a wildcard principal with no
    condition tying it to an account, organization or source)."""
    doc = json.loads(policy) if isinstance(policy, str) else policy
    found = []
    for i, statement in enumerate(_as_list(doc.get("Statement") or [])):
        if not isinstance(statement, dict) or statement.get("Effect") != "Allow":
            continue
        principal = statement.get("Principal")
        anyone = principal == "*" or (
            isinstance(principal, dict) and "*" in _as_list(principal.get("AWS"))
        )
        if not anyone:
            continue
        keys = {
            str(k).lower()
            for test in (statement.get("Condition") or {}).values()
            if isinstance(test, dict)
            for k in test
        }
        if not keys & _LIMITING_KEYS:
            found.append(str(statement.get("Sid") or f"statement {i + 1}"))
    return found


def function_impact(
    *, client: Clients, name: str, region: str, tag_keys: Mapping[str, str], notes: list[str]
) -> dict[str, Any]:
    read = Reader(notes)
    what = f"Lambda function {name}"
    lam = client("lambda", region)
    got = _first(
        notes, what, lambda: lam.get_function(FunctionName=name), {"ResourceNotFoundException"}
    )
    if isinstance(got, Unread):
        return {}
    conf = got.get("Configuration") or {}
    vpc_config = conf.get("VpcConfig") or {}
    function: FunctionImpact = {
        "runtime": conf.get("Runtime"),
        "package_type": conf.get("PackageType"),
        "role": conf.get("Role"),
        "last_modified": conf.get("LastModified"),
        "vpc": (
            {
                "vpc_id": vpc_config.get("VpcId"),
                "subnets": list(vpc_config.get("SubnetIds") or []),
                "security_groups": list(vpc_config.get("SecurityGroupIds") or []),
            }
            if vpc_config.get("SubnetIds")
            else None
        ),
    }
    # GetFunction returns Tags only to callers allowed lambda:ListTags.
    out: dict[str, Any] = {"tags": labelled(got.get("Tags") or {}, tag_keys)}
    policy = read(
        f"{what} resource policy",
        lambda: lam.get_policy(FunctionName=name),
        {"ResourceNotFoundException": None},
    )
    if not isinstance(policy, Unread):
        function["public_statements"] = public_statements(policy["Policy"]) if policy else []
    url = read(
        f"{what} function URL",
        lambda: lam.get_function_url_config(FunctionName=name),
        {"ResourceNotFoundException": None},
    )
    if not isinstance(url, Unread):
        function["url_auth"] = url.get("AuthType") if url else None
    out["function"] = function
    return out


# -- RDS ---------------------------------------------------------------------------------------


def _db_cluster(rds: Any, cluster_id: str, read: Reader) -> DbClusterImpact | None:
    found = read(
        f"RDS cluster {cluster_id}",
        lambda: rds.describe_db_clusters(DBClusterIdentifier=cluster_id)["DBClusters"],
    )
    cluster: DbClusterImpact = {"id": cluster_id}
    if isinstance(found, Unread) or not found:
        return cluster
    c = found[0]
    members = c.get("DBClusterMembers") or []
    cluster["members"] = [m["DBInstanceIdentifier"] for m in members][:MAX_LISTED]
    cluster["writer"] = next(
        (m["DBInstanceIdentifier"] for m in members if m.get("IsClusterWriter")), None
    )
    cluster["encrypted"] = c.get("StorageEncrypted")
    cluster["security_groups"] = [g["VpcSecurityGroupId"] for g in c.get("VpcSecurityGroups", [])]
    return cluster


def db_instance_impact(
    *, client: Clients, name: str, region: str, tag_keys: Mapping[str, str], notes: list[str]
) -> dict[str, Any]:
    what = f"RDS DB instance {name}"
    rds = client("rds", region)
    found = _first(
        notes,
        what,
        lambda: rds.describe_db_instances(DBInstanceIdentifier=name)["DBInstances"],
        {"DBInstanceNotFound", "DBInstanceNotFoundFault"},
    )
    if isinstance(found, Unread) or not found:
        return {}
    db = found[0]
    database: DatabaseImpact = {
        "engine": db.get("Engine"),
        "engine_version": db.get("EngineVersion"),
        "instance_class": db.get("DBInstanceClass"),
        "status": db.get("DBInstanceStatus"),
        "publicly_accessible": db.get("PubliclyAccessible"),
        "encrypted": db.get("StorageEncrypted"),
        "multi_az": db.get("MultiAZ"),
        "security_groups": [g["VpcSecurityGroupId"] for g in db.get("VpcSecurityGroups", [])],
        "cluster": None,
    }
    if db.get("DBClusterIdentifier"):
        database["cluster"] = _db_cluster(rds, db["DBClusterIdentifier"], Reader(notes))
    return {"tags": labelled(tag_dict(db.get("TagList")), tag_keys), "database": database}


_SHARD_GROUP_MISSING = {"DBShardGroupNotFound", "DBShardGroupNotFoundFault"}


def shard_group_impact(
    *, client: Clients, name: str, region: str, tag_keys: Mapping[str, str], notes: list[str]
) -> dict[str, Any]:
    """An Aurora Limitless shard group; GuardDuty may name its cluster instead (the finding
    carries the cluster when it has no shard group), so a miss is retried as a cluster id."""
    what = f"Aurora Limitless shard group {name}"
    rds = client("rds", region)

    def by_id_or_cluster() -> list[dict[str, Any]]:
        try:
            return list(rds.describe_db_shard_groups(DBShardGroupIdentifier=name)["DBShardGroups"])
        except ClientError as exc:
            if error_code(exc) not in _SHARD_GROUP_MISSING:
                raise
        filters = [{"Name": "db-cluster-id", "Values": [name]}]
        return list(rds.describe_db_shard_groups(Filters=filters)["DBShardGroups"])

    found = _first(notes, what, by_id_or_cluster, _SHARD_GROUP_MISSING)
    if isinstance(found, Unread):
        return {}
    if not found:
        notes.append(not_found(what))
        return {}
    group = found[0]
    shard: ShardGroupImpact = {
        "id": group.get("DBShardGroupIdentifier") or name,
        "status": group.get("Status"),
        "publicly_accessible": group.get("PubliclyAccessible"),
        "max_acu": group.get("MaxACU"),
        "min_acu": group.get("MinACU"),
        "compute_redundancy": group.get("ComputeRedundancy"),
        "cluster": None,
    }
    if group.get("DBClusterIdentifier"):
        shard["cluster"] = _db_cluster(rds, group["DBClusterIdentifier"], Reader(notes))
    return {"tags": labelled(tag_dict(group.get("TagList")), tag_keys), "shard_group": shard}


# -- EKS and ECS -------------------------------------------------------------------------------


def eks_cluster_impact(
    *, client: Clients, name: str, region: str, tag_keys: Mapping[str, str], notes: list[str]
) -> dict[str, Any]:
    what = f"EKS cluster {name}"
    eks = client("eks", region)
    found = _first(
        notes,
        what,
        lambda: eks.describe_cluster(name=name)["cluster"],
        {"ResourceNotFoundException"},
    )
    if isinstance(found, Unread):
        return {}
    vpc = found.get("resourcesVpcConfig") or {}
    groups = list(vpc.get("securityGroupIds") or [])
    if vpc.get("clusterSecurityGroupId"):
        groups.append(vpc["clusterSecurityGroupId"])
    cluster: EksImpact = {
        "version": found.get("version"),
        "status": found.get("status"),
        "endpoint_public": vpc.get("endpointPublicAccess"),
        "endpoint_private": vpc.get("endpointPrivateAccess"),
        "public_cidrs": list(vpc.get("publicAccessCidrs") or []),
        "vpc_id": vpc.get("vpcId"),
        "security_groups": groups,
    }
    nodegroups = Reader(notes)(
        f"{what} node groups",
        lambda: [
            n
            for page in eks.get_paginator("list_nodegroups").paginate(clusterName=name)
            for n in page["nodegroups"]
        ],
    )
    if not isinstance(nodegroups, Unread):
        cluster["nodegroup_count"] = len(nodegroups)
        cluster["nodegroups"] = sorted(nodegroups)[:MAX_LISTED]
    return {"tags": labelled(found.get("tags") or {}, tag_keys), "eks_cluster": cluster}


def ecs_cluster_impact(
    *, client: Clients, name: str, region: str, tag_keys: Mapping[str, str], notes: list[str]
) -> dict[str, Any]:
    what = f"ECS cluster {name}"
    ecs = client("ecs", region)
    found = _first(
        notes, what, lambda: ecs.describe_clusters(clusters=[name], include=["TAGS"]), set()
    )
    if isinstance(found, Unread):
        return {}
    # A missing cluster is a "failures" entry (reason MISSING), not an error; a deleted one
    # is still described, with status INACTIVE.
    clusters = found.get("clusters") or []
    if not clusters:
        notes.append(not_found(what))
        return {}
    c = clusters[0]
    cluster: EcsImpact = {
        "status": c.get("status"),
        "active_services": c.get("activeServicesCount"),
        "running_tasks": c.get("runningTasksCount"),
        "pending_tasks": c.get("pendingTasksCount"),
        "container_instances": c.get("registeredContainerInstancesCount"),
    }
    return {"tags": labelled(tag_dict(c.get("tags"), key="key"), tag_keys), "ecs_cluster": cluster}


# -- IAM ---------------------------------------------------------------------------------------


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
    tags = _first(
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
    tags = _first(
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


Lookup = Callable[..., dict[str, Any]]
# The blast-radius lookups by impact kind (instances and access keys are commands.impact's).
LOOKUPS: dict[str, Lookup] = {
    "bucket": bucket_impact,
    "function": function_impact,
    "db_instance": db_instance_impact,
    "db_shard_group": shard_group_impact,
    "eks_cluster": eks_cluster_impact,
    "ecs_cluster": ecs_cluster_impact,
    "user": user_impact,
    "role": role_impact,
}


# -- summary lines -----------------------------------------------------------------------------


def _yes(value: Any) -> str:
    return "?" if value is None else ("yes" if value else "no")


def _bucket_lines(b: Mapping[str, Any]) -> list[str]:
    lines = []
    exposure = []
    if "policy" in b:
        exposure.append(
            {"public": "bucket policy PUBLIC", "none": "no bucket policy"}.get(
                b["policy"], "bucket policy not public"
            )
        )
    if "public_access_block" in b:
        block = b["public_access_block"]
        if block is None:
            exposure.append("Block Public Access not set on the bucket")
        else:
            off = [k for k, v in block.items() if not v]
            exposure.append(
                "Block Public Access all on"
                if not off
                else "Block Public Access off: " + ", ".join(off)
            )
    if exposure:
        lines.append("; ".join(exposure))
    facts = [f"S3 bucket in {b.get('region', '?')}"]
    if "versioning" in b:
        facts.append(f"versioning {b['versioning']}")
    lock = b.get("object_lock")
    if lock is not None and not lock.get("enabled"):
        facts.append("Object Lock off")
    elif lock is not None:
        retention = ", ".join(
            f"{lock[k]} {k}" if k != "mode" else str(lock[k])
            for k in ("mode", "days", "years")
            if lock.get(k) is not None
        )
        facts.append("Object Lock on" + (f" ({retention})" if retention else ""))
    if "encryption" in b:
        enc = b["encryption"]
        facts.append(
            "no default encryption"
            if not enc
            else f"default encryption {enc.get('algorithm')}"
            + (f" ({enc['kms_key']})" if enc.get("kms_key") else "")
        )
    lines.append(", ".join(facts))
    return lines


def _function_lines(f: Mapping[str, Any]) -> list[str]:
    runtime = f.get("runtime") or f.get("package_type") or "?"
    role = (f.get("role") or "?").rsplit("/", 1)[-1]
    lines = [f"Lambda {runtime}, execution role {role}, last modified {f.get('last_modified')}"]
    vpc = f.get("vpc")
    if vpc:
        lines.append(
            f"in VPC {vpc.get('vpc_id')}: subnets {', '.join(vpc['subnets']) or 'none'}; "
            f"security groups {', '.join(vpc['security_groups']) or 'none'}"
        )
    elif "vpc" in f:
        lines.append("not in a VPC (reaches the internet directly)")
    exposure = []
    if "url_auth" in f:
        auth = f["url_auth"]
        exposure.append(
            "no function URL"
            if auth is None
            else ("function URL PUBLIC (auth NONE)" if auth == "NONE" else f"function URL {auth}")
        )
    if "public_statements" in f:
        public = f["public_statements"]
        exposure.append(
            "resource policy allows anyone: " + ", ".join(public)
            if public
            else "no public resource-policy statements"
        )
    if exposure:
        lines.append("; ".join(exposure))
    return lines


def _cluster_text(cluster: Mapping[str, Any] | None) -> str:
    if not cluster:
        return "not in a cluster"
    members = cluster.get("members")
    if members is None:
        return f"cluster {cluster['id']}"
    return f"cluster {cluster['id']} ({len(members)} members)"


def _database_lines(d: Mapping[str, Any]) -> list[str]:
    what = " ".join(
        str(x) for x in (d.get("engine"), d.get("engine_version"), d.get("instance_class")) if x
    )
    return [
        f"RDS {what or '?'} ({d.get('status')}), {_cluster_text(d.get('cluster'))}",
        f"publicly accessible: {_yes(d.get('publicly_accessible'))}, encrypted: "
        f"{_yes(d.get('encrypted'))}, multi-AZ: {_yes(d.get('multi_az'))}",
        f"security groups: {', '.join(d.get('security_groups') or []) or 'none'}",
    ]


def _shard_group_lines(s: Mapping[str, Any]) -> list[str]:
    acu = f"{s.get('min_acu') or 0:g}-{s.get('max_acu') or 0:g} ACU"
    return [
        f"Aurora Limitless shard group {s.get('id')} ({s.get('status')}), {acu}, "
        f"{_cluster_text(s.get('cluster'))}",
        f"publicly accessible: {_yes(s.get('publicly_accessible'))}",
    ]


def _eks_lines(e: Mapping[str, Any]) -> list[str]:
    if e.get("endpoint_public"):
        cidrs = ", ".join(e.get("public_cidrs") or []) or "anywhere"
        endpoint = f"API endpoint PUBLIC (open to {cidrs})"
    elif e.get("endpoint_public") is False:
        endpoint = "API endpoint private only"
    else:
        endpoint = "API endpoint access unknown"
    lines = [f"EKS {e.get('version')} ({e.get('status')}), {endpoint}"]
    if "nodegroup_count" in e:
        names = ", ".join(e.get("nodegroups") or [])
        lines.append(f"{e['nodegroup_count']} node groups" + (f": {names}" if names else ""))
    return lines


def _ecs_lines(c: Mapping[str, Any]) -> list[str]:
    return [
        f"ECS cluster {c.get('status')}: {c.get('active_services')} active services, "
        f"{c.get('running_tasks')} running tasks ({c.get('pending_tasks')} pending), "
        f"{c.get('container_instances')} container instances"
    ]


def _user_lines(impact: Mapping[str, Any]) -> list[str]:
    lines = []
    if impact.get("groups"):
        lines.append("groups: " + ", ".join(impact["groups"]))
    keys = impact.get("access_keys")
    if keys is not None:
        active = sum(1 for k in keys if k.get("status") == "Active")
        lines.append(f"{len(keys)} access keys ({active} active)")
    return lines


def _role_lines(impact: Mapping[str, Any]) -> list[str]:
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


def kind_lines(impact: Mapping[str, Any]) -> list[str]:
    """Summary lines for the kinds this module looks up (plain text; the caller escapes)."""
    lines: list[str] = []
    if impact.get("bucket"):
        lines += _bucket_lines(impact["bucket"])
    if impact.get("function"):
        lines += _function_lines(impact["function"])
    if impact.get("database"):
        lines += _database_lines(impact["database"])
    if impact.get("shard_group"):
        lines += _shard_group_lines(impact["shard_group"])
    if impact.get("eks_cluster"):
        lines += _eks_lines(impact["eks_cluster"])
    if impact.get("ecs_cluster"):
        lines += _ecs_lines(impact["ecs_cluster"])
    if impact.get("role"):
        lines += _role_lines(impact)
    if impact.get("user"):
        lines += _user_lines(impact)
    return [line for line in lines if line]
