"""What a deployment lets the bot do, one IAM policy each (`incident-bot policy --capability`).

- triage: read-only; findings, cards, impact, CloudTrail, planning reads.
- contain: containment of instances and access keys, its rollback, evidence, contacts, drills.
- forensics: the clean-room stack.
- wipe: deleting an incident's evidence after the investigation.

Each permission is declared by an action class (`Action.capability`) or an investigation
feature (`investigation_permissions.CAPABILITY`), so the split is generated, never kept by hand.
"""

from __future__ import annotations

from typing import Literal

Capability = Literal["triage", "contain", "forensics", "wipe"]
CAPABILITIES: tuple[Capability, ...] = ("triage", "contain", "forensics", "wipe")
