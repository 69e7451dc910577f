"""`/incident abuse <case-id|abuse reference> <summary>`: AWS abuse warnings.

AWS Trust & Safety expects an answer to an abuse report, usually within 24 hours, or it may
restrict the account. The command opens an incident for the report (or joins the one it is
run in, or the one already holding that case), records the case id, and reminds every
`REMIND_EVERY` until someone says it is answered (`/incident abuse answered`).

When the reference is not already an AWS Support case id, it opens a Support case through
the Support API. Accounts on the Basic support plan have no Support API
(SubscriptionRequiredException): the command says so and still tracks the report.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy import select
from sqlalchemy.orm import Session

from commands.deadlines.delivery import Delivery
from commands.deadlines.queue import cancel_reminders, schedule_reminder
from commands.errors import UserError
from commands.incidents import get_incident, open_incident
from containment.capabilities import Permissions
from containment.context import ActionContext
from containment.errors import error_code
from containment.idempotency import create_once
from containment.targets import Target
from storage.db import Database
from storage.facts import ABUSE
from storage.models import Incident, Reminder
from storage.timeline import append_event

REMIND_EVERY = dt.timedelta(hours=4)
SUPPORT_REGION = "us-east-1"  # the Support API has one endpoint
# Answering AWS abuse reports opens support cases: contain, not read-only triage.
PERMISSIONS = Permissions(
    "abuse",
    "contain",
    ("support:CreateCase", "support:DescribeCases", "support:DescribeCommunications"),
)
REFERENCE_MAX = 100
SUMMARY_MAX = 1000
# case-123456789012-muen-2017-a1b2c3d4e5f6a7b8 (caseId) or 1234567890 (displayId)
_CASE_ID = re.compile(r"^case-\d{12}-[a-z0-9]{2,8}-\d{4}-[0-9a-f]{8,32}$")
_DISPLAY_ID = re.compile(r"^\d{8,14}$")
_REFERENCE = re.compile(r"^[A-Za-z0-9][\w.:/#@+-]{1,99}$")
NO_SUPPORT_API = (
    "This account has no AWS Support API (Basic support plan), so no Support case was "
    "opened: answer the abuse report by e-mail or in the AWS console."
)


def is_case_id(reference: str) -> bool:
    return bool(_CASE_ID.match(reference) or _DISPLAY_ID.match(reference))


def parse_args(text: str) -> tuple[str, str]:
    """`<case-id|reference> <summary>` -> (reference, summary)."""
    parts = (text or "").strip().split(None, 1)
    if len(parts) < 2:
        raise UserError("Usage: /incident abuse <AWS case id or abuse report reference> <summary>.")
    reference, summary = parts[0], " ".join(parts[1].split())
    if not _REFERENCE.match(reference):
        raise UserError(
            "{reference!r} does not look like a case id or report reference: use the "
            "id from AWS's e-mail, e.g. 1234567890 or case-123456789012-muen-2026-0a1b2c3d.",
            reference=reference[:40],
        )
    return reference, summary[:SUMMARY_MAX]


@dataclass
class SupportOutcome:
    case_id: str | None
    api: str  # created | existing | unavailable | error
    message: str
    status: str | None = None


def open_support_case(
    *,
    support: Any,
    reference: str,
    summary: str,
    incident_hint: str | None = None,
    ctx: ActionContext | None = None,
    once: Any | None = None,
) -> SupportOutcome:
    """Open a Support case for the report, or look up the case it names.

    CreateCase takes no idempotency token: given `ctx` and `once` (a client that does not
    retry by itself), a create whose answer was lost is followed by a look for the case
    with this subject before another is opened (containment/idempotency.py)."""
    try:
        if is_case_id(reference):
            key = "caseIdList" if reference.startswith("case-") else "displayId"
            value: Any = [reference] if key == "caseIdList" else reference
            cases = support.describe_cases(
                **{key: value}, includeResolvedCases=True, includeCommunications=False
            )["cases"]
            if not cases:
                return SupportOutcome(
                    reference,
                    "existing",
                    f"Support case {reference} was not found in this account; recorded as given.",
                )
            case = cases[0]
            return SupportOutcome(
                case["caseId"],
                "existing",
                f"Support case {case.get('displayId', reference)} is {case.get('status')}.",
                status=case.get("status"),
            )
        body = (
            f"We received AWS abuse report {reference} and are investigating it"
            + (f" as {incident_hint}" if incident_hint else "")
            + f".\n\nSummary: {summary}\n\nWe will reply with our findings and the actions taken."
        )
        subject = f"Abuse report {reference}: {summary}"[:255]

        def create() -> dict[str, Any]:
            return dict(
                (once or support).create_case(
                    subject=subject,
                    communicationBody=body[:8000],
                    issueType="customer-service",
                    severityCode="high",
                    language="en",
                )
            )

        def opened_meanwhile() -> dict[str, Any] | None:
            assert ctx is not None
            since = (ctx.now() - dt.timedelta(days=1)).isoformat()
            for page in support.get_paginator("describe_cases").paginate(
                afterTime=since, includeResolvedCases=True, includeCommunications=False
            ):
                for case in page["cases"]:
                    if case.get("subject") == subject:
                        return {"caseId": case["caseId"]}
            return None

        if ctx is None:
            out = create()
        else:
            out = create_once(
                ctx,
                service="support",
                operation="CreateCase",
                create=create,
                find=opened_meanwhile,
            )
        return SupportOutcome(
            out["caseId"], "created", f"Opened AWS Support case {out['caseId']} for it."
        )
    except ClientError as exc:
        if error_code(exc) == "SubscriptionRequiredException":
            return SupportOutcome(None, "unavailable", NO_SUPPORT_API)
        return SupportOutcome(
            None, "error", f"The Support API refused ({error_code(exc)}); no case was opened."
        )
    except BotoCoreError as exc:
        return SupportOutcome(
            None, "error", f"The Support API was unreachable ({type(exc).__name__})."
        )


@dataclass(frozen=True)
class AbuseResult:
    incident_key: str
    opened: bool
    case_id: str | None
    support: SupportOutcome
    reminder_due: dt.datetime


def _by_reference(session: Session, reference: str, case_id: str | None) -> Incident | None:
    """The live incident already holding this report (by case id, or by the reference)."""
    candidates = session.scalars(
        select(Incident)
        .where(Incident.support_case_id.is_not(None), Incident.status != "closed")
        .order_by(Incident.number.desc())
    ).all()
    for incident in candidates:
        record = ABUSE.get(incident)
        if incident.support_case_id in (reference, case_id) or record.get("reference") == reference:
            return incident
    return None


def _reminder_key(incident: Incident, reference: str, n: int) -> str:
    return f"abuse:{incident.id}:{reference}:{n}"[:200]


def report_abuse(
    *,
    db: Database,
    ctx: ActionContext | None,
    reference: str,
    summary: str,
    actor: str,
    incident_key: str | None = None,
    channel_id: str | None = None,
    account_id: str | None = None,
    now: Callable[[], dt.datetime] | None = None,
) -> AbuseResult:
    """Open or join the incident, record the case, open a Support case, start reminders."""
    now = now or db.clock.now
    with db.read_session() as session:
        existing = (
            get_incident(session=session, key=incident_key)
            if incident_key
            else _by_reference(session, reference, None)
        )
        if existing is not None and existing.status == "closed":
            raise UserError(
                f"{existing.key} is closed: run this outside its thread to open a new one."
            )
        hint = existing.key if existing is not None else None
        account_id = account_id or (existing.account_id if existing is not None else None)
        recorded = ABUSE.get(existing)
    if recorded.get("reference") == reference:
        # The same report again: no second Support case.
        support = SupportOutcome(
            recorded.get("case_id"), recorded.get("support_api", "existing"), "Already recorded."
        )
    elif ctx is None:
        support = SupportOutcome(None, "error", "No AWS access configured; no case was opened.")
    else:
        where = Target("instance", reference, SUPPORT_REGION, account_id)
        support = open_support_case(
            support=ctx.client("support", where),
            reference=reference,
            summary=summary,
            incident_hint=hint,
            ctx=ctx,
            once=ctx.client("support", where, max_attempts=1),
        )
    case_id = support.case_id or reference
    at = now()
    with db.session() as session:
        incident = None
        if incident_key:
            incident = get_incident(session=session, key=incident_key, for_update=True)
        if incident is None:
            incident = _by_reference(session, reference, support.case_id)
        opened = incident is None
        if incident is None:
            incident = open_incident(
                session=session,
                title=f"AWS abuse report {reference}: {summary}",
                created_by=actor,
                severity="high",
                channel_id=channel_id,
                account_id=account_id,
                details={"opened_by": "abuse report", "reference": reference},
            )
        incident.support_case_id = case_id
        ABUSE.update(
            incident,
            reference=reference,
            case_id=support.case_id,
            summary=summary,
            reported_by=actor,
            reported_at=ABUSE.get(incident).get("reported_at") or at.isoformat(),
            support_api=support.api,
            support_message=support.message,
            case_status=support.status,
            answered_at=None,
            answered_by=None,
        )
        append_event(
            session=session,
            incident=incident,
            actor=actor,
            kind="abuse.reported",
            summary=f"AWS abuse report {reference} recorded: {summary}. {support.message}",
            details={
                "reference": reference,
                "case_id": support.case_id,
                "support_api": support.api,
                "summary": summary,
            },
        )
        due = at + REMIND_EVERY
        schedule_reminder(
            session=session,
            incident=incident,
            kind="abuse",
            due_at=due,
            dedupe_key=_reminder_key(incident, reference, 1),
            message=f"AWS abuse report {reference} is not answered yet",
            payload={"reference": reference, "n": 1},
        )
        return AbuseResult(incident.key, opened, support.case_id, support, due)


def mark_answered(
    *, db: Database, incident_key: str, actor: str, note: str | None = None
) -> Incident:
    """The abuse report was answered: stop the reminders."""
    with db.session() as session:
        incident = get_incident(session=session, key=incident_key, for_update=True)
        record = ABUSE.get(incident)
        if not record:
            raise UserError(f"{incident.key} has no abuse report: record one with /incident abuse.")
        if record.get("answered_at"):
            raise UserError(f"The abuse report on {incident.key} is already marked answered.")
        record = ABUSE.update(incident, answered_at=db.clock.now().isoformat(), answered_by=actor)
        append_event(
            session=session,
            incident=incident,
            actor=actor,
            kind="abuse.answered",
            summary=f"AWS abuse report {record.get('reference')} answered"
            + (f": {note}" if note else ""),
            details={"reference": record.get("reference"), "case_id": record.get("case_id")},
        )
        cancel_reminders(
            session=session,
            incident=incident,
            kinds=("abuse",),
            actor=actor,
            reason="abuse report answered",
        )
        return incident


def case_answered(
    *, support: Any, case_id: str, since: dt.datetime, opened_by_us: bool
) -> str | None:
    """Why the Support case counts as answered, or None.

    A case AWS opened about the report is answered once someone on our side wrote on it; a
    case we opened is answered once AWS wrote back. A resolved case is answered either way.
    Communications from AWS name it in `submittedBy` ("Amazon Web Services").
    """
    cases = support.describe_cases(
        caseIdList=[case_id], includeResolvedCases=True, includeCommunications=False
    )["cases"]
    if not cases:
        return None
    if cases[0].get("status") == "resolved":
        return f"Support case {case_id} is resolved"
    pages = support.get_paginator("describe_communications").paginate(
        caseId=case_id, afterTime=since.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    )
    for page in pages:
        for c in page.get("communications", []):
            from_aws = "amazon" in (c.get("submittedBy") or "").lower()
            if from_aws == opened_by_us:
                who = "AWS" if from_aws else str(c.get("submittedBy") or "we")
                return f"{who} wrote on Support case {case_id} at {c.get('timeCreated')}"
    return None


def check_answers(
    *, db: Database, client_for: Callable[[str | None], Any], actor: str = "system"
) -> list[str]:
    """Mark answered the abuse reports whose Support case shows an answer; their keys.

    `client_for(account_id)` gives a Support client. Accounts without the Support API, and
    any read failure, leave the report to be answered by hand.
    """
    with db.read_session() as session:
        rows = session.scalars(
            select(Incident).where(
                Incident.support_case_id.is_not(None), Incident.status != "closed"
            )
        ).all()
        todo = []
        for inc in rows:
            record = ABUSE.get(inc)
            if (
                record.get("case_id")
                and not record.get("answered_at")
                and record.get("support_api") in ("created", "existing")
            ):
                since = dt.datetime.fromisoformat(record["reported_at"])
                todo.append((inc.key, inc.account_id, record, since))
    answered = []
    for key, account_id, record, since in todo:
        try:
            why = case_answered(
                support=client_for(account_id),
                case_id=record["case_id"],
                since=since,
                opened_by_us=record["support_api"] == "created",
            )
        except (ClientError, BotoCoreError):
            continue
        if why:
            try:
                mark_answered(db=db, incident_key=key, actor=actor, note=why)
            except UserError:
                continue  # answered by hand meanwhile
            answered.append(key)
    return answered


@dataclass(frozen=True)
class AbuseNotice:
    """An AWS abuse report still unanswered (bot/views/reminders.py says so)."""

    reference: str
    case_id: str | None
    waited: dt.timedelta | None  # since it was reported, when known


def abuse_delivery(
    *,
    session: Session,
    reminder: Reminder,
    incident: Incident | None,
    now: dt.datetime,
    policy: Any,
    base: Delivery,
) -> Delivery | None:
    """Remind until answered: each reminder schedules the next one in the same transaction."""
    if incident is None or incident.status == "closed":
        return None
    record = ABUSE.get(incident)
    if not record or record.get("answered_at"):
        return None
    n = int((reminder.payload or {}).get("n", 1))
    reference = str(record.get("reference") or (reminder.payload or {}).get("reference"))
    since = record.get("reported_at")
    waited = now - dt.datetime.fromisoformat(since) if since else None
    schedule_reminder(
        session=session,
        incident=incident,
        kind="abuse",
        due_at=now + REMIND_EVERY,
        dedupe_key=_reminder_key(incident, reference, n + 1),
        message=reminder.message,
        payload={"reference": reference, "n": n + 1},
    )
    notice = AbuseNotice(reference, record.get("case_id"), waited)
    return dataclasses.replace(base, notice=notice)


def abuse_lines(facts: Mapping[str, Any]) -> list[str]:
    """Plain-text lines for the incident card."""
    record = ABUSE.get(facts)
    if not record:
        return []
    case = record.get("case_id") or "no Support case"
    state = "answered" if record.get("answered_at") else "NOT answered yet"
    lines = [f"abuse report {record.get('reference')} ({case}): {state}"]
    if record.get("support_api") == "unavailable":
        lines.append("no AWS Support API on this account: answer by e-mail or console")
    return lines
