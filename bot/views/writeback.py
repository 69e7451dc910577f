"""What the incident's thread says after the write-back on close."""

from __future__ import annotations

from bot.views import blocks as bk
from commands.writeback import WriteBack


def writeback_line(key: str, result: WriteBack) -> str | None:
    """One line for the thread; None when nothing was attempted."""
    if not result.anything:
        return None
    parts = []
    if result.archived:
        parts.append(f"GuardDuty: {len(result.archived)} finding(s) archived")
    if result.archive_failures:
        parts.append(
            "GuardDuty did not archive: " + bk.esc_cut("; ".join(result.archive_failures), 500)
        )
    if result.resolved:
        parts.append(f"Security Hub: {result.resolved} finding(s) RESOLVED")
    if result.unprocessed:
        parts.append(
            f"Security Hub did not resolve {len(result.unprocessed)}: "
            + bk.esc_cut("; ".join(result.unprocessed[:3]), 500)
        )
    return f"🗄️ {key} closed: " + " · ".join(parts) + "."
