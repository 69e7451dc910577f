"""Typed access to `Incident.facts`: one JSON column, one section per feature.

Every feature reads and writes its section through the accessors here rather than juggling the
raw dict, so the sections' shapes are written down in one place and every write reassigns the
column (a JSON column does not notice in-place changes).

Sections: `guardduty` (the card's finding summary), `tags` / `tags_source` (the resource's
tags), `source` / `sample` (how the incident was opened), `not_automatic` (why the bot did not
act by itself), `impact`, `forensics` (the clean room), `wipe`, `abuse`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Generic, TypedDict, TypeVar, cast

from storage.models import Incident


class GuardDutyFacts(TypedDict, total=False):
    distinct: int  # distinct findings
    occurrences: int  # their summed counts
    findings: list[dict[str, Any]]  # the most severe, then latest, with their network facts
    counts: dict[str, int]  # finding id -> count, to tell which grew


class ImpactFacts(TypedDict, total=False):
    resource: dict[str, Any]  # id, kind, region
    computed_at: str
    tags: dict[str, str]  # labelled with the operator's tag names
    account: dict[str, Any]  # the account and its organizational units
    notes: list[str]  # what could not be read, and why
    # An instance:
    state: str | None
    instance_type: str | None
    availability_zone: str | None
    instance_profile: str
    public_ip: str
    network: dict[str, Any]  # its subnets' and security groups' neighbours
    # An access key:
    last_used: dict[str, Any]
    user: str | None
    attached_policies: list[str]
    groups: list[str]


class CleanRoomFacts(TypedDict, total=False):
    stack_name: str
    stack_id: str
    status: str
    instance_id: str
    volume_ids: list[str]
    error: str
    reason: str
    events: list[str]
    updated_at: str
    deleted_at: str
    region: str
    account_id: str | None  # where the stack is: the forensic account when there is one


class WipeFacts(TypedDict, total=False):
    deleted: list[dict[str, Any]]  # {type, id, at}
    failed: list[dict[str, Any]]  # the failure events' details
    kms_deletion: dict[str, Any]  # {key_id, deletion_date}


class AbuseFacts(TypedDict, total=False):
    reference: str
    case_id: str | None
    summary: str
    reported_by: str
    reported_at: str
    support_api: str  # created | existing | unavailable | ...
    support_message: str
    case_status: str | None
    answered_at: str | None
    answered_by: str | None


FactsSource = Incident | Mapping[str, Any] | None
S = TypeVar("S", bound=Mapping[str, Any])


def facts_of(source: FactsSource) -> Mapping[str, Any]:
    """The facts of an incident (or an already-read facts mapping), never None."""
    if isinstance(source, Incident):
        return source.facts or {}
    return source or {}


def _write(incident: Incident, **values: Any) -> None:
    incident.facts = {**(incident.facts or {}), **values}


class Section(Generic[S]):
    """One feature's section of the facts."""

    def __init__(self, key: str) -> None:
        self.key = key

    def get(self, source: FactsSource) -> S:
        """The section as stored ({} when absent); a copy, safe to change."""
        return cast(S, dict(facts_of(source).get(self.key) or {}))

    def present(self, source: FactsSource) -> bool:
        return bool(facts_of(source).get(self.key))

    def set(self, incident: Incident, value: S) -> None:
        _write(incident, **{self.key: dict(value)})

    def update(self, incident: Incident, **values: Any) -> S:
        """Merge `values` into the section and store it; returns the stored section."""
        merged = cast(S, {**self.get(incident), **values})
        self.set(incident, merged)
        return merged


GUARDDUTY: Section[GuardDutyFacts] = Section("guardduty")
IMPACT: Section[ImpactFacts] = Section("impact")
CLEAN_ROOM: Section[CleanRoomFacts] = Section("forensics")
WIPE: Section[WipeFacts] = Section("wipe")
ABUSE: Section[AbuseFacts] = Section("abuse")
NOT_AUTOMATIC: Section[dict[str, str]] = Section("not_automatic")  # what -> why not


def set_origin(incident: Incident, *, source: str, sample: bool, tags: Mapping[str, str]) -> None:
    """A new incident's first facts: where it came from (replaces any facts)."""
    incident.facts = {"source": source, "sample": sample, "tags": dict(tags)}


def is_sample(source: FactsSource) -> bool:
    return bool(facts_of(source).get("sample"))


def resource_tags(source: FactsSource) -> dict[str, str]:
    return dict(facts_of(source).get("tags") or {})


def tags_source(source: FactsSource) -> str | None:
    """Where the stored tags were read ("ec2", "iam", ...); None: not read from AWS yet."""
    value = facts_of(source).get("tags_source")
    return str(value) if value is not None else None


def set_resource_tags(incident: Incident, tags: Mapping[str, str], source: str) -> None:
    _write(incident, tags=dict(tags), tags_source=source)
