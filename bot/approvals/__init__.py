"""Approval-gated containment in the running bot (the Slack side of commands.approvals)."""

from bot.approvals.service import (
    ENGINE_KEY,
    ENGINES_KEY,
    HOOKS_KEY,
    SNS_KEY,
    SWEEP_KEY,
    ContainmentService,
    Proposal,
    propose,
    service,
)

__all__ = [
    "ENGINES_KEY",
    "ENGINE_KEY",
    "HOOKS_KEY",
    "SNS_KEY",
    "SWEEP_KEY",
    "ContainmentService",
    "Proposal",
    "propose",
    "service",
]
