"""Containment plans: what a request will do, computed before anyone approves it.

A plan is stored on the request as JSON, so the approval card, the executor and a later
retry all see the same steps. Planning reads AWS (describe/get/list) and changes nothing.
`Engine` is the seam to containment/: `ContainmentEngine` drives its registry and executor;
tests can pass another.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from commands.errors import UserError
from commands.findings.errors import BadFinding
from commands.findings.normalize import normalize_finding
from containment.context import ActionContext, ClientHook
from containment.registry import PlannedCall, StepResult
from containment.targets import NAME_PATTERNS, Target, TargetKind, identify

_OTHER_AWS_ID = re.compile(r"^[a-z]{1,8}-[0-9a-f]{5,17}$")
# Ids of EC2 things /contain does not take, even when too short to be real (`sg-123`).
_EC2_ID_PREFIX = re.compile(
    r"^(?:sg|vol|snap|subnet|vpc|eni|ami|igw|rtb|acl|nat|eipalloc|pcx|tgw|vpce|lt)-[0-9a-f]+$"
)
_INCIDENT_KEY = re.compile(r"^INC-\d+$", re.IGNORECASE)
# Called from the executor's worker threads: (action name, "started" | "finished", result).
StepCallback = Callable[[str, str, StepResult | None], None]

DEFAULT_TAG_LABELS = {
    "name": "Name",
    "data_classification": "DataClassification",
    "criticality": "Criticality",
    "owner": "Owner",
    "application": "Application",
}


@dataclass(frozen=True)
class PlanCall:
    """One API call of a plan, as the card lists it. `params` are the parameters themselves,
    for `incident-bot plan --format asl` (commands/asl.py); None in plans stored before."""

    text: str
    service: str | None = None
    operation: str | None = None
    mutating: bool = True
    params: dict[str, Any] | None = None
    # The SDK's parameters where `params` only summarise them (PlannedCall.sdk).
    sdk: dict[str, Any] | None = None

    @classmethod
    def of(cls, call: PlannedCall) -> PlanCall:
        from containment.jsonsafe import jsonable

        return cls(
            str(call),
            call.service,
            call.operation,
            bool(call.mutating),
            jsonable(dict(call.params or {})),
            jsonable(dict(call.sdk)) if call.sdk is not None else None,
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "text": self.text,
            "service": self.service,
            "operation": self.operation,
            "mutating": self.mutating,
        }
        if self.params is not None:
            out["params"] = self.params
        if self.sdk is not None:
            out["sdk"] = self.sdk
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str) -> PlanCall:
        if isinstance(data, str):
            return cls(data)
        params = data.get("params")
        sdk = data.get("sdk")
        return cls(
            str(data.get("text") or ""),
            data.get("service"),
            data.get("operation"),
            bool(data.get("mutating", True)),
            dict(params) if params is not None else None,
            dict(sdk) if sdk is not None else None,
        )


@dataclass(frozen=True)
class PlanStep:
    action: str
    summary: str = ""
    mutating: bool = True
    depends_on: tuple[str, ...] = ()
    calls: tuple[PlanCall, ...] = ()
    permissions: tuple[str, ...] | None = None  # containment actions list theirs
    # Ordering only (containment actions' `after`), for commands/asl.py; None in plans
    # stored before, which asl looks up in the registry.
    after: tuple[str, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "action": self.action,
            "summary": self.summary,
            "mutating": self.mutating,
            "depends_on": list(self.depends_on),
        }
        if self.after is not None:
            out["after"] = list(self.after)
        if self.permissions is not None:
            out["permissions"] = list(self.permissions)
        out["calls"] = [c.to_json() for c in self.calls]
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PlanStep:
        permissions = data.get("permissions")
        after = data.get("after")
        return cls(
            action=str(data["action"]),
            summary=str(data.get("summary") or ""),
            mutating=bool(data.get("mutating", True)),
            depends_on=tuple(data.get("depends_on") or ()),
            calls=tuple(PlanCall.from_json(c) for c in data.get("calls") or ()),
            permissions=tuple(permissions) if permissions is not None else None,
            after=tuple(after) if after is not None else None,
        )


@dataclass(frozen=True)
class Plan:
    """What a request will do. Stored on the request as JSON (`to_json`); `extra` keeps the
    engine's own keys (the clean room's stack, the wipe's items, the request's target)."""

    steps: tuple[PlanStep, ...] = ()
    blast_radius: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def engine(self) -> str | None:
        """None for containment; the clean room's and the wipe's plans name theirs."""
        return self.extra.get("engine")

    @property
    def actions(self) -> list[str]:
        return [s.action for s in self.steps]

    def count_calls(self, *, mutating: bool | None = None) -> int:
        return sum(
            1
            for step in self.steps
            for call in step.calls
            if mutating is None or call.mutating == mutating
        )

    def with_steps(self, steps: Sequence[PlanStep]) -> Plan:
        return replace(self, steps=tuple(steps))

    def to_json(self) -> dict[str, Any]:
        return {
            **self.extra,
            "steps": [s.to_json() for s in self.steps],
            "blast_radius": dict(self.blast_radius),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Plan:
        data = data or {}
        return cls(
            steps=tuple(PlanStep.from_json(s) for s in data.get("steps") or ()),
            blast_radius=dict(data.get("blast_radius") or {}),
            extra={k: v for k, v in data.items() if k not in ("steps", "blast_radius")},
        )


class ContainmentOptions(Protocol):
    """The `containment:` configuration section (bot.settings.ContainmentConfig)."""

    evidence_bucket: str | None
    evidence_kms_key_id: str | None
    dry_run: bool
    isolation_group_name: str
    cross_account_role_name: str | None
    external_id: str | None


class ForensicOptions(Protocol):
    """The `forensics:` configuration section (bot.settings.ForensicsConfig)."""

    account_id: str | None
    role_name: str | None
    external_id: str | None
    evidence_bucket: str | None
    kms_key_id: str | None


class Engine(Protocol):
    """What the approval flow needs from containment/: typed plans and step results."""

    def plan(self, *, target: Target, ctx: ActionContext, include: Sequence[str] = ()) -> Plan: ...

    def plan_rollback(
        self, *, target: Target, ctx: ActionContext, previous: Sequence[StepResult]
    ) -> Plan: ...

    def run(
        self,
        *,
        target: Target,
        ctx: ActionContext,
        action_names: Sequence[str] | None,
        previous: Sequence[StepResult],
        on_step: StepCallback,
    ) -> list[StepResult]: ...

    def rollback(
        self,
        *,
        target: Target,
        ctx: ActionContext,
        previous: Sequence[StepResult],
        on_step: StepCallback,
    ) -> list[StepResult]: ...


def parse_target(
    resource_id: str,
    *,
    region: str | None = None,
    account_id: str | None = None,
    kind: TargetKind | None = None,
) -> Target:
    """A Target from what a responder typed (or a finding named, with its `kind`); UserError
    when it names nothing containable. An ARN's own region and account win."""
    found = identify(resource_id, kind=kind)
    if found is None:
        raise UserError(
            "{resource_id!r} is neither an instance id (i-0abc…), an access key "
            "id (AKIA…) nor an ARN: use /contain with one of those, or with user:NAME, "
            "role:NAME, bucket:NAME, lambda:NAME or rds:NAME.",
            resource_id=resource_id.strip()[:60],
        )
    region = found.region or default_region(region)
    return Target(
        kind=found.kind,
        resource_id=found.resource_id,
        region=region,
        account_id=found.account_id or account_id,
    )


