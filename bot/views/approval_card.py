"""The approval card of a containment request, in every state it goes through.

pending: the plan (every API call, step by step), the blast radius from the resource's tags,
and Approve / Reject buttons. approved/running: live per-step progress. Finished: the
outcome, the failed steps with their errors, and Retry / Roll back. Rejected, expired and
rolled-back cards keep their record but lose their buttons.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bot.views import blocks as bk
from commands.approvals.plans import Plan

if TYPE_CHECKING:
    from bot.approvals.service import Proposal

APPROVE = "containment_approve"
REJECT = "containment_reject"
RETRY = "containment_retry"
ROLLBACK = "containment_rollback"
ERROR_SHOWN = 300

STEP_ICONS = {
    "pending": "⏳",
    "running": "🔄",
    "succeeded": "✅",
    "failed": "❌",
    "skipped": "⏭️",
    "interrupted": "⚠️",
    "rolled_back": "↩️",
}
STATUS_LINES = {
    "pending": "⏳ *Waiting for approval*",
    "approved": "👍 *Approved*, starting",
    "running": "🔄 *Running*",
    "succeeded": "✅ *Succeeded*",
    "partial": "⚠️ *Partially failed*",
    "failed": "❌ *Failed*",
    "rejected": "🚫 *Rejected*",
    "expired": "⌛ *Expired* without a decision",
    "interrupted": "⚠️ *Interrupted* by a restart before it finished",
    "rolled_back": "↩️ *Rolled back*",
}
KIND_TITLES = {
    "contain": "Containment plan",
    "retry": "Containment retry",
    "rollback": "Rollback",
    "forensics": "Forensic clean room",
    "forensics_teardown": "Clean-room teardown",
    "wipe": "Evidence wipe",
}
# Kinds whose changes cannot be rolled back from the card (deletions, a whole stack).
NO_ROLLBACK = ("rollback", "forensics", "forensics_teardown", "wipe")


@dataclass
class StepView:
    action: str
    status: str
    error: str | None = None
    note: str | None = None


@dataclass
class CardView:
    """Everything the card shows, read from the database in one go."""

    request_id: int
    kind: str
    status: str
    incident_key: str
    incident_title: str
    target_type: str
    target_id: str
    region: str | None
    account_id: str | None
    requested_by: str
    requested_at: dt.datetime
    reason: str | None
    expires_at: dt.datetime | None
    decided_by: str | None
    decided_at: dt.datetime | None
    decision_reason: str | None
    dry_run: bool
    plan: Plan
    parent_id: int | None = None
    steps: list[StepView] = field(default_factory=list)
    finished_at: dt.datetime | None = None
    drill: bool = False
    # Evidence the finished steps could not collect (commands.approvals.execution.
    # missing_evidence: its `evidence`, `action` and `error`), one line each.
    missing_evidence: list[Mapping[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not isinstance(self.plan, Plan):  # the request row's JSON
            self.plan = Plan.from_json(self.plan)


def _title(view: CardView) -> str:
    prefix = ("[DRILL] " if view.drill else "") + ("[DRY RUN] " if view.dry_run else "")
    return f"{prefix}{KIND_TITLES.get(view.kind, view.kind)}: {view.incident_key}"


def card_text(view: CardView) -> str:
    """The notification text (escaped)."""
    what = f"{view.target_type} {view.target_id}"
    state = {
        "pending": "awaits approval",
        "approved": "approved",
        "running": "running",
        "rejected": "rejected",
        "expired": "expired",
    }.get(view.status, view.status.replace("_", " "))
    return bk.esc(f"{_title(view)} — {what}: {state} (request #{view.request_id})")


def _step_lines(plan: Plan) -> list[str]:
    """One mrkdwn chunk per step: its name, summary and every API call it makes."""
    chunks = []
    for number, step in enumerate(plan.steps, 1):
        head = f"*{number}. {bk.authored(step.action)}*"
        if step.summary:
            head += f" — {bk.esc(step.summary)}"
        if not step.mutating:
            head += " _(read only)_"
        calls = [f"• {bk.code(c.text)}" for c in step.calls]
        chunks.append("\n".join([head, *(calls or ["_no API call needed right now_"])]))
    return chunks


def _split(text: str, limit: int = bk.SECTION_TEXT) -> list[str]:
    """Cut a long chunk at line ends so every call stays listed in full."""
    parts: list[str] = []
    current = ""
    for line in text.split("\n"):
        line = bk.cut(line, limit)
        if current and len(current) + 1 + len(line) > limit:
            parts.append(current)
            current = line
        else:
            current = f"{current}\n{line}" if current else line
    if current:
        parts.append(current)
    return parts


def _blast_radius(plan: Plan) -> str | None:
    radius = plan.blast_radius
    if not radius:
        return None
    lines = ["*Blast radius*"]
    labelled = radius.get("labelled") or {}
    for label, value in labelled.items():
        lines.append(f"• {bk.esc(label.replace('_', ' ').capitalize())}: *{bk.esc(value)}*")
    shown = set(labelled.values())
    other = {k: v for k, v in (radius.get("tags") or {}).items() if v not in shown}
    if other:
        tags = ", ".join(f"{bk.esc(k)}={bk.esc(v)}" for k, v in sorted(other.items())[:20])
        lines.append(f"• Tags: {tags}")
    if not labelled and not radius.get("tags"):
        lines.append("• No tags: owner and data classification unknown")
    for item in radius.get("attached") or []:
        lines.append(f"• {bk.esc(item)}")
    for line in radius.get("impact") or []:
        lines.append(f"• {bk.esc(line)}")
    if radius.get("public_ip"):
        lines.append(f"• Public IP {bk.esc(radius['public_ip'])}")
    if radius.get("note"):
        lines.append(f"• _{bk.esc(radius['note'])}_")
    return "\n".join(lines)


def _progress(view: CardView) -> str:
    lines = []
    for step in view.steps:
        icon = STEP_ICONS.get(step.status, "•")
        line = f"{icon} {bk.authored(step.action)} — {bk.esc(step.status.replace('_', ' '))}"
        if step.error and step.status in ("failed", "skipped", "interrupted"):
            line += f": {bk.esc_cut(step.error, ERROR_SHOWN)}"
        elif step.note and step.status in ("succeeded", "skipped"):
            line += f" _({bk.esc_cut(step.note, 120)})_"
        lines.append(line)
    return "\n".join(lines) or "_no steps recorded_"


def _buttons(view: CardView) -> list[dict[str, Any]]:
    value = str(view.request_id)
    if view.status == "pending":
        return [
            bk.button("Approve", APPROVE, value, style="primary", confirm=_confirm(view)),
            bk.button("Reject", REJECT, value, style="danger"),
        ]
    out = []
    if view.status in ("partial", "failed", "interrupted") and view.kind != "rollback":
        out.append(bk.button("Retry what is left", RETRY, value, style="primary"))
    finished = ("succeeded", "partial", "failed", "interrupted")
    if (
        view.status in finished
        and view.kind not in NO_ROLLBACK
        and not view.plan.engine
        and not view.dry_run  # a dry run changed nothing: nothing to roll back
    ):
        out.append(bk.button("Roll back", ROLLBACK, value, style="danger"))
    return out


def _confirm(view: CardView) -> dict[str, Any]:
    """Slack's confirmation dialog before an Approve click counts."""
    changing = view.plan.count_calls(mutating=True)
    what = "records what would happen (dry run)" if view.dry_run else "changes AWS now"
    return {
        "title": bk.plain("Approve?", 100),
        "text": bk.plain(
            f"Approving request #{view.request_id} {what}: {changing} changing API calls "
            f"on {view.target_type} {view.target_id}.",
            300,
        ),
        "confirm": bk.plain("Approve", 30),
        "deny": bk.plain("Cancel", 30),
    }


