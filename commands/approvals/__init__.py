"""Approval-gated containment: requests, decisions, execution, recovery, notifications.

bot/ renders and wires these; GuardDuty intake and the drill call the same functions.
"""

from commands.approvals.execution import Outcome, claim, execute
from commands.approvals.plans import Engine, action_context, blast_radius, parse_target
from commands.approvals.recovery import Recovery, recover
from commands.approvals.requests import (
    GUARDDUTY,
    Created,
    Decision,
    decide,
    expire_due,
    get_request,
    request_containment,
)

__all__ = [
    "GUARDDUTY",
    "Created",
    "Decision",
    "Engine",
    "Outcome",
    "Recovery",
    "action_context",
    "blast_radius",
    "claim",
    "decide",
    "execute",
    "expire_due",
    "get_request",
    "parse_target",
    "recover",
    "request_containment",
]