def is_plain_name(text: str) -> bool:
    """A bare name (no id shape, no ARN, no `kind:`) that some kind's resource could have:
    which kind it is, AWS has to say (`resolve_kind`)."""
    text = text.strip()
    if _OTHER_AWS_ID.match(text) or _EC2_ID_PREFIX.match(text):  # sg-…, vol-…: not ours
        return False
    if _INCIDENT_KEY.match(text):  # an incident key where the resource belongs
        return False
    return identify(text) is None and any(p.match(text) for p in NAME_PATTERNS.values())


def default_region(region: str | None) -> str:
    return region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def check_identifier(text: str) -> None:
    """Validate what a responder typed before any work: UserError unless it is an id, an
    ARN, `kind:name`, or a plain name to look up."""
    if not is_plain_name(text):
        parse_target(text)


def resolve_kind(
    name: str, *, region: str, account_id: str | None, ctx: ActionContext
) -> TargetKind:
    """The one kind of resource `name` names in the account; UserError when none or several."""
    from containment.resolve import kinds_named

    found = kinds_named(name.strip(), region=region, account_id=account_id, ctx=ctx)
    if len(found) == 1:
        return found[0]
    forms = {k: typed_id(k, name.strip()) for k in found}
    if not found:
        raise UserError(
            "No IAM user, role, S3 bucket, Lambda function or RDS instance called "
            "{name!r} in {region}: check the name, or give its ARN.",
            name=name.strip()[:60],
            region=region,
        )
    raise UserError(
        "{name!r} names more than one resource; say which: {forms}.",
        name=name.strip()[:60],
        forms=", ".join(forms.values()),
    )


