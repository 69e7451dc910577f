"""IAM permissions of the commands that call AWS directly rather than through the action
registry: GuardDuty intake, contacts, drills, and the investigation and aftermath commands
(impact, CloudTrail, clean room, abuse reports, wipe).

`containment.policy` adds them to the generated policy, and
tests/commands/test_investigation_permissions.py records every call those commands make and
checks that it is declared here, so this list cannot drift from the code.
"""

from __future__ import annotations

from containment.capabilities import Capability

IMPACT = (
    "ec2:DescribeInstances",
    "ec2:DescribeNetworkInterfaces",
    "iam:GetAccessKeyLastUsed",
    "iam:ListUserTags",
    "iam:ListAttachedUserPolicies",
    "iam:ListGroupsForUser",
    "organizations:DescribeAccount",
    "organizations:ListParents",
    "organizations:DescribeOrganizationalUnit",
)

TRAIL = ("cloudtrail:LookupEvents",)

ABUSE = ("support:CreateCase", "support:DescribeCases", "support:DescribeCommunications")

# CloudFormation creates the clean room with the caller's permissions (no service role), so
# the caller needs what the template's resources need, create and delete.
CLEAN_ROOM_STACK = (
    "ec2:CreateVpc",
    "ec2:DeleteVpc",
    "ec2:ModifyVpcAttribute",
    "ec2:DescribeVpcs",
    "ec2:CreateSubnet",
    "ec2:DeleteSubnet",
    "ec2:DescribeSubnets",
    "ec2:CreateSecurityGroup",
    "ec2:DeleteSecurityGroup",
    "ec2:DescribeSecurityGroups",
    "ec2:AuthorizeSecurityGroupIngress",
    "ec2:AuthorizeSecurityGroupEgress",
    "ec2:RevokeSecurityGroupEgress",
    "ec2:CreateVpcEndpoint",
    "ec2:DeleteVpcEndpoints",
    "ec2:DescribeVpcEndpoints",
    "ec2:RunInstances",
    "ec2:TerminateInstances",
    "ec2:CreateVolume",
    "ec2:DeleteVolume",
    "ec2:AttachVolume",
    "ec2:DetachVolume",
    "ec2:DescribeVolumes",
    "ec2:CreateTags",
    "iam:CreateRole",
    "iam:DeleteRole",
    "iam:GetRole",
    "iam:TagRole",
    "iam:AttachRolePolicy",
    "iam:DetachRolePolicy",
    "iam:CreateInstanceProfile",
    "iam:DeleteInstanceProfile",
    "iam:GetInstanceProfile",
    "iam:AddRoleToInstanceProfile",
    "iam:RemoveRoleFromInstanceProfile",
    "iam:PassRole",
    # Volumes restored from snapshots encrypted with a customer-managed key.
    "kms:CreateGrant",
    "kms:Decrypt",
    "kms:DescribeKey",
    "kms:GenerateDataKeyWithoutPlaintext",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
)

FORENSICS = (
    "ec2:DescribeSnapshots",
    "ec2:DescribeInstances",
    "ec2:DescribeAvailabilityZones",
    "cloudformation:CreateStack",
    "cloudformation:DeleteStack",
    "cloudformation:DescribeStacks",
    "cloudformation:DescribeStackEvents",
    *CLEAN_ROOM_STACK,
)

WIPE = (
    "cloudformation:DescribeStacks",
    "cloudformation:DescribeStackEvents",
    "cloudformation:DeleteStack",
    "ec2:DescribeVolumes",
    "ec2:DeleteVolume",
    "ec2:DescribeSnapshots",
    "ec2:DeleteSnapshot",
    "ec2:DescribeFlowLogs",
    "ec2:DeleteFlowLogs",
    "logs:DeleteLogDelivery",
    "s3:ListBucketVersions",
    "s3:GetObjectTagging",
    "s3:GetObjectVersionTagging",
    "s3:DeleteObject",
    "s3:DeleteObjectVersion",
    "kms:ListKeys",
    "kms:ListAliases",
    "kms:ListResourceTags",
    "kms:DescribeKey",
    "kms:ScheduleKeyDeletion",
)

# GuardDuty intake: polling GetFindings, and the affected resource's tags for its card.
INTAKE = (
    "guardduty:ListDetectors",
    "guardduty:ListFindings",
    "guardduty:GetFindings",
    "ec2:DescribeInstances",
    "ec2:DescribeTags",
    "iam:ListUserTags",
)

# Contacts told when a serious incident opens, on approval and on outcome: the SNS topic,
# and e-mail through SES when a sender is configured.
CONTACTS = ("sns:Publish", "ses:SendEmail")

# /incident drill in the sandbox account.
DRILLS = ("guardduty:ListDetectors", "guardduty:CreateSampleFindings", "ec2:DescribeInstances")

# Timeline anchors written to the evidence bucket under Object Lock (commands/anchors.py).
ANCHORS = ("s3:PutObject", "s3:PutObjectRetention")

BY_FEATURE: dict[str, tuple[str, ...]] = {
    "intake": INTAKE,
    "contacts": CONTACTS,
    "drills": DRILLS,
    "impact": IMPACT,
    "trail": TRAIL,
    "abuse": ABUSE,
    "forensics": FORENSICS,
    "wipe": WIPE,
    "anchors": ANCHORS,
}


# The capability whose policy grants each feature's permissions. Triage is read-only.
CAPABILITY: dict[str, Capability] = {
    "intake": "triage",
    "impact": "triage",
    "trail": "triage",
    "contacts": "contain",  # told on opening, containment approval and outcome
    "drills": "contain",  # sample findings in the sandbox account
    "abuse": "contain",  # answering AWS abuse reports opens support cases
    "forensics": "forensics",
    "wipe": "wipe",
    "anchors": "contain",  # triage is read-only: a triage-only bot anchors in Slack alone
}


def investigation_permissions(capability: Capability | None = None) -> list[str]:
    """The features' permissions, all or one capability's."""
    return sorted(
        {
            p
            for feature, perms in BY_FEATURE.items()
            if capability is None or CAPABILITY[feature] == capability
            for p in perms
        }
    )
