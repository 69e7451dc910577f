"""`/forensics [INC-N]` and `/forensics teardown [INC-N]`: the forensic clean room.

The clean room is the CloudFormation stack in deploy/forensics-cleanroom.yml: an isolated VPC
with SSM endpoints and the incident's snapshots restored as volumes on a forensic instance.
Creating and deleting it are approval-gated like containment: `propose_*` plans (reads only)
and records a request through commands.approvals; after approval the approval executor runs
`CleanRoomEngine`, which reports each stack resource as a step, so the card shows the
stack's events as live progress. The stack's state is kept in `incident.facts["forensics"]`
for the incident card.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError
from sqlalchemy import select
from sqlalchemy.orm import Session

from commands.approvals.plans import StepCallback
from commands.approvals.requests import request_containment, running_plan
from commands.errors import UserError
from commands.incidents import get_incident
from containment.capabilities import Permissions
from containment.context import ActionContext
from containment.errors import error_record
from containment.tags import INCIDENT_TAG, tag_dict, tag_list
from containment.targets import Target
from storage.db import Database
from storage.facts import CLEAN_ROOM
from storage.models import ContainmentRequest, Incident

ENGINE = "forensics"
TARGET_KIND = "clean_room"
STACK_PREFIX = "incident-bot-forensics-"
TEMPLATE_NAME = "forensics-cleanroom.yml"
MAX_SNAPSHOTS = 4  # volume slots in the template
DEVICES = ("/dev/sdf", "/dev/sdg", "/dev/sdh", "/dev/sdi")
POLL_SECONDS = 5.0
TIMEOUT = dt.timedelta(minutes=30)

# CloudFormation creates the clean room with the caller's permissions (no service role), so
# the caller needs what the template's resources need, create and delete.
CLEAN_ROOM_STACK = (
    "ec2:CreateVpc",
    "ec2:DeleteVpc",
    "ec2:ModifyVpcAttribute",
    "ec2:DescribeVpcs",
    "ec2:CreateSubnet",
    "ec2:DeleteSubnet",
    "ec2:DescribeSubnets",
    "ec2:CreateSecurityGroup",
    "ec2:DeleteSecurityGroup",
    "ec2:DescribeSecurityGroups",
    "ec2:AuthorizeSecurityGroupIngress",
    "ec2:AuthorizeSecurityGroupEgress",
    "ec2:RevokeSecurityGroupEgress",
    "ec2:CreateVpcEndpoint",
    "ec2:DeleteVpcEndpoints",
    "ec2:DescribeVpcEndpoints",
    "ec2:RunInstances",
    "ec2:TerminateInstances",
    "ec2:CreateVolume",
    "ec2:DeleteVolume",
    "ec2:AttachVolume",
    "ec2:DetachVolume",
    "ec2:DescribeVolumes",
    "ec2:CreateTags",
    "iam:CreateRole",
    "iam:DeleteRole",
    "iam:GetRole",
    "iam:TagRole",
    "iam:AttachRolePolicy",
    "iam:DetachRolePolicy",
    "iam:CreateInstanceProfile",
    "iam:DeleteInstanceProfile",
    "iam:GetInstanceProfile",
    "iam:AddRoleToInstanceProfile",
    "iam:RemoveRoleFromInstanceProfile",
    "iam:PassRole",
    # Volumes restored from snapshots encrypted with a customer-managed key.
    "kms:CreateGrant",
    "kms:Decrypt",
    "kms:DescribeKey",
    "kms:GenerateDataKeyWithoutPlaintext",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
)
PERMISSIONS = Permissions(
    "forensics",
    "forensics",
    (
        "ec2:DescribeSnapshots",
        "ec2:DescribeInstances",
        "ec2:DescribeAvailabilityZones",
        "cloudformation:CreateStack",
        "cloudformation:DeleteStack",
        "cloudformation:DescribeStacks",
        "cloudformation:DescribeStackEvents",
        *CLEAN_ROOM_STACK,
    ),
)
LIVE_REQUEST = ("pending", "approved", "running")
_DONE = {"CREATE_COMPLETE", "DELETE_COMPLETE", "UPDATE_COMPLETE"}
_FAILED = {
    "CREATE_FAILED",
    "ROLLBACK_COMPLETE",
    "ROLLBACK_FAILED",
    "DELETE_FAILED",
    "UPDATE_ROLLBACK_COMPLETE",
    "UPDATE_ROLLBACK_FAILED",
}


def stack_name(incident_key: str) -> str:
    return STACK_PREFIX + incident_key.lower()


def template_body() -> str:
    """The template from the source tree, or from deploy/ under the working directory."""
    for base in (Path(__file__).resolve().parents[1], Path.cwd()):
        path = base / "deploy" / TEMPLATE_NAME
        if path.is_file():
            return path.read_text()
    raise UserError(
        f"The clean-room template deploy/{TEMPLATE_NAME} is missing from this installation: "
        "run the bot from the repository root or copy deploy/ next to it."
    )


def subnet_cidr(vpc_cidr: str) -> str:
    """The clean room's one subnet: the first /24 of the VPC (the VPC itself when smaller)."""
    try:
        net = ipaddress.ip_network(vpc_cidr, strict=True)
    except ValueError:
        raise UserError(
            f"forensics.vpc_cidr {vpc_cidr!r} is not a network like 10.99.0.0/16."
        ) from None
    if not 16 <= net.prefixlen <= 24 or net.version != 4:
        raise UserError("forensics.vpc_cidr must be an IPv4 network from /16 to /24.")
    return str(next(net.subnets(new_prefix=24)) if net.prefixlen < 24 else net)


