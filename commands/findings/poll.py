"""Pull findings with GetFindings, resuming from the last updatedAt seen (stored in the DB).

Per region and detector: ListFindings for `updatedAt >= cursor` sorted oldest first, then
GetFindings for each page of ids. Each page is recorded and the cursor advanced in one
transaction, so a crash between pages resumes where it stopped and nothing is recorded twice
(a redelivered finding is a no-op in `record_findings`). The comparison is `>=` because
several findings can share a millisecond; the boundary ones come back and change nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from commands.findings.errors import BadFinding
from commands.findings.ingest import Ingested, record_findings
from commands.findings.normalize import NormalizedFinding, normalize_finding
from containment.capabilities import Permissions
from storage.db import Database
from storage.models import Cursor

log = logging.getLogger(__name__)

PAGE_SIZE = 50  # GetFindings accepts at most 50 ids
PERMISSIONS = Permissions(
    "intake",
    "triage",
    ("guardduty:ListDetectors", "guardduty:ListFindings", "guardduty:GetFindings"),
)
DEFAULT_LOOKBACK = dt.timedelta(hours=24)
_SORT = {"AttributeName": "updatedAt", "OrderBy": "ASC"}


@dataclass
class PollResult:
    region: str
    fetched: int = 0
    results: list[Ingested] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def cursor_name(region: str, detector_id: str) -> str:
    return f"guardduty.updated_at:{region}:{detector_id}"


def read_cursor(*, database: Database, name: str) -> int | None:
    """The last updatedAt seen, in epoch milliseconds."""
    with database.read_session() as session:
        row = session.get(Cursor, name)
        return int(row.value) if row else None


def poll_region(
    *,
    database: Database,
    client: Any,
    region: str,
    min_severity: float,
    channel_id: str | None = None,
    now: Callable[[], dt.datetime] | None = None,
    lookback: dt.timedelta = DEFAULT_LOOKBACK,
    on_recorded: Callable[[list[Ingested]], None] | None = None,
) -> PollResult:
    """Fetch and record every finding updated since the cursor, for each detector in region."""
    now = now or database.clock.now
    result = PollResult(region=region)
    for detector_id in _detectors(client):
        name = cursor_name(region, detector_id)
        since = read_cursor(database=database, name=name)
        if since is None:
            since = int((now() - lookback).timestamp() * 1000)
        for ids in _finding_id_pages(client, detector_id, since):
            response = client.get_findings(
                DetectorId=detector_id, FindingIds=ids, SortCriteria=_SORT
            )
            findings = _normalize_page(response, region, result)
            newest = max(
                (int(f.updated_at.timestamp() * 1000) for f in findings if f.updated_at),
                default=None,
            )
            with database.session() as session:
                recorded = record_findings(
                    session=session,
                    findings=findings,
                    min_severity=min_severity,
                    channel_id=channel_id,
                    now=now(),
                )
                if newest is not None:
                    _advance(session, name, newest)
            result.fetched += len(findings)
            result.results.extend(recorded)
            if on_recorded is not None:
                on_recorded(recorded)
    return result


def _normalize_page(response: Any, region: str, result: PollResult) -> list[NormalizedFinding]:
    """AWS's own answer: a finding we cannot read is logged and skipped, not retried forever."""
    findings = []
    for raw in response.get("Findings", []):
        try:
            findings.append(normalize_finding(raw, region=region))
        except BadFinding as exc:
            log.error("skipping unreadable GuardDuty finding in %s: %s", region, exc)
            result.errors.append(f"{raw.get('Id', '?')}: {exc}")
    return findings


def _detectors(client: Any) -> Iterator[str]:
    for page in client.get_paginator("list_detectors").paginate():
        yield from page.get("DetectorIds", [])


def _finding_id_pages(client: Any, detector_id: str, since_ms: int) -> Iterator[list[str]]:
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {
            "DetectorId": detector_id,
            "FindingCriteria": {"Criterion": {"updatedAt": {"GreaterThanOrEqual": since_ms}}},
            "SortCriteria": _SORT,
            "MaxResults": PAGE_SIZE,
        }
        if token:
            kwargs["NextToken"] = token
        page = client.list_findings(**kwargs)
        ids = page.get("FindingIds", [])
        if ids:
            yield ids
        token = page.get("NextToken")
        if not token:
            return


def _advance(session: Any, name: str, newest_ms: int) -> None:
    """Move the cursor forward only."""
    row = session.get(Cursor, name)
    if row is None:
        session.add(Cursor(name=name, value=str(newest_ms)))
    elif newest_ms > int(row.value):
        row.value = str(newest_ms)


def poll_all(
    *,
    database: Database,
    client_for: Callable[[str], Any],
    regions: list[str],
    min_severity: float,
    channel_id: str | None = None,
    on_recorded: Callable[[list[Ingested]], None] | None = None,
) -> list[PollResult]:
    """Poll every configured region; one region failing does not stop the others."""
    results = []
    for region in regions:
        try:
            results.append(
                poll_region(
                    database=database,
                    client=client_for(region),
                    region=region,
                    min_severity=min_severity,
                    channel_id=channel_id,
                    on_recorded=on_recorded,
                )
            )
        except Exception as exc:  # reported per region; the next poll retries from the cursor
            log.exception("GuardDuty polling failed in %s", region)
            results.append(PollResult(region=region, errors=[f"{type(exc).__name__}: {exc}"]))
    return results
