"""What a deployment lets the bot do, one IAM policy each (`incident-bot policy --capability`).

- triage: read-only; findings, cards, impact, CloudTrail, planning reads.
- contain: containment of instances and access keys, its rollback, evidence, contacts, drills.
- forensics: the clean-room stack.
- wipe: deleting an incident's evidence after the investigation.

Each permission is declared by an action class (`Action.capability`) or by the `PERMISSIONS`
of the command feature that makes the call (commands/permissions.py lists them), so the split
is generated, never kept by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Capability = Literal["triage", "contain", "forensics", "wipe"]
CAPABILITIES: tuple[Capability, ...] = ("triage", "contain", "forensics", "wipe")


@dataclass(frozen=True)
class Permissions:
    """The IAM actions one command feature calls outside the action registry, and the
    capability whose policy grants them."""

    feature: str
    capability: Capability
    actions: tuple[str, ...]