# -- planning ------------------------------------------------------------------------------


@dataclass
class Scope:
    """Where the incident lives in AWS (read from the incident row)."""

    incident_key: str
    region: str
    account_id: str | None
    resource_id: str | None

    def target(self) -> Target:
        return Target(
            kind=TARGET_KIND,  # type: ignore[arg-type]  # not a containment target kind
            resource_id=stack_name(self.incident_key),
            region=self.region,
            account_id=self.account_id,
        )


def scope_of(incident: Incident, default_region: str) -> Scope:
    return Scope(
        incident.key, incident.region or default_region, incident.account_id, incident.resource_id
    )


def incident_snapshots(ec2: Any, incident_key: str) -> list[dict[str, Any]]:
    """Snapshots the incident's containment took (tagged with its key), oldest first."""
    pages = ec2.get_paginator("describe_snapshots").paginate(
        OwnerIds=["self"], Filters=[{"Name": f"tag:{INCIDENT_TAG}", "Values": [incident_key]}]
    )
    snaps = [s for page in pages for s in page["Snapshots"]]
    snaps.sort(
        key=lambda s: (
            s.get("StartTime") or dt.datetime.min.replace(tzinfo=dt.UTC),
            s["SnapshotId"],
        )
    )
    return [
        {
            "id": s["SnapshotId"],
            "volume_id": s.get("VolumeId"),
            "size": int(s.get("VolumeSize") or 1),
            "state": s.get("State"),
            "encrypted": bool(s.get("Encrypted")),
        }
        for s in snaps
    ]


def _availability_zone(ec2: Any, scope: Scope) -> str:
    """The compromised instance's zone (snapshots restore anywhere, but keep it close)."""
    if scope.resource_id and scope.resource_id.startswith("i-"):
        try:
            for r in ec2.describe_instances(InstanceIds=[scope.resource_id])["Reservations"]:
                for i in r["Instances"]:
                    return str(i["Placement"]["AvailabilityZone"])
        except ClientError:
            pass
    zones = ec2.describe_availability_zones(Filters=[{"Name": "state", "Values": ["available"]}])[
        "AvailabilityZones"
    ]
    if not zones:
        raise UserError(f"No available availability zone in {scope.region}.")
    return str(sorted(z["ZoneName"] for z in zones)[0])


def existing_stack(cfn: Any, name: str) -> dict[str, Any] | None:
    try:
        stacks = cfn.describe_stacks(StackName=name)["Stacks"]
    except ClientError as exc:
        if "does not exist" in str(exc):
            return None
        raise
    live = [s for s in stacks if s["StackStatus"] != "DELETE_COMPLETE"]
    return live[0] if live else None


