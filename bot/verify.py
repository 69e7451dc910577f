"""`incident-bot verify INC-N`: the chain, its key, and every anchor outside the database.

Says exactly what it checked and what it could not. Exit 0: everything it could check agrees;
1: tampered (the first problem named on stderr); 2: an operator error (raised as Fail by the
caller: a missing database, a keyed incident without INCIDENT_BOT_TIMELINE_KEY, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bot.views.anchors import anchors_in
from commands import anchors as svc
from storage.timeline import ChainReport, TimelineKey, verify_chain

if TYPE_CHECKING:
    from bot.settings import Settings
    from storage.db import Database
    from storage.models import Incident


class OperatorError(Exception):
    """One line for the operator; the CLI turns it into exit 2."""


@dataclass
class Verdict:
    lines: list[str] = field(default_factory=list)  # what was checked, and what not (stdout)
    problems: list[str] = field(default_factory=list)  # tampering, first one first

    @property
    def exit_code(self) -> int:
        return 1 if self.problems else 0


def _s3_anchors(settings: Settings, number: int) -> tuple[list[svc.Anchor] | None, str]:
    bucket = settings.config.containment.evidence_bucket
    if not bucket:
        return None, "not checked: no containment.evidence_bucket is configured"
    from containment.clients import aws_client

    region = (settings.config.guardduty.regions or ["us-east-1"])[0]
    where = f"s3://{bucket}/{svc.S3_PREFIX}/INC-{number}/"
    try:
        found = svc.read_s3_anchors(
            s3=aws_client("s3", region), bucket=bucket, incident_number=number
        )
    except Exception as exc:  # AccessDenied, NoSuchBucket, no credentials: say which
        return None, f"not checked: could not read {where} ({exc})"
    unlocked = f", {len(found.unlocked)} of them without Object Lock" if found.unlocked else ""
    return found.anchors, f"{len(found.anchors)} in {where}{unlocked}"


def _slack_anchors(
    settings: Settings, incident: Incident | None, number: int
) -> tuple[list[svc.Anchor] | None, str]:
    token = settings.env.slack_bot_token
    if token is None:
        return None, "not checked: SLACK_BOT_TOKEN is not set"
    if incident is None:
        return None, "not checked: the incident's thread is only known from the database"
    if not incident.channel_id or not incident.thread_ts:
        return None, f"not checked: INC-{number} has no Slack thread recorded"
    from slack_sdk import WebClient
    from slack_sdk.errors import SlackApiError

    client = WebClient(token=token.get_secret_value(), base_url=settings.env.slack_api_url)
    messages: list[dict[str, Any]] = []
    cursor = None
    try:
        while True:
            page = client.conversations_replies(
                channel=incident.channel_id, ts=incident.thread_ts, limit=200, cursor=cursor
            )
            # Only bots' messages: a person pasting an anchor's text is not a witness.
            messages += [m for m in page.get("messages", []) if m.get("bot_id")]
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not cursor:
                break
    except (SlackApiError, OSError) as exc:
        return None, f"not checked: conversations.replies failed ({exc})"
    anchors = anchors_in(messages, incident_number=number)
    return anchors, f"{len(anchors)} in the incident's thread ({incident.channel_id})"


def _chain_line(incident: Incident, report: ChainReport) -> str:
    if report.keyed:
        keying = f"keyed with {report.key_id} (the configured key), head seal matches"
    else:
        keying = (
            "not keyed (legacy, unkeyed: plain SHA-256, so whoever holds the database could "
            "have recomputed it; only the anchors below witness it)"
        )
    return f"chain: {report.events} events, chain intact, {keying}"


def verify_incident(
    *,
    settings: Settings,
    database: Database,
    number: int,
    key: TimelineKey | None,
    not_found: Callable[[], Exception],
    evidence: bool = False,
) -> Verdict:
    from commands.errors import NotFound
    from commands.incidents import get_incident
    from storage.timeline import KeyNeeded

    verdict = Verdict()
    with database.read_session() as session:
        try:
            incident: Incident | None = get_incident(session=session, key=f"INC-{number}")
        except NotFound:
            incident = None
        issued = svc.issued_incidents(session=session)
        chain: ChainReport | None = None
        if incident is not None:
            try:
                chain = verify_chain(conn=session, incident=incident, key=key)
            except KeyNeeded as exc:
                raise OperatorError(str(exc)) from None

    s3_anchors, s3_line = _s3_anchors(settings, number)
    slack_anchors, slack_line = _slack_anchors(settings, incident, number)

    if incident is None:
        witnessed = bool(s3_anchors) or 0 < number <= issued
        if not witnessed:
            raise not_found()
        if 0 < number <= issued:
            verdict.problems.append(
                f"INC-{number} is missing from the database, but {issued} incident number(s) "
                "were issued and numbers are never skipped: the incident was deleted"
            )
    else:
        assert chain is not None
        if chain.ok:
            verdict.lines.append(_chain_line(incident, chain))
        elif chain.first_bad_seq is None:
            verdict.problems.append(f"key: {chain.reason}")
        else:
            verdict.problems.append(f"event #{chain.first_bad_seq}: {chain.reason}")

    for source, anchors, line in (
        ("S3", s3_anchors, s3_line),
        ("Slack", slack_anchors, slack_line),
    ):
        if anchors is None:
            verdict.lines.append(f"{source} anchors: {line}")
            continue
        problems = svc.check_anchors(source=source, anchors=anchors, incident=incident, chain=chain)
        verdict.problems += problems
        agree = "all match" if not problems else f"{len(problems)} disagree"
        verdict.lines.append(
            f"{source} anchors: {line}, {agree}" if anchors else f"{source} anchors: {line}"
        )

    _wrong_key_is_the_operators(incident, chain, key, s3_anchors, slack_anchors, verdict)
    if evidence:
        _check_evidence(settings, database, number, verdict)
    return verdict


def _recorded_hashes(database: Database, number: int) -> dict[str, str]:
    """Evidence object key -> the SHA-256 the timeline recorded when it was stored."""
    import json

    from sqlalchemy import select

    from commands.errors import NotFound
    from commands.incidents import get_incident
    from storage.models import TimelineEvent

    out: dict[str, str] = {}
    with database.read_session() as session:
        try:
            incident = get_incident(session=session, key=f"INC-{number}")
        except NotFound:
            return out
        rows = session.scalars(
            select(TimelineEvent.details).where(
                TimelineEvent.incident_id == incident.id,
                TimelineEvent.kind == "containment.step.succeeded",
            )
        )
        for raw in rows:
            details = json.loads(raw) if isinstance(raw, str) else raw or {}
            found = details.get("evidence") or {}
            if details.get("action") == "evidence" and found.get("sha256"):
                out[str(found["key"])] = str(found["sha256"])
    return out


def _check_evidence(settings: Settings, database: Database, number: int, verdict: Verdict) -> None:
    """Re-read every evidence object in the manifest; compare with it and the timeline."""
    from bot.clock import SystemClock
    from commands.approvals.plans import action_context
    from containment import custody

    cfg = settings.config
    ctx = action_context(
        incident_key=f"INC-{number}",
        options=cfg.containment,
        dry_run=True,
        now=SystemClock().now,
        forensics=cfg.forensics,
    )
    if not ctx.evidence_bucket:
        verdict.lines.append("evidence: not checked: no evidence bucket is configured")
        return
    region = (cfg.guardduty.regions or ["us-east-1"])[0]
    key = custody.manifest_key(ctx.evidence_prefix, ctx.incident_key)
    where = f"s3://{ctx.evidence_bucket}/{key}"
    recorded = _recorded_hashes(database, number)
    try:
        s3 = ctx.evidence_client("s3", region)
        manifest = custody.read_manifest(s3, ctx.evidence_bucket, key)
        if manifest is None:
            if recorded:
                verdict.problems.append(
                    f"evidence: the timeline recorded {len(recorded)} evidence object(s) but "
                    f"{where} is missing: the manifest was deleted"
                )
            else:
                verdict.lines.append(f"evidence: none recorded ({where} does not exist)")
            return
        checked, problems = custody.check_objects(s3, ctx.evidence_bucket, manifest)
    except Exception as exc:  # AccessDenied, NoSuchBucket, no credentials: the operator's
        raise OperatorError(f"could not read the evidence in {where} ({exc})") from None
    listed = {str(o.get("key")): str(o.get("sha256")) for o in manifest.get("objects") or []}
    for name, digest in recorded.items():
        if name not in listed:
            problems.append(f"{name}: on the timeline but missing from {where}")
        elif listed[name] != digest:
            problems.append(
                f"{name}: the manifest's SHA-256 differs from the one the timeline recorded: "
                "the manifest was rewritten"
            )
    verdict.problems += problems
    snaps = len(manifest.get("snapshots") or [])
    agree = "all match" if not problems else f"{len(problems)} disagree"
    verdict.lines.append(
        f"evidence: {checked} object(s) re-read from {where} and hashed, {agree}; "
        f"{snaps} snapshot copy(ies) listed"
    )


def _wrong_key_is_the_operators(
    incident: Incident | None,
    chain: ChainReport | None,
    key: TimelineKey | None,
    s3_anchors: list[svc.Anchor] | None,
    slack_anchors: list[svc.Anchor] | None,
    verdict: Verdict,
) -> None:
    """A key mismatch that the anchors confirm from outside is the operator's wrong key."""
    if incident is None or chain is None or chain.ok or chain.first_bad_seq is not None:
        return
    outside = [a.key_id for a in (s3_anchors or []) + (slack_anchors or [])]
    if outside and all(k == incident.timeline_key_id for k in outside) and key is not None:
        raise OperatorError(
            f"the configured INCIDENT_BOT_TIMELINE_KEY (id {key.id}) is not the key "
            f"{incident.key} was chained with ({incident.timeline_key_id}, which its "
            f"{len(outside)} anchor(s) confirm): set INCIDENT_BOT_TIMELINE_KEY to that key"
        )
