"""Typed access to `Incident.facts`: one JSON column, one section per feature.

Every feature reads and writes its section through the accessors here rather than juggling the
raw dict, so the sections' shapes are written down in one place and every write reassigns the
column (a JSON column does not notice in-place changes).

Sections: `guardduty` (the card's finding summary), `tags` / `tags_source` (the resource's
tags), `source` / `sample` (how the incident was opened), `not_automatic` (why the bot did not
act by itself), `impact`, `forensics` (the clean room), `wipe`, `abuse`, `review` (the
post-incident review's answers).
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


class BucketImpact(TypedDict, total=False):
    region: str  # where the bucket lives (may differ from the finding's)
    public_access_block: dict[str, bool] | None  # the bucket's own settings; None: not set
    policy: str  # "public", "not public" or "none" (no bucket policy)
    versioning: str  # "Enabled", "Suspended" or "Off"
    mfa_delete: str | None
    object_lock: dict[str, Any]  # enabled, and any default retention (mode, days, years)
    encryption: dict[str, Any] | None  # default encryption: algorithm, kms_key, bucket_key


class FunctionImpact(TypedDict, total=False):
    runtime: str | None  # None for container-image functions
    package_type: str | None
    role: str | None  # the execution role's ARN
    last_modified: str | None
    vpc: dict[str, Any] | None  # vpc_id, subnets, security_groups; None: not in a VPC
    public_statements: list[str]  # resource-policy statements anyone may use (Sids)
    url_auth: str | None  # the function URL's auth type ("NONE" is public); None: no URL


class DbClusterImpact(TypedDict, total=False):
    id: str
    members: list[str]
    writer: str | None
    encrypted: bool | None
    security_groups: list[str]


class DatabaseImpact(TypedDict, total=False):
    engine: str | None
    engine_version: str | None
    instance_class: str | None
    status: str | None
    publicly_accessible: bool | None
    encrypted: bool | None
    multi_az: bool | None
    security_groups: list[str]
    cluster: DbClusterImpact | None  # the cluster it belongs to, if any


class ShardGroupImpact(TypedDict, total=False):
    id: str
    status: str | None
    publicly_accessible: bool | None
    max_acu: float | None
    min_acu: float | None
    compute_redundancy: int | None
    cluster: DbClusterImpact | None


class EksImpact(TypedDict, total=False):
    version: str | None
    status: str | None
    endpoint_public: bool | None
    endpoint_private: bool | None
    public_cidrs: list[str]
    vpc_id: str | None
    security_groups: list[str]
    nodegroup_count: int
    nodegroups: list[str]  # the first MAX_LISTED names


class EcsImpact(TypedDict, total=False):
    status: str | None
    active_services: int | None
    running_tasks: int | None
    pending_tasks: int | None
    container_instances: int | None


class RoleInstancesImpact(TypedDict, total=False):
    region: str  # instance-profile associations are regional: only this region was read
    count: int
    instances: list[dict[str, Any]]  # id, state, tags (labelled); the first MAX_LISTED


class ImpactFacts(TypedDict, total=False):
    resource: dict[str, Any]  # id, kind, type (GuardDuty's resource type), region
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
    attached_policies: list[str]  # a user's or a role's
    groups: list[str]
    # An IAM user (besides user, attached_policies, groups): its access keys (id, status, created).
    access_keys: list[dict[str, Any]]
    # An IAM role: its instance profiles and the EC2 instances that use them.
    role: str
    instance_profiles: list[str]
    role_instances: RoleInstancesImpact
    # The other resource types, one section each.
    bucket: BucketImpact
    function: FunctionImpact
    database: DatabaseImpact
    shard_group: ShardGroupImpact
    eks_cluster: EksImpact
    ecs_cluster: EcsImpact


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


class ReviewFacts(TypedDict, total=False):
    summary: str
    root_cause: str
    went_well: str
    to_improve: str
    lessons: str
    reviewed_by: str
    reviewed_at: str


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
REVIEW: Section[ReviewFacts] = Section("review")
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
