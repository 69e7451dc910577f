"""How far each write the bot declares reaches: resource ARNs and condition keys.

Reads (Describe/Get/List/Lookup) are granted on "*". Every other declared permission needs
an entry here (a test fails otherwise): the resources it may touch, narrowed by name prefixes
the bot owns and by the incident tag the bot puts on everything it creates, the way AWS's own
sample policies scope delegated administration. Where AWS offers no resource-level control,
`UNSCOPABLE` says so and why.

Names the bot owns:
- the function and role `incident-bot-revoker` (the only writer of inline policies);
- roles and instance profiles `incident-bot-deny-all` (containment) and
  `incident-bot-forensics-*` (clean-room stacks name them after themselves);
- stacks `incident-bot-forensics-*`; KMS aliases `alias/incident-bot/*`; RDS snapshots
  `incident-bot-*`;
- security groups, snapshots, flow logs, volumes, instances and keys it creates carry the
  tag `incident-bot:incident` from birth (TagSpecifications, stack tags, KMS CreateKey tags).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from containment.capabilities import Capability
from containment.tags import INCIDENT_TAG

BOUNDARY_NAME = "incident-bot-boundary"
DENY_ALL_NAME = "incident-bot-deny-all"
FORENSICS_PREFIX = "incident-bot-forensics-"
KMS_ALIAS_PREFIX = "alias/incident-bot/"
DB_SNAPSHOT_PREFIX = "incident-bot-"
READ_PREFIXES = ("Describe", "Get", "List", "Lookup")

Condition = dict[str, dict[str, Any]]

HAS_TAG: Condition = {"Null": {f"aws:ResourceTag/{INCIDENT_TAG}": "false"}}
TAGGED_AT_CREATION: Condition = {"Null": {f"aws:RequestTag/{INCIDENT_TAG}": "false"}}
# The tag step may only write or remove the bot's own tag keys.
BOT_TAG_KEYS: Condition = {"ForAllValues:StringLike": {"aws:TagKeys": ["incident-bot:*"]}}
PASS_TO_EC2: Condition = {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}
WITH_BOUNDARY: Condition = {
    "ArnLike": {"iam:PermissionsBoundary": f"arn:aws:iam::*:policy/{BOUNDARY_NAME}"}
}
SSM_CORE = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"


def _via(service: str) -> Condition:
    return {"StringLike": {"kms:ViaService": f"{service}.*.amazonaws.com"}}


def ec2(*types: str) -> tuple[str, ...]:
    return tuple(
        f"arn:aws:ec2:*::{t}/*" if t in ("snapshot", "image") else f"arn:aws:ec2:*:*:{t}/*"
        for t in types
    )


def iam(kind: str, *names: str) -> tuple[str, ...]:
    return tuple(f"arn:aws:iam::*:{kind}/{n}" for n in names)


KMS_KEYS = ("arn:aws:kms:*:*:key/*",)
ANY_EC2 = ("arn:aws:ec2:*:*:*/*", "arn:aws:ec2:*::*/*")
CREATE_ACTIONS = (
    "CreateFlowLogs",
    "CreateSecurityGroup",
    "CreateSnapshots",
    "CreateSubnet",
    "CreateVolume",
    "CreateVpc",
    "CreateVpcEndpoint",
    "RunInstances",
)
EVIDENCE_OBJECTS = ("arn:aws:s3:::*/incidents/*",)  # narrowed to the bucket when configured
# Timeline anchors (commands/anchors.py): outside incidents/, so the wipe never reaches them,
# and SSE-S3 rather than the incident's KMS key, so shredding that key leaves them readable.
SES_IDENTITIES = "arn:aws:ses:*:*:identity/*"
REVOKER_NAME = "incident-bot-revoker"  # the function and its execution role
REVOKER_FUNCTION_ARN = f"arn:aws:lambda:*:*:function:{REVOKER_NAME}"
ANCHOR_OBJECTS = ("arn:aws:s3:::*/incident-bot/timeline-anchors/*",)


@dataclass(frozen=True)
class Grant:
    """One allow: `sid` groups grants into statements; `only` limits it to capabilities."""

    sid: str
    resources: tuple[str, ...]
    condition: Condition | None = None
    only: tuple[Capability, ...] = ()


G = Grant

# Bot-owned IAM names per capability: containment's deny-all role, the clean room's roles.
_OWN_ROLES = G("OwnRoles", iam("role", DENY_ALL_NAME), only=("contain",))
_OWN_FORENSIC_ROLES = G("OwnRoles", iam("role", FORENSICS_PREFIX + "*"), only=("forensics",))
_OWN_PROFILES = (
    G("OwnInstanceProfiles", iam("instance-profile", DENY_ALL_NAME), only=("contain",)),
    G("OwnInstanceProfiles", iam("instance-profile", FORENSICS_PREFIX + "*"), only=("forensics",)),
)
_TAGGED_EC2 = G(
    "TaggedEc2",
    ec2("security-group", "instance", "volume", "snapshot", "vpc", "subnet", "vpc-endpoint")
    + ec2("vpc-flow-log"),
    HAS_TAG,
)

SCOPES: dict[str, tuple[Grant, ...]] = {
    # --- containment of an instance: the compromised resources are the customer's own ---
    "ec2:ModifyInstanceAttribute": (G("ContainInstance", ec2("instance")),),
    "ec2:ModifyNetworkInterfaceAttribute": (
        # Rollback puts the ENI's original groups back, so any group of the ENI's VPC.
        G("ContainInstance", ec2("network-interface", "security-group", "instance", "vpc")),
    ),
    "ec2:ReplaceIamInstanceProfileAssociation": (G("ContainInstance", ec2("instance")),),
    "ec2:CreateSnapshots": (
        G("CreateTagged", ec2("instance", "volume", "snapshot"), TAGGED_AT_CREATION),
    ),
    "ec2:CreateTags": (
        G("BotTagKeysOnly", ANY_EC2, BOT_TAG_KEYS),
        # Tags sent with a create call (stack tags add `Name`): only on what is being created.
        G("TagOnCreate", ANY_EC2, {"StringEquals": {"ec2:CreateAction": list(CREATE_ACTIONS)}}),
    ),
    "ec2:DeleteTags": (G("BotTagKeysOnly", ANY_EC2, BOT_TAG_KEYS),),
    "ec2:CreateSecurityGroup": (
        G("CreateTagged", ec2("vpc", "security-group"), TAGGED_AT_CREATION),
    ),
    "ec2:AuthorizeSecurityGroupIngress": (_TAGGED_EC2,),
    "ec2:AuthorizeSecurityGroupEgress": (_TAGGED_EC2,),
    "ec2:RevokeSecurityGroupIngress": (_TAGGED_EC2,),
    "ec2:RevokeSecurityGroupEgress": (_TAGGED_EC2,),
    "ec2:DeleteSecurityGroup": (_TAGGED_EC2,),
    "ec2:CreateFlowLogs": (
        G(
            "CreateTagged",
            ec2("network-interface", "vpc", "subnet", "vpc-flow-log"),
            TAGGED_AT_CREATION,
        ),
    ),
    "autoscaling:EnterStandby": (G("ContainAsg", ("arn:aws:autoscaling:*:*:autoScalingGroup:*",)),),
    "autoscaling:ExitStandby": (G("ContainAsg", ("arn:aws:autoscaling:*:*:autoScalingGroup:*",)),),
    "autoscaling:DetachInstances": (
        G("ContainAsg", ("arn:aws:autoscaling:*:*:autoScalingGroup:*",)),
    ),
    "autoscaling:AttachInstances": (
        G("ContainAsg", ("arn:aws:autoscaling:*:*:autoScalingGroup:*",)),
    ),
    "elasticloadbalancing:DeregisterTargets": (
        G("ContainLb", ("arn:aws:elasticloadbalancing:*:*:targetgroup/*",)),
    ),
    "elasticloadbalancing:RegisterTargets": (
        G("ContainLb", ("arn:aws:elasticloadbalancing:*:*:targetgroup/*",)),
    ),
    "elasticloadbalancing:DeregisterInstancesFromLoadBalancer": (
        G("ContainLb", ("arn:aws:elasticloadbalancing:*:*:loadbalancer/*",)),
    ),
    "elasticloadbalancing:RegisterInstancesWithLoadBalancer": (
        G("ContainLb", ("arn:aws:elasticloadbalancing:*:*:loadbalancer/*",)),
    ),
    # --- IAM: the bot's own roles and profiles, born under the permissions boundary ---
    "iam:CreateRole": (
        G("CreateBoundedRole", iam("role", DENY_ALL_NAME), WITH_BOUNDARY, only=("contain",)),
        G(
            "CreateBoundedRole",
            iam("role", FORENSICS_PREFIX + "*"),
            WITH_BOUNDARY,
            only=("forensics",),
        ),
    ),
    "iam:PassRole": (
        G("PassOwnRoleToEc2", iam("role", DENY_ALL_NAME), PASS_TO_EC2, only=("contain",)),
        G(
            "PassOwnRoleToEc2",
            iam("role", FORENSICS_PREFIX + "*"),
            PASS_TO_EC2,
            only=("forensics",),
        ),
    ),
    "iam:CreateInstanceProfile": _OWN_PROFILES,
    "iam:AddRoleToInstanceProfile": _OWN_PROFILES,
    "iam:RemoveRoleFromInstanceProfile": _OWN_PROFILES,
    "iam:DeleteInstanceProfile": _OWN_PROFILES,
    "iam:DeleteRole": (_OWN_FORENSIC_ROLES,),
    "iam:TagRole": (_OWN_FORENSIC_ROLES,),
    "iam:AttachRolePolicy": (
        G(
            "OwnRolesSsmOnly",
            iam("role", FORENSICS_PREFIX + "*"),
            {"ArnEquals": {"iam:PolicyARN": SSM_CORE}},
        ),
    ),
    "iam:DetachRolePolicy": (
        G(
            "OwnRolesSsmOnly",
            iam("role", FORENSICS_PREFIX + "*"),
            {"ArnEquals": {"iam:PolicyARN": SSM_CORE}},
        ),
    ),
    # Revoking sessions, deny-all on a role: inline deny policies, which only
    # incident-bot-revoker writes (IAM has no condition key on an inline policy's content, so
    # the bot holds no iam:Put*Policy at all; the function's fixed code writes only denies).
    "lambda:InvokeFunction": (G("InvokeRevoker", (REVOKER_FUNCTION_ARN,)),),
    "iam:UpdateAccessKey": (G("RevokeSessions", iam("user", "*")),),
    # A compromised user's console password; never re-created by the bot (NEVER denies it).
    "iam:DeleteLoginProfile": (G("RevokeSessions", iam("user", "*")),),
    # --- a compromised bucket: its policy and public access block (rollback restores both) ---
    "s3:PutBucketPolicy": (G("ContainBucket", ("arn:aws:s3:::*",)),),
    "s3:DeleteBucketPolicy": (G("ContainBucket", ("arn:aws:s3:::*",)),),
    "s3:PutBucketPublicAccessBlock": (G("ContainBucket", ("arn:aws:s3:::*",)),),
    # --- a compromised Lambda function: concurrency and its resource policy ---
    # --- volatile capture before isolation: only the bot's own Run Command document ---
    "ssm:SendCommand": (
        G(
            "VolatileCapture",
            ("arn:aws:ssm:*:*:document/incident-bot-VolatileCapture", *ec2("instance")),
        ),
    ),
    "lambda:PutFunctionConcurrency": (G("ContainFunction", ("arn:aws:lambda:*:*:function:*",)),),
    "lambda:DeleteFunctionConcurrency": (G("ContainFunction", ("arn:aws:lambda:*:*:function:*",)),),
    "lambda:RemovePermission": (G("ContainFunction", ("arn:aws:lambda:*:*:function:*",)),),
    # Rollback re-adds the captured statements only (the step records them).
    "lambda:AddPermission": (G("ContainFunction", ("arn:aws:lambda:*:*:function:*",)),),
    # --- a compromised RDS DB instance: a tagged snapshot, then its groups and accessibility ---
    "rds:CreateDBSnapshot": (
        G(
            "CreateTaggedDbSnapshot",
            ("arn:aws:rds:*:*:db:*", f"arn:aws:rds:*:*:snapshot:{DB_SNAPSHOT_PREFIX}*"),
            TAGGED_AT_CREATION,
        ),
    ),
    "rds:AddTagsToResource": (
        G("BotTagKeysOnly", (f"arn:aws:rds:*:*:snapshot:{DB_SNAPSHOT_PREFIX}*",), BOT_TAG_KEYS),
    ),
    "rds:ModifyDBInstance": (G("ContainDb", ("arn:aws:rds:*:*:db:*",)),),
    # --- evidence: objects under the incidents/ prefix, SSE-KMS only; the incident's key ---
    "s3:PutObject": (
        G(
            "EvidenceObjectsKmsOnly",
            EVIDENCE_OBJECTS,
            {"StringEquals": {"s3:x-amz-server-side-encryption": "aws:kms"}},
        ),
        G(
            "TimelineAnchorsSseS3",
            ANCHOR_OBJECTS,
            {"StringEquals": {"s3:x-amz-server-side-encryption": "AES256"}},
            only=("contain",),
        ),
    ),
    "s3:PutObjectRetention": (
        G("TimelineAnchorRetention", ANCHOR_OBJECTS, only=("contain",)),
        # Evidence objects and their manifest, written under Object Lock (containment/custody).
        G("EvidenceRetention", EVIDENCE_OBJECTS),
    ),
    "s3:PutObjectTagging": (G("EvidenceObjects", EVIDENCE_OBJECTS),),
    "s3:DeleteObject": (G("EvidenceObjects", EVIDENCE_OBJECTS),),
    "s3:DeleteObjectVersion": (G("EvidenceObjects", EVIDENCE_OBJECTS),),
    "kms:CreateKey": (G("CreateTaggedKey", ("*",), TAGGED_AT_CREATION),),
    "kms:TagResource": (G("CreateTaggedKey", ("*",), TAGGED_AT_CREATION),),
    # The alias names the bot's own (aliases carry no tags, so no tag condition here).
    "kms:CreateAlias": (G("OwnAlias", ("arn:aws:kms:*:*:" + KMS_ALIAS_PREFIX + "*", *KMS_KEYS)),),
    "kms:ScheduleKeyDeletion": (G("OwnKeys", KMS_KEYS, HAS_TAG),),
    "kms:GenerateDataKey": (G("KmsViaS3", KMS_KEYS, _via("s3")),),
    # Volumes restored from snapshots under a customer-managed key: only through EBS.
    "kms:CreateGrant": (
        G(
            "KmsGrantForEbs",
            KMS_KEYS,
            {**_via("ec2"), "Bool": {"kms:GrantIsForAWSResource": "true"}},
        ),
        # A source snapshot's key, for the forensic role's copy: these operations only.
        G(
            "KmsGrantForForensicCopy",
            KMS_KEYS,
            {
                "ForAllValues:StringEquals": {
                    "kms:GrantOperations": [
                        "Decrypt",
                        "DescribeKey",
                        "CreateGrant",
                        "ReEncryptFrom",
                    ]
                }
            },
            only=("forensics",),
        ),
    ),
    # The wipe revokes the forensic-copy grant above. RevokeGrant, not RetireGrant: IAM
    # authorises RevokeGrant (on the key); RetireGrant is authorised by the grant itself
    # (its retiring or grantee principal), which /forensics never names the bot as. KMS has
    # no condition key for a grant's id or name: the wipe checks the name before revoking.
    "kms:RevokeGrant": (G("KmsRevokeForensicGrant", KMS_KEYS, only=("wipe",)),),
    "kms:Decrypt": (G("KmsViaEc2", KMS_KEYS, _via("ec2")),),
    "kms:ReEncryptFrom": (G("KmsViaEc2", KMS_KEYS, _via("ec2")),),
    "kms:ReEncryptTo": (G("KmsViaEc2", KMS_KEYS, _via("ec2")),),
    "kms:GenerateDataKeyWithoutPlaintext": (G("KmsViaEc2", KMS_KEYS, _via("ec2")),),
    # --- contacts and drills ---
    "sns:Publish": (G("ContactsTopic", ("arn:aws:sns:*:*:*",)),),  # the topic when configured
    # SES authorises sending on the From identity; narrowed to the sender when configured.
    "ses:SendEmail": (G("ContactsEmail", (SES_IDENTITIES,)),),
    # --- forensics: the clean-room stack and what it creates, all tagged with the incident ---
    "cloudformation:CreateStack": (
        G(
            "CleanRoomStack",
            (f"arn:aws:cloudformation:*:*:stack/{FORENSICS_PREFIX}*/*",),
            TAGGED_AT_CREATION,
        ),
    ),
    "cloudformation:DeleteStack": (
        G("OwnStack", (f"arn:aws:cloudformation:*:*:stack/{FORENSICS_PREFIX}*/*",)),
    ),
    "ec2:CreateVpc": (G("CreateTagged", ec2("vpc"), TAGGED_AT_CREATION),),
    "ec2:CreateSubnet": (G("CreateTagged", ec2("vpc", "subnet"), TAGGED_AT_CREATION),),
    "ec2:CreateVpcEndpoint": (
        G(
            "CreateTagged",
            ec2("vpc", "subnet", "security-group", "route-table", "vpc-endpoint"),
            TAGGED_AT_CREATION,
        ),
    ),
    # Request tags cover the whole call: the stack's tags go with it.
    "ec2:RunInstances": (
        G(
            "CreateTagged",
            ec2("instance", "subnet", "security-group", "network-interface", "volume", "key-pair")
            + ec2("image", "snapshot"),
            TAGGED_AT_CREATION,
        ),
    ),
    "ec2:CreateVolume": (G("CreateTagged", ec2("volume"), TAGGED_AT_CREATION),),
    "ec2:AttachVolume": (_TAGGED_EC2,),
    "ec2:DetachVolume": (_TAGGED_EC2,),
    "ec2:ModifyVpcAttribute": (_TAGGED_EC2,),
    "ec2:DeleteVpc": (_TAGGED_EC2,),
    "ec2:DeleteSubnet": (_TAGGED_EC2,),
    "ec2:DeleteVpcEndpoints": (_TAGGED_EC2,),
    "ec2:TerminateInstances": (_TAGGED_EC2,),
    "ec2:DeleteVolume": (_TAGGED_EC2,),
    # Sharing the incident's snapshots with the forensic account, and copying them there.
    "ec2:ModifySnapshotAttribute": (G("ShareTaggedSnapshot", ec2("snapshot"), HAS_TAG),),
    "ec2:CopySnapshot": (G("CreateTagged", ec2("snapshot"), TAGGED_AT_CREATION),),
    # --- write-back on close (commands/writeback.py) ---
    "guardduty:ArchiveFindings": (G("ArchiveFindings", ("arn:aws:guardduty:*:*:detector/*",)),),
    "securityhub:BatchUpdateFindings": (
        G("ResolveFindings", ("arn:aws:securityhub:*:*:hub/default",)),
    ),
    # --- wipe ---
    "ec2:DeleteSnapshot": (_TAGGED_EC2,),
    "ec2:DeleteFlowLogs": (_TAGGED_EC2,),
}

# incident-bot-revoker's execution role: inline policies on any user or role but the bot's own
# (explicit Deny, containment/policy.revoker_document), which its fixed code fills only with
# the deny documents (containment/revoker/handler.py); and its own log group.
REVOKER_LOGS = f"arn:aws:logs:*:*:log-group:/aws/lambda/{REVOKER_NAME}:*"
REVOKER_SCOPES: dict[str, tuple[Grant, ...]] = {
    "iam:PutRolePolicy": (G("WriteDenyPoliciesOnRoles", iam("role", "*")),),
    "iam:DeleteRolePolicy": (G("WriteDenyPoliciesOnRoles", iam("role", "*")),),
    "iam:PutUserPolicy": (G("WriteDenyPoliciesOnUsers", iam("user", "*")),),
    "iam:DeleteUserPolicy": (G("WriteDenyPoliciesOnUsers", iam("user", "*")),),
    "logs:CreateLogStream": (G("OwnLogs", (REVOKER_LOGS,)),),
    "logs:PutLogEvents": (G("OwnLogs", (REVOKER_LOGS,)),),
}

# Writes AWS authorises on "*" only: nothing narrower exists for them (Service Authorization
# Reference). Each is listed with what keeps it harmless.
UNSCOPABLE: dict[str, str] = {
    "logs:CreateLogDelivery": "flow-log delivery to S3; no resource type; creates only deliveries",
    "logs:DeleteLogDelivery": "flow-log delivery to S3; no resource type",
    "guardduty:CreateSampleFindings": "no resource type; adds sample findings (drills) only",
    "support:CreateCase": "AWS Support has no resource-level permissions; opens a support case",
}


def is_read(action: str) -> bool:
    return action.split(":", 1)[1].startswith(READ_PREFIXES)
