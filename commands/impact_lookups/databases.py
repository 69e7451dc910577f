"""RDS lookups: DB instances and Aurora Limitless shard groups, with their cluster; and their
summary lines."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from botocore.exceptions import ClientError

from commands.impact_lookups.reads import (
    MAX_LISTED,
    Clients,
    Reader,
    Unread,
    first_read,
    labelled,
    not_found,
    tag_dict,
)
from containment.errors import error_code
from storage.facts import DatabaseImpact, DbClusterImpact, ShardGroupImpact


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
    found = first_read(
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

    found = first_read(notes, what, by_id_or_cluster, _SHARD_GROUP_MISSING)
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


def _yes(value: Any) -> str:
    return "?" if value is None else ("yes" if value else "no")


def _cluster_text(cluster: Mapping[str, Any] | None) -> str:
    if not cluster:
        return "not in a cluster"
    members = cluster.get("members")
    if members is None:
        return f"cluster {cluster['id']}"
    return f"cluster {cluster['id']} ({len(members)} members)"


def database_lines(d: Mapping[str, Any]) -> list[str]:
    what = " ".join(
        str(x) for x in (d.get("engine"), d.get("engine_version"), d.get("instance_class")) if x
    )
    return [
        f"RDS {what or '?'} ({d.get('status')}), {_cluster_text(d.get('cluster'))}",
        f"publicly accessible: {_yes(d.get('publicly_accessible'))}, encrypted: "
        f"{_yes(d.get('encrypted'))}, multi-AZ: {_yes(d.get('multi_az'))}",
        f"security groups: {', '.join(d.get('security_groups') or []) or 'none'}",
    ]


def shard_group_lines(s: Mapping[str, Any]) -> list[str]:
    acu = f"{s.get('min_acu') or 0:g}-{s.get('max_acu') or 0:g} ACU"
    return [
        f"Aurora Limitless shard group {s.get('id')} ({s.get('status')}), {acu}, "
        f"{_cluster_text(s.get('cluster'))}",
        f"publicly accessible: {_yes(s.get('publicly_accessible'))}",
    ]
