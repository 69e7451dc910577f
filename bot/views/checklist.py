"""The root-credentials checklist, posted in the incident's thread in place of a plan."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bot.views import blocks as bk
from commands.approvals.root_checklist import CheckItem


def root_checklist_message(key: str, items: Sequence[CheckItem]) -> dict[str, Any]:
    blocks: list[dict[str, Any]] = [
        bk.header(f"{key}: root credentials checklist"),
        bk.section(
            "Root credentials were used. Nothing can be contained automatically: only the "
            "root user can change root's password, MFA or access keys. Verify each item "
            "and record what you found with `/incident note`."
        ),
    ]
    for n, item in enumerate(items, 1):
        calls = "\n".join(bk.code(c) for c in item.calls)
        blocks.append(
            bk.section(f"*{n}. {bk.esc(item.title)}*\n{calls}\n_{bk.esc(item.look_for)}_")
        )
    return bk.message(f"{key}: root credentials checklist ({len(items)} checks)", blocks)
