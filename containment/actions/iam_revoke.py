"""Revoking AWS credentials that may already be stolen.

Swapping or removing a role or key does not invalidate temporary credentials already issued.
A deny-everything policy conditioned on `aws:TokenIssueTime` earlier than now does. The bot
writes it through incident-bot-revoker (containment/revoker), never with iam:Put*Policy.
"""

from __future__ import annotations

import json
from datetime import datetime

from containment.context import ActionContext
from containment.revoker.handler import STAMP, document

# The documents incident-bot-revoker writes (its code is the one source of them).
DENY_ALL = document("incident-bot-deny-all")
# The deny-all role's own inline policy (the revoker writes only incident-bot- names).
DENY_ALL_ROLE_POLICY = "incident-bot-deny-all"

EC2_TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "ec2.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
)


def revoke_policy_name(ctx: ActionContext) -> str:
    # One policy per incident: re-running the same incident finds it and changes nothing.
    return f"incident-bot-revoke-sessions-{ctx.incident_key}"[:128]


def revoke_older_sessions(issued_before: datetime) -> str:
    stamp = issued_before.strftime(STAMP)
    return document("incident-bot-revoke-sessions", stamp)
