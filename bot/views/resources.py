"""How a card names each kind of resource GuardDuty reports (its `resourceType` values)."""

from __future__ import annotations

RESOURCE_LABELS = {
    "Instance": "EC2 instance",
    "AccessKey": "IAM access key",
    "IAMUser": "IAM user",  # containment targets beyond GuardDuty's own resource types
    "IAMRole": "IAM role",
    "S3Bucket": "S3 bucket",
    "S3Object": "S3 object",
    "EKSCluster": "EKS cluster",
    "ECSCluster": "ECS cluster",
    "Container": "Container",
    "RDSDBInstance": "RDS DB instance",
    "RDSLimitlessDB": "RDS Limitless DB shard group",
    "Lambda": "Lambda function",
}


def resource_label(kind: str | None) -> str:
    """'EC2 instance' for 'Instance'; an unknown type reads as itself, none as 'Resource'."""
    if not kind:
        return "Resource"
    return RESOURCE_LABELS.get(kind, kind)
