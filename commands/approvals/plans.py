"""Containment plans: what a request will do, computed before anyone approves it.

A plan is stored on the request as JSON, so the approval card, the executor and a later
retry all see the same steps. Planning reads AWS (describe/get/list) and changes nothing.
`Engine` is the seam to containment/: `ContainmentEngine` drives its registry and executor;
tests can pass another.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from commands.errors import UserError
from containment.context import ActionContext, ClientHook
from containment.registry import PlannedCall, StepResult
from containment.targets import Target, kind_of

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
    """One API call of a plan, as the card lists it."""

    text: str
    service: str | None = None
    operation: str | None = None
    mutating: bool = True

    @classmethod
    def of(cls, call: PlannedCall) -> PlanCall:
        return cls(str(call), call.service, call.operation, bool(call.mutating))

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "service": self.service,
            "operation": self.operation,
            "mutating": self.mutating,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str) -> PlanCall:
        if isinstance(data, str):
            return cls(data)
        return cls(
            str(data.get("text") or ""),
            data.get("service"),
            data.get("operation"),
            bool(data.get("mutating", True)),
        )


@dataclass(frozen=True)
class PlanStep:
    action: str
    summary: str = ""
    mutating: bool = True
    depends_on: tuple[str, ...] = ()
    calls: tuple[PlanCall, ...] = ()
    permissions: tuple[str, ...] | None = None  # containment actions list theirs

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "action": self.action,
            "summary": self.summary,
            "mutating": self.mutating,
            "depends_on": list(self.depends_on),
        }
        if self.permissions is not None:
            out["permissions"] = list(self.permissions)
        out["calls"] = [c.to_json() for c in self.calls]
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PlanStep:
        permissions = data.get("permissions")
        return cls(
            action=str(data["action"]),
            summary=str(data.get("summary") or ""),
            mutating=bool(data.get("mutating", True)),
            depends_on=tuple(data.get("depends_on") or ()),
            calls=tuple(PlanCall.from_json(c) for c in data.get("calls") or ()),
            permissions=tuple(permissions) if permissions is not None else None,
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


class Engine(Protocol):
    """What the approval flow needs from containment/: typed plans and step results."""

    def plan(self, *, target: Target, ctx: ActionContext) -> Plan: ...

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
    resource_id: str, *, region: str | None = None, account_id: str | None = None
) -> Target:
    """A Target from what a responder typed; UserError when it names neither kind."""
    resource_id = resource_id.strip()
    kind = kind_of(resource_id)
    if kind is None:
        raise UserError(
            f"{resource_id[:60]!r} is neither an instance id (i-0abc…) nor an access key id "
            "(AKIA…): use /contain <instance-id|access-key-id> [INC-N] [reason]."
        )
    region = region or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return Target(kind=kind, resource_id=resource_id, region=region, account_id=account_id)


def target_to_dict(target: Target) -> dict[str, Any]:
    return {
        "kind": target.kind,
        "resource_id": target.resource_id,
        "region": target.region,
        "account_id": target.account_id,
        "user_name": target.user_name,
    }


def target_from_dict(data: Mapping[str, Any]) -> Target:
    return Target(
        kind=data["kind"],
        resource_id=data["resource_id"],
        region=data["region"],
        account_id=data.get("account_id"),
        user_name=data.get("user_name"),
    )


def action_context(
    *,
    incident_key: str,
    options: ContainmentOptions | None,
    dry_run: bool,
    now: Callable[[], dt.datetime],
    finding_id: str | None = None,
    client_hooks: Sequence[ClientHook] = (),
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
        ctx.cross_account_role_name = options.cross_account_role_name
        ctx.external_id = options.external_id
        ctx.evidence_key_per_incident = getattr(options, "per_incident_kms_key", False)
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
    enis = facts.get("enis") or []
    volumes = facts.get("volumes") or []
    if enis:
        attached.append(f"{len(enis)} network interface(s)")
    if volumes:
        attached.append(f"{len(volumes)} EBS volume(s)")
    if facts.get("user_name"):
        attached.append(f"IAM user {facts['user_name']}")
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
