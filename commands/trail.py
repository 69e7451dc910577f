"""`/incident trail <instance-id|access-key-id> [hours]`: recent CloudTrail activity.

`lookup_events` returns the newest events first, 50 a page, and is limited to 2 requests a
second per account and region, so the lookup is capped (`MAX_EVENTS`) and says when it was
cut. Access-key lookups also read us-east-1, where IAM and STS (global services) log.
The result holds a short summary for the card, every event as a row for the attached file,
and one timeline event recording what was looked at.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError
from sqlalchemy.orm import Session

from commands.errors import UserError
from commands.incidents import find_open_for_resource, get_incident
from containment.capabilities import Permissions
from containment.context import ActionContext
from containment.errors import error_code
from containment.targets import Target, kind_of
from storage.db import Database
from storage.models import Incident
from storage.timeline import append_event

DEFAULT_HOURS = 24
PERMISSIONS = Permissions("trail", "triage", ("cloudtrail:LookupEvents",))
MAX_HOURS = 90 * 24  # CloudTrail event history keeps 90 days
MAX_EVENTS = 2000
PAGE_SIZE = 50  # lookup_events' maximum
TABLE_ROWS = 15
GLOBAL_REGION = "us-east-1"
CSV_COLUMNS = (
    "time",
    "region",
    "event_name",
    "event_source",
    "principal",
    "access_key_id",
    "source_ip",
    "user_agent",
    "error_code",
    "read_only",
    "resources",
    "event_id",
)


@dataclass
class TrailResult:
    resource_id: str
    kind: str
    hours: float
    start: dt.datetime
    end: dt.datetime
    regions: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)  # newest first
    truncated: bool = False

    @property
    def summary(self) -> dict[str, Any]:
        names = Counter(r["event_name"] for r in self.rows)
        ips = Counter(r["source_ip"] for r in self.rows if r["source_ip"])
        principals = Counter(r["principal"] for r in self.rows if r["principal"])
        errors = Counter(r["error_code"] for r in self.rows if r["error_code"])
        writes = sum(1 for r in self.rows if r["read_only"] == "false")
        return {
            "resource_id": self.resource_id,
            "hours": self.hours,
            "regions": self.regions,
            "events": len(self.rows),
            "truncated": self.truncated,
            "writes": writes,
            "first": self.rows[-1]["time"] if self.rows else None,
            "last": self.rows[0]["time"] if self.rows else None,
            "top_events": names.most_common(8),
            "source_ips": ips.most_common(8),
            "principals": principals.most_common(5),
            "errors": errors.most_common(5),
        }

    def table(self, limit: int = TABLE_ROWS) -> list[dict[str, Any]]:
        return self.rows[:limit]

    def headline(self) -> str:
        s = self.summary
        text = (
            f"CloudTrail for {self.resource_id}: {s['events']}"
            f"{'+' if self.truncated else ''} events in the last {_hours(self.hours)}"
            f" ({s['writes']} writes, {sum(n for _, n in s['errors'])} errors)"
        )
        if s["top_events"]:
            text += "; most frequent: " + ", ".join(f"{n} ({c})" for n, c in s["top_events"][:3])
        return text

    def to_csv(self) -> str:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for row in self.rows:
            writer.writerow(row)
        return buf.getvalue()

    def filename(self) -> str:
        return f"cloudtrail-{self.resource_id}-{self.end:%Y%m%dT%H%MZ}.csv"


def _hours(hours: float) -> str:
    return f"{hours:g} h"


def parse_args(text: str) -> tuple[str, float]:
    """`<instance-id|access-key-id> [hours]` -> (resource id, hours)."""
    parts = text.split()
    if not parts or len(parts) > 2:
        raise UserError("Usage: /incident trail <instance-id|access-key-id> [hours], e.g. 48.")
    resource_id = parts[0]
    if kind_of(resource_id) is None:
        raise UserError(
            "{resource_id} is neither an instance id (i-…) nor an access key id (AKIA…/ASIA…).",
            resource_id=resource_id,
        )
    hours = float(DEFAULT_HOURS)
    if len(parts) == 2:
        try:
            hours = float(parts[1].lower().removesuffix("h"))
        except ValueError:
            raise UserError(
                "{hours} is not a number of hours: try 24 or 72.", hours=parts[1]
            ) from None
        if not 0 < hours <= MAX_HOURS:
            raise UserError(f"Hours must be between 1 and {MAX_HOURS} (CloudTrail keeps 90 days).")
    return resource_id, hours


def _row(event: dict[str, Any], region: str) -> dict[str, Any]:
    try:
        detail = json.loads(event.get("CloudTrailEvent") or "{}")
    except ValueError:
        detail = {}
    identity = detail.get("userIdentity") or {}
    principal = event.get("Username") or identity.get("arn") or identity.get("type") or ""
    resources = ";".join(
        r.get("ResourceName", "") for r in event.get("Resources") or [] if r.get("ResourceName")
    )
    at = event["EventTime"]
    if isinstance(at, dt.datetime):
        at = at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "time": str(at),
        "region": detail.get("awsRegion") or region,
        "event_name": event.get("EventName", ""),
        "event_source": event.get("EventSource", ""),
        "principal": principal,
        "access_key_id": event.get("AccessKeyId") or identity.get("accessKeyId") or "",
        "source_ip": detail.get("sourceIPAddress", ""),
        "user_agent": (detail.get("userAgent") or "")[:200],
        "error_code": detail.get("errorCode") or "",
        "read_only": str(event.get("ReadOnly", detail.get("readOnly", ""))).lower(),
        "resources": resources,
        "event_id": event.get("EventId", ""),
    }


def lookup(
    *,
    clients: dict[str, Any],
    resource_id: str,
    hours: float,
    now: Callable[[], dt.datetime],
    max_events: int = MAX_EVENTS,
) -> TrailResult:
    """Look the resource up in each region's CloudTrail event history, newest first overall."""
    kind = kind_of(resource_id)
    if kind is None:
        raise UserError(
            "{resource_id} is neither an instance id nor an access key id.", resource_id=resource_id
        )
    end = now()
    start = end - dt.timedelta(hours=hours)
    attribute = "AccessKeyId" if kind == "access_key" else "ResourceName"
    result = TrailResult(
        resource_id=resource_id,
        kind=kind,
        hours=hours,
        start=start,
        end=end,
        regions=list(clients),
    )
    rows: list[dict[str, Any]] = []
    for region, client in clients.items():
        pages = client.get_paginator("lookup_events").paginate(
            LookupAttributes=[{"AttributeKey": attribute, "AttributeValue": resource_id}],
            StartTime=start,
            EndTime=end,
            PaginationConfig={"PageSize": PAGE_SIZE},
        )
        taken = 0
        for page in pages:
            for event in page.get("Events", []):
                if taken >= max_events:
                    result.truncated = True
                    break
                rows.append(_row(event, region))
                taken += 1
            if result.truncated:
                break
    # One region's pages are already newest first; merging regions needs a sort.
    rows.sort(key=lambda r: r["time"], reverse=True)
    if len(rows) > max_events:
        rows, result.truncated = rows[:max_events], True
    result.rows = rows
    return result