def plan_create(
    *,
    ctx: ActionContext,
    scope: Scope,
    vpc_cidr: str,
    ami_id: str | None,
    instance_type: str,
) -> dict[str, Any]:
    """The clean-room plan: every parameter and the one CreateStack call. Reads only."""
    if not ami_id:
        raise UserError(
            "Set forensics.ami_id in the configuration to your forensic workstation AMI first."
        )
    target = scope.target()
    ec2 = ctx.client("ec2", target)
    cfn = ctx.client("cloudformation", target)
    name = stack_name(scope.incident_key)
    found = existing_stack(cfn, name)
    if found is not None:
        raise UserError(
            f"{scope.incident_key} already has a clean room ({name}, "
            f"{found['StackStatus']}): use /forensics teardown first."
        )
    snaps = incident_snapshots(ec2, scope.incident_key)
    ready = [s for s in snaps if s["state"] == "completed"]
    if not ready:
        if snaps:
            raise UserError(
                f"{scope.incident_key}'s snapshots are still being taken: try again in a few "
                "minutes."
            )
        raise UserError(
            f"{scope.incident_key} has no snapshots yet: contain the instance first "
            "(/contain <instance-id>), which snapshots its volumes."
        )
    used, left_out = ready[:MAX_SNAPSHOTS], ready[MAX_SNAPSHOTS:]
    zone = _availability_zone(ec2, scope)
    params: dict[str, str] = {
        "IncidentKey": scope.incident_key,
        "VpcCidr": vpc_cidr,
        "SubnetCidr": subnet_cidr(vpc_cidr),
        "AmiId": ami_id,
        "InstanceType": instance_type,
        "AvailabilityZone": zone,
    }
    for n, snap in enumerate(used, 1):
        params[f"SnapshotId{n}"] = snap["id"]
        params[f"VolumeSize{n}"] = str(snap["size"])
    calls = [
        {
            "text": f"cloudformation.CreateStack(StackName={name}, "
            f"TemplateBody=deploy/{TEMPLATE_NAME}, Capabilities=[CAPABILITY_IAM])",
            "service": "cloudformation",
            "operation": "CreateStack",
            "mutating": True,
        },
        {
            "text": "cloudformation.DescribeStackEvents (polled until the stack is complete)",
            "service": "cloudformation",
            "operation": "DescribeStackEvents",
            "mutating": False,
        },
    ]
    volumes = [
        f"{snap['id']} ({snap['size']} GiB{', encrypted' if snap['encrypted'] else ''}) → "
        f"{DEVICES[n]}"
        for n, snap in enumerate(used)
    ]
    radius: dict[str, Any] = {
        # Shown as the card's headline facts (there are no resource tags to show here).
        "labelled": {"builds": f"an isolated clean room for {scope.incident_key}"},
        "attached": [
            f"isolated VPC {vpc_cidr} in {zone}: no internet gateway, SSM endpoints only",
            f"forensic instance {ami_id} ({instance_type})",
            *[f"restore {v}" for v in volumes],
        ],
    }
    if left_out:
        radius["note"] = (
            f"{len(left_out)} more snapshot(s) not attached (the template has "
            f"{MAX_SNAPSHOTS} slots): " + ", ".join(s["id"] for s in left_out)
        )
    return {
        "engine": ENGINE,
        "operation": "create",
        "stack_name": name,
        "parameters": params,
        "snapshots": used,
        "steps": [
            {
                "action": "create_stack",
                "summary": "Build the clean room (stack resources report below as they finish)",
                "mutating": True,
                "depends_on": [],
                "calls": calls,
            }
        ],
        "blast_radius": radius,
    }


def plan_teardown(*, ctx: ActionContext, scope: Scope) -> dict[str, Any]:
    target = scope.target()
    cfn = ctx.client("cloudformation", target)
    name = stack_name(scope.incident_key)
    found = existing_stack(cfn, name)
    if found is None:
        raise UserError(f"{scope.incident_key} has no clean room to tear down.")
    check_owned(found, scope.incident_key)
    return {
        "engine": ENGINE,
        "operation": "teardown",
        "stack_name": name,
        "stack_id": found["StackId"],
        "steps": [
            {
                "action": "delete_stack",
                "summary": "Delete the clean room: instance, restored volumes, VPC "
                "(the snapshots stay)",
                "mutating": True,
                "depends_on": [],
                "calls": [
                    {
                        "text": f"cloudformation.DeleteStack(StackName={found['StackId']})",
                        "service": "cloudformation",
                        "operation": "DeleteStack",
                        "mutating": True,
                    }
                ],
            }
        ],
        "blast_radius": {
            "labelled": {"deletes": "the clean room; the snapshots stay"},
            "attached": [f"stack {name} ({found['StackStatus']})"],
        },
    }