# How an incident records each target kind: GuardDuty's resourceType names where one exists.
RESOURCE_TYPES: dict[str, str] = {
    "instance": "Instance",
    "access_key": "AccessKey",
    "user": "IAMUser",
    "role": "IAMRole",
    "bucket": "S3Bucket",
    "function": "Lambda",
    "db_instance": "RDSDBInstance",
}
# GuardDuty resource types whose findings propose a plan of this kind.
FINDING_KINDS: dict[str, TargetKind] = {
    "Instance": "instance",
    "AccessKey": "access_key",
    "S3Bucket": "bucket",
    "Lambda": "function",
    "RDSDBInstance": "db_instance",
}


# The `kind:name` form /contain reads, for kinds whose plain names do not say what they are.
TYPED_PREFIX: dict[str, str] = {
    "user": "user",
    "role": "role",
    "bucket": "bucket",
    "function": "lambda",
    "db_instance": "rds",
}


def resource_type(target: Target) -> str:
    return RESOURCE_TYPES[target.kind]


def typed_id(kind: TargetKind, resource_id: str) -> str:
    """What to type after /contain to name this resource unambiguously."""
    prefix = TYPED_PREFIX.get(kind)
    return f"{prefix}:{resource_id}" if prefix else resource_id


def finding_principals(raw: Mapping[str, Any], account_id: str | None) -> tuple[str, ...]:
    """The principal ARNs a finding names as the actor (accessKeyDetails): what an S3 bucket's
    deny statement names. Empty when the finding names none, or not precisely enough."""
    try:
        finding = normalize_finding(raw)
    except BadFinding:
        return ()
    account = finding.account_id or account_id
    name, kind = finding.user_name, finding.user_type
    if not (account and name):
        return ()
    if kind == "IAMUser":
        return (f"arn:aws:iam::{account}:user/{name}",)
    if kind == "AssumedRole":
        return (f"arn:aws:iam::{account}:role/{name}",)  # every session of the role
    if kind == "Root":
        return (f"arn:aws:iam::{account}:root",)
    return ()


def finding_target_kind(resource_kind: str | None, user_type: str | None) -> TargetKind | None:
    """The plan a finding of this resource type proposes: assumed-role credentials are
    contained on their role (the key is temporary); None when nothing can be contained."""
    if resource_kind == "AccessKey" and user_type == "AssumedRole":
        return "role"
    if resource_kind == "AccessKey" and user_type == "Root":
        return None  # nothing automatic is possible for root
    return FINDING_KINDS.get(resource_kind or "")


def target_to_dict(target: Target) -> dict[str, Any]:
    return {
        "kind": target.kind,
        "resource_id": target.resource_id,
        "region": target.region,
        "account_id": target.account_id,
        "user_name": target.user_name,
        "principals": list(target.principals),
    }


def target_from_dict(data: Mapping[str, Any]) -> Target:
    return Target(
        kind=data["kind"],
        resource_id=data["resource_id"],
        region=data["region"],
        account_id=data.get("account_id"),
        user_name=data.get("user_name"),
        principals=tuple(data.get("principals") or ()),
    )