def regions_for(resource_id: str, region: str) -> list[str]:
    regions = [region]
    if kind_of(resource_id) == "access_key" and region != GLOBAL_REGION:
        regions.append(GLOBAL_REGION)
    return regions


def resolve_incident(*, session: Session, incident_key: str | None, resource_id: str) -> Incident:
    """The implied incident, else the open one about this resource."""
    if incident_key:
        return get_incident(session=session, key=incident_key)
    incident = find_open_for_resource(session=session, resource_id=resource_id)
    if incident is None:
        raise UserError(
            "No open incident names {resource_id}: run /incident trail in the incident's "
            "channel or thread.",
            resource_id=resource_id,
        )
    return incident


def record_lookup(*, session: Session, incident: Incident, result: TrailResult, actor: str) -> None:
    summary = result.summary
    append_event(
        session=session,
        incident=incident,
        actor=actor,
        kind="trail.lookup",
        summary=result.headline(),
        details={
            **summary,
            "start": result.start.isoformat(),
            "end": result.end.isoformat(),
            # Enough to find each event again in CloudTrail without storing them all twice.
            "event_ids": [r["event_id"] for r in result.rows[:200]],
        },
    )


def run_trail(
    *,
    db: Database,
    ctx: ActionContext,
    incident_key: str | None,
    resource_id: str,
    hours: float,
    actor: str,
    default_region: str = GLOBAL_REGION,
    now: Callable[[], dt.datetime] | None = None,
) -> tuple[str, TrailResult]:
    """Look up, record on the incident's timeline, return (incident key, result)."""
    now = now or ctx.now
    with db.read_session() as session:
        incident = resolve_incident(
            session=session, incident_key=incident_key, resource_id=resource_id
        )
        key, region, account_id = (
            incident.key,
            incident.region or default_region,
            incident.account_id,
        )
    clients = {
        r: ctx.client(
            "cloudtrail", Target(kind_of(resource_id) or "instance", resource_id, r, account_id)
        )
        for r in regions_for(resource_id, region)
    }
    try:
        result = lookup(clients=clients, resource_id=resource_id, hours=hours, now=now)
    except ClientError as exc:
        if error_code(exc) in ("AccessDenied", "AccessDeniedException", "UnauthorizedOperation"):
            raise UserError(
                "The bot may not read CloudTrail in {regions} "
                "(cloudtrail:LookupEvents denied): grant it (see `incident-bot policy`).",
                regions=", ".join(clients),
            ) from None
        raise
    with db.session() as session:
        incident = get_incident(session=session, key=key, for_update=True)
        record_lookup(session=session, incident=incident, result=result, actor=actor)
    return key, result


def iter_table(result: TrailResult) -> Iterable[tuple[str, ...]]:
    """Rows for a fixed-width table: time, event, principal, source IP, error."""
    for r in result.table():
        principal = r["principal"].rsplit("/", 1)[-1] if r["principal"] else "-"
        yield (
            r["time"][5:16].replace("T", " "),
            r["event_name"],
            principal[:24],
            r["source_ip"][:20] or "-",
            r["error_code"] or "",
        )
