"""Container cluster lookups: EKS (version, API endpoint exposure, node groups) and ECS
(services and tasks); and their summary lines."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
from storage.facts import EcsImpact, EksImpact


def eks_cluster_impact(
    *, client: Clients, name: str, region: str, tag_keys: Mapping[str, str], notes: list[str]
) -> dict[str, Any]:
    what = f"EKS cluster {name}"
    eks = client("eks", region)
    found = first_read(
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
    found = first_read(
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


def eks_lines(e: Mapping[str, Any]) -> list[str]:
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


def ecs_lines(c: Mapping[str, Any]) -> list[str]:
    return [
        f"ECS cluster {c.get('status')}: {c.get('active_services')} active services, "
        f"{c.get('running_tasks')} running tasks ({c.get('pending_tasks')} pending), "
        f"{c.get('container_instances')} container instances"
    ]
