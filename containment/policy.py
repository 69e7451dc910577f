"""The bot's IAM policies, one per capability: exactly the permissions the code declares.

`incident-bot policy [--capability C]` prints `policy_document(capability=C)`; `all` (the
default) is the union. Reads go on "*"; every write carries the resources and conditions of
containment/policy_scopes.py; explicit Deny statements keep the bot off its own role and
off every managed policy and permissions boundary. Roles the bot creates must carry the
boundary `boundary_document()` describes. Inline policies are written only by the function
incident-bot-revoker, whose execution role `revoker_document()` describes.

The command features' own declarations (`Permissions`, listed in commands/permissions.py,
which is what the CLI and deploy/ use) come in as `features`: this layer cannot import them.
Tests record every AWS call the actions and commands make and check each is declared in the
right capability, and run parliament over every capability's document.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from typing import Any, Literal

from containment.capabilities import CAPABILITIES, Capability, Permissions
from containment.policy_scopes import (
    BOUNDARY_NAME,
    REVOKER_FUNCTION_ARN,
    REVOKER_NAME,
    REVOKER_SCOPES,
    SCOPES,
    SES_IDENTITIES,
    UNSCOPABLE,
    Grant,
    is_read,
)
from containment.registry import all_actions
from containment.revoker import EXECUTION_PERMISSIONS

CROSS_ACCOUNT_ACTION = "sts:AssumeRole"
DEFAULT_RESPONDER_ROLE = "incident-bot-responder"
BOT_ROLE_NAME = "incident-bot"  # the role the bot runs as (the deployment's convention)
CapabilityOrAll = Capability | Literal["all"]

# Never needed by any capability: denied outright, so no grant can ever add them.
NEVER = (
    "iam:CreateAccessKey",
    "iam:CreateLoginProfile",
    "iam:UpdateLoginProfile",
    "iam:CreatePolicy",
    "iam:CreatePolicyVersion",
    "iam:SetDefaultPolicyVersion",
    "iam:DeletePolicy",
    "iam:DeletePolicyVersion",
    "iam:PutRolePermissionsBoundary",
    "iam:DeleteRolePermissionsBoundary",
    "iam:PutUserPermissionsBoundary",
    "iam:DeleteUserPermissionsBoundary",
    "iam:UpdateAssumeRolePolicy",
    "iam:AddUserToGroup",
    "iam:AttachUserPolicy",
    "iam:AttachGroupPolicy",
    "iam:PutGroupPolicy",
)
# What would change a role's or user's permissions: never on the bot's own.
SELF_CHANGES = (
    "iam:AttachRolePolicy",
    "iam:DetachRolePolicy",
    "iam:PutRolePolicy",
    "iam:DeleteRolePolicy",
    "iam:UpdateRole",
    "iam:DeleteRole",
    "iam:TagRole",
    "iam:UntagRole",
    "iam:PutUserPolicy",
    "iam:DeleteUserPolicy",
    "iam:DetachUserPolicy",
    "iam:UpdateAccessKey",
    "iam:TagUser",
    "iam:UntagUser",
)

# Inline policies: only incident-bot-revoker writes them (its fixed code writes only denies);
# the bot is denied them outright, so no policy attached to it later can grant them back.
INLINE_POLICY_WRITES = (
    "iam:PutRolePolicy",
    "iam:DeleteRolePolicy",
    "iam:PutUserPolicy",
    "iam:DeleteUserPolicy",
)
# Whatever would change the revoker's code, configuration, versions or who may invoke it.
REVOKER_CHANGES = tuple(
    f"lambda:{a}"
    for a in (
        "UpdateFunctionCode",
        "UpdateFunctionConfiguration",
        "DeleteFunction",
        "PublishVersion",
        "CreateAlias",
        "UpdateAlias",
        "DeleteAlias",
        "AddPermission",
        "RemovePermission",
        "PutFunctionConcurrency",
        "DeleteFunctionConcurrency",
        "PutProvisionedConcurrencyConfig",
        "PutFunctionEventInvokeConfig",
        "UpdateFunctionEventInvokeConfig",
        "DeleteFunctionEventInvokeConfig",
        "CreateFunctionUrlConfig",
        "UpdateFunctionUrlConfig",
        "DeleteFunctionUrlConfig",
        "PutFunctionCodeSigningConfig",
        "DeleteFunctionCodeSigningConfig",
        "PutRuntimeManagementConfig",
        "TagResource",
        "UntagResource",
    )
)

# SSM Session Manager's agent, nothing else: what the clean room's forensic instance needs
# (AmazonSSMManagedInstanceCore's actions); the deny-all role needs nothing at all.
BOUNDARY_ACTIONS = (
    "ec2messages:AcknowledgeMessage",
    "ec2messages:DeleteMessage",
    "ec2messages:FailMessage",
    "ec2messages:GetEndpoint",
    "ec2messages:GetMessages",
    "ec2messages:SendReply",
    "ssm:DescribeAssociation",
    "ssm:DescribeDocument",
    "ssm:GetDeployablePatchSnapshotForInstance",
    "ssm:GetDocument",
    "ssm:GetManifest",
    "ssm:GetParameter",
    "ssm:GetParameters",
    "ssm:ListAssociations",
    "ssm:ListInstanceAssociations",
    "ssm:PutComplianceItems",
    "ssm:PutConfigurePackageResult",
    "ssm:PutInventory",
    "ssm:UpdateAssociationStatus",
    "ssm:UpdateInstanceAssociationStatus",
    "ssm:UpdateInstanceInformation",
    "ssmmessages:CreateControlChannel",
    "ssmmessages:CreateDataChannel",
    "ssmmessages:OpenControlChannel",
    "ssmmessages:OpenDataChannel",
)


def declared_by_capability(features: Iterable[Permissions] = ()) -> dict[Capability, set[str]]:
    """Every declared IAM action under the capability its declarer names."""
    out: dict[Capability, set[str]] = {c: set() for c in CAPABILITIES}
    for feature in features:
        out[feature.capability].update(feature.actions)
    for action in all_actions():
        out[action.capability].update(action.permissions)
    return out


def declared_permissions(
    capability: CapabilityOrAll = "all", features: Iterable[Permissions] = ()
) -> list[str]:
    """The declared IAM actions of one capability (or all), deduplicated and sorted."""
    by = declared_by_capability(features)
    wanted = CAPABILITIES if capability == "all" else (capability,)
    return sorted({p for c in wanted for p in by[c]})


def _grants(action: str, capability: Capability) -> tuple[Grant, ...]:
    if action in UNSCOPABLE:
        return (Grant("Unscopable", ("*",)),)
    grants = SCOPES.get(action)
    if grants is None:
        raise LookupError(f"{action} is a write with no scope in containment/policy_scopes.py")
    return tuple(g for g in grants if not g.only or capability in g.only)


def ses_identities(sender: str) -> tuple[str, ...]:
    """The SES identities a sender may be verified as: the address itself or its domain."""
    address = sender.rsplit("<", 1)[-1].rstrip(">").strip()
    domain = address.rsplit("@", 1)[-1]
    return (f"arn:aws:ses:*:*:identity/{address}", f"arn:aws:ses:*:*:identity/{domain}")


def _narrow(
    resources: tuple[str, ...],
    *,
    evidence_bucket: str | None,
    topic: str | None,
    ses_sender: str | None = None,
) -> tuple[str, ...]:
    out: list[str] = []
    for r in resources:
        if evidence_bucket and r.startswith("arn:aws:s3:::*/"):
            out.append(f"arn:aws:s3:::{evidence_bucket}/" + r.split("/", 1)[1])
        elif topic and r == "arn:aws:sns:*:*:*":
            out.append(topic)
        elif ses_sender and r == SES_IDENTITIES:
            out.extend(ses_identities(ses_sender))
        else:
            out.append(r)
    return tuple(out)


def _one(values: list[str]) -> str | list[str]:
    return values[0] if len(values) == 1 else values


def policy_document(
    *,
    capability: CapabilityOrAll = "all",
    cross_account_role_name: str | None = DEFAULT_RESPONDER_ROLE,
    evidence_bucket: str | None = None,
    contacts_topic_arn: str | None = None,
    contacts_ses_sender: str | None = None,
    features: Iterable[Permissions] = (),
) -> dict[str, Any]:
    """The IAM policy for one capability, or for all of them (actions and `features`)."""
    wanted = CAPABILITIES if capability == "all" else (capability,)
    by = declared_by_capability(features)
    reads = sorted({p for c in wanted for p in by[c] if is_read(p)})
    statements: list[dict[str, Any]] = []
    if reads:
        statements.append({"Sid": "Read", "Effect": "Allow", "Action": reads, "Resource": "*"})

    # Writes: one statement per (sid, resources, condition), actions merged.
    merged: dict[tuple[str, tuple[str, ...], str], set[str]] = defaultdict(set)
    for cap in wanted:
        for perm in sorted(p for p in by[cap] if not is_read(p)):
            for g in _grants(perm, cap):
                res = _narrow(
                    g.resources,
                    evidence_bucket=evidence_bucket,
                    topic=contacts_topic_arn,
                    ses_sender=contacts_ses_sender,
                )
                merged[(g.sid, res, json.dumps(g.condition, sort_keys=True))].add(perm)
    for (sid, resources, condition), actions in sorted(merged.items()):
        stmt: dict[str, Any] = {
            "Sid": sid,
            "Effect": "Allow",
            "Action": sorted(actions),
            "Resource": _one(list(resources)),
        }
        if condition != "null":
            stmt["Condition"] = json.loads(condition)
        statements.append(stmt)
    # Same Sid, different resources (a bucket narrowed, or two grants): number them apart.
    seen: dict[str, int] = defaultdict(int)
    for stmt in statements:
        seen[stmt["Sid"]] += 1
        if seen[stmt["Sid"]] > 1:
            stmt["Sid"] += str(seen[stmt["Sid"]])

    if cross_account_role_name:
        # Member accounts: only the named responder role, and only with an external id.
        statements.append(
            {
                "Sid": "CrossAccount",
                "Effect": "Allow",
                "Action": [CROSS_ACCOUNT_ACTION],
                "Resource": f"arn:aws:iam::*:role/{cross_account_role_name}",
                "Condition": {"Null": {"sts:ExternalId": "false"}},
            }
        )
    statements += deny_statements(cross_account_role_name)
    statements.append(
        {
            "Sid": "DenyInlinePolicyWrites",
            "Effect": "Deny",
            "Action": list(INLINE_POLICY_WRITES),
            "Resource": "*",
        }
    )
    return {"Version": "2012-10-17", "Statement": statements}


def own_roles(cross_account_role_name: str | None) -> list[str]:
    """The bot's own roles, which neither the bot nor the revoker may change."""
    names = [BOT_ROLE_NAME, *([cross_account_role_name] if cross_account_role_name else [])]
    return [*names, REVOKER_NAME]