def check_owned(stack: Mapping[str, Any], incident_key: str) -> None:
    """Refuse to touch a stack this incident did not create (its tag says who did)."""
    if tag_dict(stack.get("Tags")).get(INCIDENT_TAG) != incident_key:
        raise UserError(
            f"Stack {stack.get('StackName')} does not carry the {INCIDENT_TAG}={incident_key} "
            "tag, so incident-bot will not delete it; remove it by hand if it is yours."
        )


# -- requesting ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Proposed:
    request_id: int
    created: bool
    incident_key: str


def _live(session: Session, target_id: str, kind: str) -> ContainmentRequest | None:
    return session.scalars(
        select(ContainmentRequest)
        .where(
            ContainmentRequest.target_id == target_id,
            ContainmentRequest.kind == kind,
            ContainmentRequest.status.in_(LIVE_REQUEST),
        )
        .order_by(ContainmentRequest.id.desc())
    ).first()


def propose(
    *,
    db: Database,
    ctx: ActionContext,
    incident_key: str,
    teardown: bool,
    requested_by: str,
    expire_after: dt.timedelta,
    vpc_cidr: str = "10.99.0.0/16",
    ami_id: str | None = None,
    instance_type: str = "t3.medium",
    default_region: str = "us-east-1",
    dry_run: bool = False,
) -> Proposed:
    """Plan (reads AWS, no transaction open) and record an approval-gated request."""
    kind = "forensics_teardown" if teardown else "forensics"
    with db.read_session() as session:
        incident = get_incident(session=session, key=incident_key)
        if not teardown and incident.status == "closed":
            raise UserError(f"{incident.key} is closed; a clean room is for live investigations.")
        scope = scope_of(incident, default_region)
        live = _live(session, stack_name(incident.key), kind)
        if live is not None:
            return Proposed(live.id, False, incident.key)
    if teardown:
        plan = plan_teardown(ctx=ctx, scope=scope)
    else:
        plan = plan_create(
            ctx=ctx, scope=scope, vpc_cidr=vpc_cidr, ami_id=ami_id, instance_type=instance_type
        )
    with db.session() as session:
        incident = get_incident(session=session, key=incident_key, for_update=True)
        live = _live(session, stack_name(incident.key), kind)
        if live is not None:
            return Proposed(live.id, False, incident.key)
        created = request_containment(
            session=session,
            incident=incident,
            target=scope.target(),
            plan=plan,
            requested_by=requested_by,
            reason="tear down the forensic clean room" if teardown else "forensic clean room",
            expire_after=expire_after,
            dry_run=dry_run,
            kind=kind,
        )
        return Proposed(created.request.id, created.created, incident.key)


# -- running -------------------------------------------------------------------------------


def step_result(
    at: dt.datetime, action: str, status: str, *, note: str | None = None, **extra: Any
) -> dict:
    """A step result dict as the approval executor records it."""
    now = at.isoformat()
    return {
        "action": action,
        "status": status,
        "note": note,
        "started_at": now,
        "finished_at": now,
        "changes": {},
        "evidence": {},
        **extra,
    }


def _resource_note(event: Mapping[str, Any]) -> str:
    return f"{event.get('ResourceType')} {event.get('PhysicalResourceId') or ''}".strip()


def _event_line(e: Mapping[str, Any]) -> str:
    at = e["Timestamp"]
    stamp = at.strftime("%H:%M:%S") if isinstance(at, dt.datetime) else str(at)
    line = f"{stamp} {e['LogicalResourceId']} {e['ResourceStatus']}"
    if e.get("ResourceStatusReason"):
        line += f": {e['ResourceStatusReason']}"
    return line[:300]


