"""Approval-gated containment in the running bot (the Slack side of commands.approvals)."""

from bot.approvals.service import (
    ContainmentService,
    Proposal,
    propose,
    service,
)

__all__ = [
    "ContainmentService",
    "Proposal",
    "propose",
    "service",
]
