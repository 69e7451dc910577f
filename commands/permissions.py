"""Every IAM permission the bot needs, and the policies made from them.

The containment actions declare theirs on their classes (containment/registry.py); each
command feature that calls AWS itself declares `PERMISSIONS` next to its code, listed here.
`incident-bot policy` and the files under deploy/ come from `policy_document` below; tests
record every AWS call made through containment.clients and check it is declared.

Regenerate deploy/ (the JSON policy files and the policy blocks inside the CloudFormation
templates, containment/policy_cfn.py) with one command: `python -m commands.permissions deploy/`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from commands import abuse, anchors, forensics, impact, trail, wipe, writeback
from commands.approvals import contacts
from commands.drills import sandbox_account
from commands.findings import poll, tags
from containment import policy, policy_cfn
from containment.capabilities import Capability, Permissions

FEATURES: tuple[Permissions, ...] = (
    poll.PERMISSIONS,
    tags.PERMISSIONS,
    contacts.PERMISSIONS,
    sandbox_account.PERMISSIONS,
    impact.PERMISSIONS,
    trail.PERMISSIONS,
    abuse.PERMISSIONS,
    forensics.PERMISSIONS,
    wipe.PERMISSIONS,
    anchors.PERMISSIONS,
    writeback.PERMISSIONS,
)
BY_FEATURE: dict[str, tuple[str, ...]] = {f.feature: f.actions for f in FEATURES}


def feature_permissions(capability: Capability | None = None) -> list[str]:
    """The command features' permissions, all or one capability's."""
    return sorted(
        {p for f in FEATURES if capability is None or f.capability == capability for p in f.actions}
    )


def declared_permissions(capability: policy.CapabilityOrAll = "all") -> list[str]:
    return policy.declared_permissions(capability, FEATURES)


def policy_document(**kwargs: Any) -> dict[str, Any]:
    """`containment.policy.policy_document` over the actions and every command feature."""
    return policy.policy_document(features=FEATURES, **kwargs)


def deploy_files() -> dict[str, dict[str, Any]]:
    return policy.deploy_files(FEATURES)


def render_block(template: str) -> str:
    """deploy/<template>'s generated policy block, over the actions and every feature."""
    return policy_cfn.render_block(template, FEATURES)


def write_deploy(out: Path) -> None:
    """Rewrite every generated file under `out` and the templates' policy blocks."""
    for name, doc in deploy_files().items():
        (out / name).write_text(policy.policy_json(doc))
    policy_cfn.write_blocks(out, FEATURES)  # the same policies inside the templates


if __name__ == "__main__":  # python -m commands.permissions deploy/  (rewrites the files)
    write_deploy(Path(sys.argv[1] if len(sys.argv) > 1 else "deploy"))