def deny_statements(cross_account_role_name: str | None) -> list[dict[str, Any]]:
    own = [f"arn:aws:iam::*:role/{n}" for n in own_roles(cross_account_role_name)]
    return [
        {
            "Sid": "DenyChangingOwnIdentity",
            "Effect": "Deny",
            "Action": list(SELF_CHANGES),
            "Resource": own,
        },
        {
            "Sid": "DenyPolicyBoundaryAndCredentialChanges",
            "Effect": "Deny",
            "Action": list(NEVER),
            "Resource": "*",
        },
        {
            "Sid": "DenyChangingTheRevoker",
            "Effect": "Deny",
            "Action": list(REVOKER_CHANGES),
            "Resource": [REVOKER_FUNCTION_ARN, f"{REVOKER_FUNCTION_ARN}:*"],
        },
    ]


def revoker_document(
    cross_account_role_name: str | None = DEFAULT_RESPONDER_ROLE,
) -> dict[str, Any]:
    """incident-bot-revoker's execution role: what its code declares it calls
    (containment/revoker.EXECUTION_PERMISSIONS), scoped by policy_scopes.REVOKER_SCOPES, and
    the same Deny statements as the bot's: never on the bot's own roles or its own."""
    merged: dict[tuple[str, tuple[str, ...]], set[str]] = defaultdict(set)
    for perm in EXECUTION_PERMISSIONS:
        for g in REVOKER_SCOPES[perm]:
            merged[(g.sid, g.resources)].add(perm)
    statements: list[dict[str, Any]] = [
        {"Sid": sid, "Effect": "Allow", "Action": sorted(actions), "Resource": _one(list(res))}
        for (sid, res), actions in sorted(merged.items())
    ]
    return {
        "Version": "2012-10-17",
        "Statement": statements + deny_statements(cross_account_role_name),
    }


def boundary_document() -> dict[str, Any]:
    """The permissions boundary every role the bot creates must carry (`incident-bot-boundary`):
    at most the SSM agent's calls, whatever policy the role is later given."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "SsmAgentOnly",
                "Effect": "Allow",
                "Action": list(BOUNDARY_ACTIONS),
                "Resource": "*",
            }
        ],
    }


def deploy_files(features: Iterable[Permissions] = ()) -> dict[str, dict[str, Any]]:
    """File name under deploy/ -> document, as committed."""
    features = tuple(features)
    files = {"iam-policy.json": policy_document(features=features)}
    for cap in CAPABILITIES:
        files[f"iam-policy-{cap}.json"] = policy_document(capability=cap, features=features)
    files["iam-permissions-boundary.json"] = boundary_document()
    files["iam-policy-revoker.json"] = revoker_document()
    return files


def policy_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2) + "\n"


__all__ = ["BOUNDARY_NAME", "CAPABILITIES", "boundary_document", "policy_document"]