class StackWatcher:
    """Follows a stack's events, oldest first, each reported once."""

    def __init__(self, cfn: Any, stack_id: str) -> None:
        self.cfn = cfn
        self.stack_id = stack_id
        self.seen: set[str] = set()

    def prime(self) -> None:
        """Mark every event so far as seen (a teardown reports only its own events)."""
        self.new_events()

    def new_events(self) -> list[dict[str, Any]]:
        fresh: list[dict[str, Any]] = []
        pages = self.cfn.get_paginator("describe_stack_events").paginate(StackName=self.stack_id)
        for page in pages:  # newest first; stop at the first page of known events
            batch = [e for e in page["StackEvents"] if e["EventId"] not in self.seen]
            fresh.extend(batch)
            if len(batch) < len(page["StackEvents"]):
                break
        fresh.reverse()
        self.seen.update(e["EventId"] for e in fresh)
        return fresh

    def status(self) -> dict[str, Any]:
        return self.cfn.describe_stacks(StackName=self.stack_id)["Stacks"][0]


class CleanRoomEngine:
    """The approval executor's Engine for forensics / forensics_teardown requests.

    Each stack resource becomes a step of its own as its events arrive (started on
    *_IN_PROGRESS, finished on *_COMPLETE / *_FAILED), so the approval card lists them.
    """

    def __init__(
        self,
        *,
        database: Database,
        poll_seconds: float = POLL_SECONDS,
        timeout: dt.timedelta = TIMEOUT,
        sleep: Callable[[float], None] = time.sleep,
        on_facts: Callable[[str], None] | None = None,
    ) -> None:
        self.database = database
        self.poll_seconds = poll_seconds
        self.timeout = timeout
        self.sleep = sleep
        self.on_facts = on_facts  # called with the incident key after facts change

    # Engine protocol --------------------------------------------------------------------

    def plan(self, *, target: Target, ctx: ActionContext) -> dict[str, Any]:
        raise UserError("Use /forensics to plan a clean room.")

    def plan_rollback(
        self, *, target: Target, ctx: ActionContext, previous: Sequence[Mapping[str, Any]]
    ) -> dict[str, Any]:
        return {"steps": [], "blast_radius": {}}

    def rollback(
        self,
        *,
        target: Target,
        ctx: ActionContext,
        previous: Sequence[Mapping[str, Any]],
        on_step: StepCallback,
    ) -> list[dict[str, Any]]:
        return []

    def run(
        self,
        *,
        target: Target,
        ctx: ActionContext,
        action_names: Sequence[str] | None,
        previous: Sequence[Mapping[str, Any]],
        on_step: StepCallback,
    ) -> list[dict[str, Any]]:
        plan = self._plan_of(ctx.incident_key, target.resource_id)
        if plan.get("operation") == "teardown":
            return self._teardown(target, ctx, plan, on_step)
        return self._create(target, ctx, plan, on_step)

    # ------------------------------------------------------------------------------------

    def _plan_of(self, incident_key: str, stack: str) -> dict[str, Any]:
        """The plan of the running request for this stack (the executor passes only names)."""
        return running_plan(
            database=self.database,
            target_id=stack,
            kinds=("forensics", "forensics_teardown", "retry"),
            what="clean-room",
        )

    def follow(
        self,
        watcher: StackWatcher,
        on_step: StepCallback,
        results: dict[str, dict[str, Any]],
        incident_key: str,
    ) -> dict[str, Any]:
        """Report resource events as steps until the stack settles; return its description."""
        stack_id = watcher.stack_id
        deadline = time.monotonic() + self.timeout.total_seconds()
        lines: list[str] = []
        while True:
            for event in watcher.new_events():
                lines.append(_event_line(event))
                logical = str(event["LogicalResourceId"])
                state = str(event["ResourceStatus"])
                if event.get("ResourceType") == "AWS::CloudFormation::Stack":
                    continue  # the stack itself is the overall step
                step = f"stack:{logical}"[:60]
                if state.endswith("_IN_PROGRESS"):
                    if step not in results:
                        on_step(step, "started", None)
                        results[step] = {}
                elif state.endswith("_COMPLETE") or state.endswith("_FAILED"):
                    failed = state.endswith("_FAILED")
                    error = (
                        {
                            "code": state,
                            "message": event.get("ResourceStatusReason") or state,
                            "kind": "error",
                            "operation": "CloudFormation",
                        }
                        if failed
                        else None
                    )
                    result = step_result(
                        self.database.clock.now(),
                        step,
                        "failed" if failed else "succeeded",
                        note=_resource_note(event),
                        error=error,
                    )
                    results[step] = result
                    on_step(step, "finished", result)
            self.save_facts(incident_key, events=lines[-12:])
            stack = watcher.status()
            status = stack["StackStatus"]
            if status in _DONE or status in _FAILED:
                return stack
            if time.monotonic() >= deadline:
                raise TimeoutError(f"stack {stack_id} still {status} after {self.timeout}")
            self.sleep(self.poll_seconds)

    def _create(
        self, target: Target, ctx: ActionContext, plan: Mapping[str, Any], on_step: StepCallback
    ) -> list[dict[str, Any]]:
        cfn = ctx.client("cloudformation", target)
        name = str(plan["stack_name"])
        results: dict[str, dict[str, Any]] = {}
        on_step("create_stack", "started", None)
        if ctx.dry_run:
            result = step_result(
                self.database.clock.now(),
                "create_stack",
                "succeeded",
                dry_run=True,
                note=f"dry run: would create {name}",
            )
            on_step("create_stack", "finished", result)
            return [result]
        try:
            found = existing_stack(cfn, name)
            if found is not None and found["StackStatus"] in _FAILED:
                # A failed earlier attempt: clear it away so the retry can create afresh.
                check_owned(found, ctx.incident_key)
                cfn.delete_stack(StackName=found["StackId"])
                self._wait_deleted(cfn, found["StackId"])
                found = None
            if found is None:
                stack_id = cfn.create_stack(
                    StackName=name,
                    TemplateBody=template_body(),
                    Parameters=[
                        {"ParameterKey": k, "ParameterValue": v}
                        for k, v in plan["parameters"].items()
                    ],
                    Capabilities=["CAPABILITY_IAM"],
                    Tags=tag_list(
                        {INCIDENT_TAG: ctx.incident_key, "incident-bot:purpose": "forensics"}
                    ),
                )["StackId"]
            else:
                stack_id = found["StackId"]
            self.save_facts(
                ctx.incident_key,
                stack_name=name,
                stack_id=stack_id,
                status="CREATE_IN_PROGRESS",
                region=target.region,
            )
            stack = self.follow(StackWatcher(cfn, stack_id), on_step, results, ctx.incident_key)
        except Exception as exc:
            result = step_result(
                self.database.clock.now(), "create_stack", "failed", error=error_record(exc)
            )
            on_step("create_stack", "finished", result)
            self.save_facts(ctx.incident_key, status="FAILED", error=result["error"]["message"])
            return [*[r for r in results.values() if r], result]
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
        ok = stack["StackStatus"] == "CREATE_COMPLETE"
        volumes = [v for v in outputs.get("VolumeIds", "").split(",") if v.startswith("vol-")]
        self.save_facts(
            ctx.incident_key,
            status=stack["StackStatus"],
            instance_id=outputs.get("InstanceId"),
            vpc_id=outputs.get("VpcId"),
            volume_ids=volumes,
            reason=stack.get("StackStatusReason"),
        )
        result = step_result(
            self.database.clock.now(),
            "create_stack",
            "succeeded" if ok else "failed",
            note=(
                f"instance {outputs.get('InstanceId')}: aws ssm start-session --target "
                f"{outputs.get('InstanceId')}"
            )
            if ok
            else None,
            error=None
            if ok
            else {
                "code": stack["StackStatus"],
                "message": stack.get("StackStatusReason") or "stack failed",
                "kind": "error",
                "operation": "CreateStack",
            },
            evidence={"stack_id": stack["StackId"], "outputs": outputs},
            changes={"stack_id": stack["StackId"]},
        )
        on_step("create_stack", "finished", result)
        return [*[r for r in results.values() if r], result]

    def _wait_deleted(self, cfn: Any, stack_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout.total_seconds()
        while True:
            stack = cfn.describe_stacks(StackName=stack_id)["Stacks"][0]
            if stack["StackStatus"] in ("DELETE_COMPLETE", "DELETE_FAILED"):
                return stack
            if time.monotonic() >= deadline:
                raise TimeoutError(f"stack {stack_id} still {stack['StackStatus']}")
            self.sleep(self.poll_seconds)

    def _teardown(
        self, target: Target, ctx: ActionContext, plan: Mapping[str, Any], on_step: StepCallback
    ) -> list[dict[str, Any]]:
        on_step("delete_stack", "started", None)
        result = delete_clean_room(
            ctx=ctx,
            target=target,
            stack_id=str(plan["stack_id"]),
            engine=self,
            on_step=on_step,
        )
        on_step("delete_stack", "finished", result)
        return [result]

    def save_facts(self, incident_key: str, **values: Any) -> None:
        with self.database.session() as session:
            CLEAN_ROOM.update(
                get_incident(session=session, key=incident_key),
                **values,
                updated_at=self.database.clock.now().isoformat(),
            )
        if self.on_facts is not None:
            # A card refresh must never fail the stack operation.
            with contextlib.suppress(Exception):
                self.on_facts(incident_key)


def delete_clean_room(
    *,
    ctx: ActionContext,
    target: Target,
    stack_id: str,
    engine: CleanRoomEngine,
    on_step: StepCallback | None = None,
    action: str = "delete_stack",
) -> dict[str, Any]:
    """Delete the incident's stack (after checking its tag) and wait; a step result dict."""
    cfn = ctx.client("cloudformation", target)
    try:
        stack = cfn.describe_stacks(StackName=stack_id)["Stacks"][0]
        if stack["StackStatus"] == "DELETE_COMPLETE":
            return step_result(
                engine.database.clock.now(), action, "skipped", note="already deleted"
            )
        check_owned(stack, ctx.incident_key)
        if ctx.dry_run:
            return step_result(
                engine.database.clock.now(),
                action,
                "succeeded",
                dry_run=True,
                note=f"dry run: would delete {stack['StackName']}",
            )
        watcher = StackWatcher(cfn, stack["StackId"])
        watcher.prime()
        cfn.delete_stack(StackName=stack_id)
        engine.save_facts(ctx.incident_key, status="DELETE_IN_PROGRESS")
        results: dict[str, dict[str, Any]] = {}
        final = engine.follow(watcher, on_step or (lambda *a: None), results, ctx.incident_key)
    except UserError as exc:
        return step_result(
            engine.database.clock.now(),
            action,
            "failed",
            error={"code": "NotOwned", "message": exc.message, "kind": "error"},
        )
    except Exception as exc:
        return step_result(engine.database.clock.now(), action, "failed", error=error_record(exc))
    status = final["StackStatus"]
    engine.save_facts(
        ctx.incident_key, status=status, deleted_at=engine.database.clock.now().isoformat()
    )
    if status != "DELETE_COMPLETE":
        return step_result(
            engine.database.clock.now(),
            action,
            "failed",
            error={
                "code": status,
                "message": final.get("StackStatusReason") or status,
                "kind": "error",
                "operation": "DeleteStack",
            },
        )
    return step_result(
        engine.database.clock.now(),
        action,
        "succeeded",
        note=f"deleted {final['StackName']}",
        changes={"deleted": stack_id},
    )


def clean_room_lines(facts: Mapping[str, Any]) -> list[str]:
    """Plain-text lines about the clean room for the incident card."""
    room = CLEAN_ROOM.get(facts)
    if not room:
        return []
    lines = [f"clean room {room.get('stack_name', '?')}: {room.get('status', '?')}"]
    if room.get("instance_id") and room.get("status") == "CREATE_COMPLETE":
        lines.append(f"connect: aws ssm start-session --target {room['instance_id']}")
    if room.get("volume_ids"):
        lines.append("restored volumes: " + ", ".join(room["volume_ids"]))
    if room.get("error") or room.get("reason"):
        lines.append(str(room.get("error") or room.get("reason")))
    lines.extend(room.get("events") or [])
    return lines