def approval_card(view: CardView, *, now: dt.datetime | None = None) -> dict[str, Any]:
    """chat.postMessage / chat.update kwargs (text + blocks) for the request's card."""
    blocks: list[dict[str, Any]] = [bk.header(_title(view))]
    target = f"{view.target_type} {bk.code(view.target_id)}"
    where = " / ".join(bk.esc(x) for x in (view.account_id, view.region) if x)
    status = STATUS_LINES.get(view.status, bk.esc(view.status))
    if view.status == "pending" and view.expires_at:
        status += f" — expires {bk.when(view.expires_at)}"
    if view.missing_evidence:
        status += " — ⚠️ evidence missing (below)"
    blocks.append(bk.section(status))
    fields = [
        f"*Target*\n{target}" + (f" ({where})" if where else ""),
        f"*Incident*\n{bk.esc(view.incident_key)}: {bk.esc_cut(view.incident_title, 200)}",
        f"*Requested by*\n{bk.user(view.requested_by)}",
        f"*Request*\n#{view.request_id}"
        + (f" (follows #{view.parent_id})" if view.parent_id else ""),
    ]
    if view.reason:
        fields.append(f"*Reason*\n{bk.esc_cut(view.reason, 1500)}")
    blocks.append(bk.fields_section(fields))
    if view.decided_by:
        verb = "Rejected" if view.status == "rejected" else "Approved"
        line = f"{verb} by {bk.user(view.decided_by)}"
        if view.decided_at:
            line += f" at {bk.utc(view.decided_at)}"
        if view.decision_reason:
            line += f": {bk.esc_cut(view.decision_reason, 1000)}"
        blocks.append(bk.context(line))
    if view.dry_run:
        blocks.append(
            bk.context(
                "Dry run: nothing will be changed in AWS; the timeline "
                "records what would have happened."
            )
        )

    radius = _blast_radius(view.plan)
    if radius:
        blocks.append(bk.section(bk.cut(radius, bk.SECTION_TEXT)))
    if view.status in ("pending", "rejected", "expired") or not view.steps:
        blocks.append(bk.divider())
        label = "Plan" if view.kind != "rollback" else "Rollback plan"
        blocks.append(
            bk.section(
                f"*{label}*: {len(view.plan.steps)} steps, {view.plan.count_calls()} API calls"
            )
        )
        for chunk in _step_lines(view.plan):
            blocks.extend(bk.section(part) for part in _split(chunk))
    else:
        blocks.append(bk.divider())
        blocks.append(bk.section(bk.cut("*Progress*\n" + _progress(view), bk.SECTION_TEXT)))
        failed = [s for s in view.steps if s.status in ("failed", "interrupted")]
        if view.status in ("partial", "failed", "interrupted") and failed:
            lines = [f"*{len(failed)} step(s) did not complete:*"]
            lines += [
                f"• *{bk.authored(s.action)}*: {bk.esc_cut(s.error or 'no error recorded', 500)}"
                for s in failed
            ]
            blocks.append(bk.section(bk.cut("\n".join(lines), bk.SECTION_TEXT)))
        if view.missing_evidence:
            lines = [f"⚠️ *Evidence missing ({len(view.missing_evidence)}):*"]
            lines += [f"• {bk.esc_cut(_missing(m), 500)}" for m in view.missing_evidence]
            blocks.append(bk.section(bk.cut("\n".join(lines), bk.SECTION_TEXT)))
    buttons = _buttons(view)
    # Buttons last, and never cut off by the block limit.
    blocks = bk.limit_blocks(blocks, bk.MESSAGE_BLOCKS - (1 if buttons else 0))
    if buttons:
        blocks.append(bk.actions(buttons, block_id=f"containment_{view.request_id}"))
    return bk.message(card_text(view), blocks)


