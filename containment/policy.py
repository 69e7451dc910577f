"""The least-privilege IAM policy: exactly the permissions the registered actions declare.

`incident-bot policy` prints `policy_document()`. A test records every AWS call the actions
make and checks each is covered by the declaring action, so this cannot drift silently.
"""

from __future__ import annotations

import json
from typing import Any

from containment.registry import all_actions

# Permissions that can be scoped tighter than "*" without knowing the deployment.
_SCOPED: dict[str, tuple[str, dict[str, Any] | None]] = {
    # Passing a role to EC2 is only ever the deny-all profile's role.
    "iam:PassRole": (
        "arn:aws:iam::*:role/incident-bot-*",
        {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
    ),
    # SSE-KMS uploads: S3 asks KMS for a data key on our behalf, only via S3.
    "kms:GenerateDataKey": ("*", {"StringLike": {"kms:ViaService": "s3.*.amazonaws.com"}}),
}

CROSS_ACCOUNT_ACTION = "sts:AssumeRole"


def declared_permissions() -> list[str]:
    """Every IAM action any registered action declares, deduplicated and sorted, plus those of
    the investigation commands (containment/investigation_permissions.py)."""
    from containment.investigation_permissions import investigation_permissions

    return sorted(
        {p for a in all_actions() for p in a.permissions} | set(investigation_permissions())
    )


def _sid(action: str) -> str:
    return "".join(part.capitalize() for part in action.replace(":", "-").split("-"))


def policy_document(
    *, cross_account_role_name: str | None = "incident-bot-responder"
) -> dict[str, Any]:
    """IAM policy JSON for every action the bot can take."""
    perms = declared_permissions()
    general = [p for p in perms if p not in _SCOPED]
    statements: list[dict[str, Any]] = [
        {"Sid": "IncidentBotContainment", "Effect": "Allow", "Action": general, "Resource": "*"}
    ]
    for perm in sorted(p for p in perms if p in _SCOPED):
        resource, condition = _SCOPED[perm]
        stmt: dict[str, Any] = {
            "Sid": f"IncidentBot{_sid(perm)}",
            "Effect": "Allow",
            "Action": [perm],
            "Resource": resource,
        }
        if condition:
            stmt["Condition"] = condition
        statements.append(stmt)
    if cross_account_role_name:
        # Member accounts: only the named responder role, and only with an external id.
        statements.append(
            {
                "Sid": "IncidentBotCrossAccount",
                "Effect": "Allow",
                "Action": [CROSS_ACCOUNT_ACTION],
                "Resource": f"arn:aws:iam::*:role/{cross_account_role_name}",
                "Condition": {"Null": {"sts:ExternalId": "false"}},
            }
        )
    return {"Version": "2012-10-17", "Statement": statements}


def policy_json() -> str:
    return json.dumps(policy_document(), indent=2, sort_keys=False) + "\n"


if __name__ == "__main__":  # python -m containment.policy > deploy/iam-policy.json
    print(policy_json(), end="")
