"""Blast-radius lookups for the resources besides EC2 instances and access keys: S3 buckets,
Lambda functions, RDS DB instances and Limitless shard groups, EKS and ECS clusters, IAM
users and roles. `commands.impact.estimate_impact` picks one by the incident's resource type.

Every read stands alone: an AccessDenied on one (say, a bucket's policy status) becomes a note
and the others still run, because a partial picture early in an incident beats none. A read
whose answer is "not configured" (no bucket policy, no function URL) is a fact, not a note.

Each lookup gets `client(service, region)`: a client in the resource's account, so a bucket in
another region than the finding's is read where it lives.

The reads and their summary lines live by resource family: `buckets`, `functions`, `databases`,
`clusters` and `identity`, on the shared `reads`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from commands.impact_lookups.buckets import bucket_impact, bucket_lines
from commands.impact_lookups.clusters import (
    ecs_cluster_impact,
    ecs_lines,
    eks_cluster_impact,
    eks_lines,
)
from commands.impact_lookups.databases import (
    database_lines,
    db_instance_impact,
    shard_group_impact,
    shard_group_lines,
)
from commands.impact_lookups.functions import function_impact, function_lines
from commands.impact_lookups.identity import role_impact, role_lines, user_impact, user_lines

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


def kind_lines(impact: Mapping[str, Any]) -> list[str]:
    """Summary lines for the kinds this package looks up (plain text; the caller escapes)."""
    lines: list[str] = []
    if impact.get("bucket"):
        lines += bucket_lines(impact["bucket"])
    if impact.get("function"):
        lines += function_lines(impact["function"])
    if impact.get("database"):
        lines += database_lines(impact["database"])
    if impact.get("shard_group"):
        lines += shard_group_lines(impact["shard_group"])
    if impact.get("eks_cluster"):
        lines += eks_lines(impact["eks_cluster"])
    if impact.get("ecs_cluster"):
        lines += ecs_lines(impact["ecs_cluster"])
    if impact.get("role"):
        lines += role_lines(impact)
    if impact.get("user"):
        lines += user_lines(impact)
    return [line for line in lines if line]
