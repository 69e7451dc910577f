"""Root credentials in a finding: nothing can be contained automatically (only the root user
can change root's password, MFA or access keys), so the plan is a checklist of what to verify
and the calls that verify it, posted on the incident and recorded on its timeline.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy.orm import Session

from storage.models import Incident
from storage.timeline import append_event

CHECKLIST_EVENT = "containment.checklist"


@dataclass(frozen=True)
class CheckItem:
    key: str
    title: str
    calls: tuple[str, ...]  # the AWS CLI calls that verify it, ready to paste
    look_for: str  # what a safe answer looks like, and what to do otherwise


def root_checklist(*, account_id: str | None, since: dt.datetime | None) -> list[CheckItem]:
    """What a responder verifies when root credentials were used; `since` bounds CloudTrail."""
    account = account_id or "<account>"
    start = (since - dt.timedelta(days=1)) if since else None
    start_arg = f" --start-time {start:%Y-%m-%dT%H:%M:%SZ}" if start else ""
    return [
        CheckItem(
            "mfa",
            "Root has MFA",
            (
                "aws iam get-account-summary --query SummaryMap.AccountMFAEnabled",
                "aws iam list-virtual-mfa-devices --assignment-status Assigned",
            ),
            "AccountMFAEnabled is 1 and the device is one your team holds; otherwise enable "
            "MFA from the root console now.",
        ),
        CheckItem(
            "access_keys",
            "Root has no access keys",
            ("aws iam get-account-summary --query SummaryMap.AccountAccessKeysPresent",),
            "AccountAccessKeysPresent is 0; otherwise sign in as root and delete the keys "
            "(only root can).",
        ),
        CheckItem(
            "cloudtrail",
            "Recent root activity is accounted for",
            (
                "aws cloudtrail lookup-events --lookup-attributes "
                f"AttributeKey=Username,AttributeValue=root{start_arg}",
            ),
            "every call since is one a named person made on purpose; otherwise treat the root "
            "password as known to the attacker.",
        ),
        CheckItem(
            "credentials",
            "Root password and sign-in are known",
            (
                "aws iam generate-credential-report",
                "aws iam get-credential-report --query Content --output text | base64 -d | "
                "grep '<root_account>'",
            ),
            f"password_last_used matches a known sign-in to account {account}; otherwise "
            "reset the root password and re-register MFA.",
        ),
    ]


def record_checklist(
    *, session: Session, incident: Incident, items: list[CheckItem], reason: str
) -> None:
    """Keep the checklist on the incident (facts) and say it on the timeline."""
    facts = dict(incident.facts or {})
    facts["checklist"] = {"reason": reason, "items": [asdict(i) for i in items]}
    # The card's "not automatic" note says why there is no Approve button.
    facts["not_automatic"] = {
        **(facts.get("not_automatic") or {}),
        "containment": "root credentials: verify the checklist in the thread",
    }
    incident.facts = facts
    details: dict[str, Any] = {"reason": reason, "items": [i.key for i in items]}
    append_event(
        session=session,
        incident=incident,
        actor="system",
        kind=CHECKLIST_EVENT,
        summary=f"No automatic containment for root credentials: {len(items)} checks to verify "
        f"({', '.join(i.title for i in items)})",
        details=details,
    )