def action_context(
    *,
    incident_key: str,
    options: ContainmentOptions | None,
    dry_run: bool,
    now: Callable[[], dt.datetime],
    finding_id: str | None = None,
    client_hooks: Sequence[ClientHook] = (),
    forensics: ForensicOptions | None = None,
) -> ActionContext:
    """The ActionContext for one request, from the `containment:` settings."""
    ctx = ActionContext(
        incident_key=incident_key,
        now=now,
        finding_id=finding_id,
        dry_run=dry_run,
        client_hooks=tuple(client_hooks),
    )
    if options is not None:
        ctx.evidence_bucket = options.evidence_bucket
        ctx.evidence_kms_key_id = options.evidence_kms_key_id
        ctx.isolation_group_name = options.isolation_group_name
        ctx.examiner_cidrs = tuple(getattr(options, "examiner_cidrs", ()) or ())
        ctx.cross_account_role_name = options.cross_account_role_name
        ctx.external_id = options.external_id
        ctx.evidence_key_per_incident = getattr(options, "per_incident_kms_key", False)
        ctx.evidence_lock_mode = str(getattr(options, "evidence_lock_mode", "compliance")).upper()
        ctx.evidence_retention_days = int(getattr(options, "evidence_retention_days", 365))
    if forensics is not None and forensics.account_id:
        ctx.forensic_account_id = forensics.account_id
        ctx.forensic_role_name = forensics.role_name
        ctx.forensic_external_id = forensics.external_id
        ctx.forensic_kms_key_id = forensics.kms_key_id
        ctx.evidence_bucket = forensics.evidence_bucket or ctx.evidence_bucket
    return ctx


def blast_radius(
    facts: Mapping[str, Any], *, tag_labels: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """What else is affected if this resource is cut off: its tags and its attachments."""
    labels = dict(tag_labels or DEFAULT_TAG_LABELS)
    instance = facts.get("instance") or {}
    tags: dict[str, str] = dict(instance.get("tags") or facts.get("tags") or {})
    labelled = {label: tags[key] for label, key in labels.items() if key in tags}
    attached: list[str] = []
    asg = facts.get("asg")
    if asg:
        attached.append(
            f"Auto Scaling group {asg.get('name')} (desired {asg.get('desired')}, "
            f"min {asg.get('min')})"
        )
    for tg in facts.get("target_groups") or []:
        attached.append(f"ELBv2 target group {tg.get('name') or tg.get('arn')}")
    for lb in facts.get("classic_elbs") or []:
        attached.append(f"classic load balancer {lb.get('name')}")
    iam = facts.get("iam")
    if iam:
        roles = ", ".join(iam.get("roles") or []) or "no role"
        attached.append(f"instance profile {iam.get('profile_name')} ({roles})")
        # Containment denies the role's older sessions: whoever else runs as it loses them.
        for role, others in sorted((iam.get("shared_with") or {}).items()):
            attached.append(
                f"⚠ role {role} is shared: other instances using it lose their current "
                f"credentials too: {', '.join(others)}"
            )
        if iam.get("shared_check_error"):
            error = iam["shared_check_error"]
            attached.append(
                f"⚠ could not check which other instances use role(s) {roles}: "
                f"{error.get('code')} {error.get('message', '')}".rstrip()
            )
    enis = facts.get("enis") or []
    volumes = facts.get("volumes") or []
    if enis:
        attached.append(f"{len(enis)} network interface(s)")
    if volumes:
        attached.append(f"{len(volumes)} EBS volume(s)")
    if facts.get("user_name"):
        attached.append(f"IAM user {facts['user_name']}")
    # Other kinds' capture steps list what depends on the resource themselves.
    attached.extend(str(line) for line in facts.get("blast_radius") or [])
    return {
        "tags": tags,
        "labelled": labelled,
        "attached": attached,
        "state": instance.get("state"),
        "public_ip": instance.get("public_ip"),
        "vpc_id": instance.get("vpc_id"),
    }


def count_calls(plan: Mapping[str, Any] | Plan, *, mutating: bool | None = None) -> int:
    typed = plan if isinstance(plan, Plan) else Plan.from_json(plan)
    return typed.count_calls(mutating=mutating)