def _missing(m: Mapping[str, Any]) -> str:
    return f"{m['evidence']} ({m['action']}): {m['error']}"


def reject_modal(request_id: int, *, channel_id: str, target_id: str) -> dict[str, Any]:
    import json

    return bk.modal(
        "containment_reject_modal",
        f"Reject request #{request_id}"[: bk.MODAL_TITLE],
        [
            bk.section(
                f"Rejecting containment of {bk.code(target_id)}. The reason goes on "
                "the incident's timeline."
            ),
            bk.text_input("reason", "Why do you reject it?", max_length=1000),
        ],
        submit="Reject",
        private_metadata=json.dumps({"request_id": request_id, "channel": channel_id}),
    )


# -- the answers of /contain and of the card's buttons ------------------------------------------

REJECT_REASON_EMPTY = "Say why you reject it."
BOTH_VOLATILE_FLAGS = "Give one of `--volatile` and `--no-volatile`, not both."
BUTTON_NAMES_NO_RESOURCE = "This button names no instance or access key; use /contain instead."
NO_CARD_CHANNEL = "No channel to post the approval card in: set slack.incident_channel."


def incident_not_open(key: str, status: str) -> str:
    return f"{key} is {status}; reopen it or name an open incident."


def nothing_to_roll_back(request_id: int) -> str:
    return f"Request #{request_id} changed nothing that can be rolled back."


def already_decided(request_id: int, status: str) -> str:
    return f"Request #{request_id} is already {status.replace('_', ' ')}."


def unknown_option(flag: str, usage: str) -> str:
    """A `UserError`; `flag` matched `--[A-Za-z][\\w-]*`, so it cannot end the code span."""
    return f"`{flag}` is not an option of /contain; use `--volatile` or `--no-volatile`: `{usage}`."


def resource_needed(usage: str) -> str:
    return f"Name what to contain: `{usage}`."


def proposal_reply(proposal: Proposal, resource_id: str) -> str:
    """What the requester of a containment plan reads (a new plan, or the one already asked)."""
    where = bk.channel(proposal.channel_id) if proposal.channel_id else "the incident channel"
    opened = f" (opened {proposal.incident_key} for it)" if proposal.opened_incident else ""
    if not proposal.created:
        return (
            f"Containment of {bk.code(resource_id)} is already requested (request "
            f"#{proposal.request_id} on {proposal.incident_key}); its card is in {where}."
        )
    return (
        f"Posted containment plan #{proposal.request_id} for {bk.code(resource_id)} on "
        f"{proposal.incident_key}{opened} in {where}; an approver has to approve it."
    )


def follow_up_reply(kind: str, request_id: int, proposal: Proposal) -> str:
    """A Retry or Roll back click's answer."""
    what = "Retry" if kind == "retry" else "Rollback"
    if not proposal.created:
        return f"{what} of request #{request_id} is already requested (#{proposal.request_id})."
    return f"{what} of request #{request_id} posted for approval as #{proposal.request_id}."
