"""Revoking AWS credentials that may already be stolen.

Swapping or removing a role or key does not invalidate temporary credentials already issued.
A deny-everything policy conditioned on `aws:TokenIssueTime` earlier than now does.
"""

from __future__ import annotations

import json
from datetime import datetime

from containment.context import ActionContext

DENY_ALL = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "IncidentBotDenyAll", "Effect": "Deny", "Action": "*", "Resource": "*"}
        ],
    }
)

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
    return revoke_document(issued_before.strftime("%Y-%m-%dT%H:%M:%SZ"))


def revoke_document(stamp: str) -> str:
    """The deny of sessions issued before `stamp` (`<now>` in a plan: the time it runs)."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "IncidentBotRevokeOlderSessions",
                    "Effect": "Deny",
                    "Action": "*",
                    "Resource": "*",
                    "Condition": {"DateLessThan": {"aws:TokenIssueTime": stamp}},
                }
            ],
        }
    )
