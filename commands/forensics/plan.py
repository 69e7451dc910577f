"""The clean room's plan and request: what /forensics will create or delete, read-only."""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from commands.aftermath import live_request, record_request
from commands.approvals.plans import Plan
from commands.errors import UserError
from commands.forensics import account
from commands.incidents import get_incident
from containment.capabilities import Permissions
from containment.context import ActionContext
from containment.tags import INCIDENT_TAG, tag_dict
from containment.targets import Target
from storage.db import Database
from storage.models import Incident

log = logging.getLogger(__name__)

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
        *account.PERMISSIONS,
    ),
)


def stack_name(incident_key: str) -> str:
    return STACK_PREFIX + incident_key.lower()


def template_body() -> str:
    """The template from the source tree, or from deploy/ under the working directory."""
    for base in (Path(__file__).resolve().parents[2], Path.cwd()):
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
            "forensics.vpc_cidr {vpc_cidr!r} is not a network like 10.99.0.0/16.", vpc_cidr=vpc_cidr
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
            "kms_key_id": s.get("KmsKeyId"),
            "start_time": s["StartTime"].isoformat()
            if isinstance(s.get("StartTime"), dt.datetime)
            else s.get("StartTime"),
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
        except ClientError as exc:  # gone or not readable: any zone will do, say which
            log.warning("zone of %s unknown (%s); using the region's first", scope.resource_id, exc)
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
) -> Plan:
    """The clean-room plan: every parameter and the one CreateStack call. Reads only."""
    if not ami_id:
        raise UserError(
            "Set forensics.ami_id in the configuration to your forensic workstation AMI first."
        )
    target = scope.target()
    ec2 = ctx.client("ec2", target)
    cfn = account.cfn_client(ctx, target)
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
    forensic = ctx.forensic_account_id
    if forensic:
        keys = account.sharing_keys(ctx.client("kms", target), used)
        # Zone names differ between accounts: the forensic account's own first zone.
        zone = _availability_zone(account.room_ec2(ctx, target), replace(scope, resource_id=None))
    else:
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
    room_in = account.account_label(forensic) if forensic else None
    calls = [
        {
            "text": f"cloudformation.CreateStack(StackName={name}, "
            f"TemplateBody=deploy/{TEMPLATE_NAME}, Capabilities=[CAPABILITY_IAM])"
            + (f"  # in the forensic {room_in}, from the copies" if forensic else ""),
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
    steps: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    if forensic:
        steps = _forensic_steps(ctx, scope, used, keys)
        extra["forensic"] = {"account_id": forensic, "keys": keys}
        radius["attached"].insert(
            0,
            f"shared with and copied into forensic {room_in} under "
            f"{ctx.forensic_kms_key_id or 'its default EBS key'}; built there from the copies",
        )
    steps.append(
        {
            "action": "create_stack",
            "summary": "Build the clean room (stack resources report below as they finish)"
            + (f", in the forensic {room_in}" if forensic else ""),
            "mutating": True,
            "depends_on": ["copy_snapshots"] if forensic else [],
            "calls": calls,
        }
    )
    return Plan.from_json(
        {
            "engine": ENGINE,
            "operation": "create",
            "stack_name": name,
            "parameters": params,
            "snapshots": used,
            **extra,
            "steps": steps,
            "blast_radius": radius,
        }
    )


def _forensic_steps(
    ctx: ActionContext, scope: Scope, used: list[dict[str, Any]], keys: Mapping[str, str]
) -> list[dict[str, Any]]:
    """Share (in the incident's account) and copy (in the forensic account), call by call."""
    source = account.account_label(scope.account_id)
    forensic = account.account_label(ctx.forensic_account_id)

    def call(service: str, op: str, text: str, where: str, mutating: bool = True) -> dict:
        return {
            "text": f"{service}.{op}({text})  # in {where}",
            "service": service,
            "operation": op,
            "mutating": mutating,
        }

    share = [
        call(
            "ec2",
            "ModifySnapshotAttribute",
            f"SnapshotId={s['id']}, Attribute=createVolumePermission, OperationType=add, "
            f"UserIds=[{ctx.forensic_account_id}]",
            source,
        )
        for s in used
    ]
    share += [
        call("kms", "CreateGrant", f"KeyId={k}, GranteePrincipal=forensic role", source)
        for k in sorted(set(keys.values()))
    ]
    key = ctx.forensic_kms_key_id or "its default EBS key"
    copies = [
        call(
            "ec2",
            "CopySnapshot",
            f"SourceSnapshotId={s['id']}, Encrypted=True, KmsKeyId={key}",
            forensic,
        )
        for s in used
    ]
    copies.append(
        call("ec2", "DescribeSnapshots", "the copies, until completed", forensic, mutating=False)
    )
    if ctx.evidence_bucket:
        copies.append(
            call(
                "s3",
                "PutObject",
                f"Bucket={ctx.evidence_bucket}, Key="
                f"{ctx.evidence_prefix}{scope.incident_key}/manifest.json",
                ctx.evidence_account(),
            )
        )
    return [
        {
            "action": "share_snapshots",
            "summary": f"Share the snapshots with the forensic {forensic} (acts in {source})",
            "mutating": True,
            "depends_on": [],
            "calls": share,
        },
        {
            "action": "copy_snapshots",
            "summary": f"Copy them under the forensic account's own key (acts in {forensic})",
            "mutating": True,
            "depends_on": ["share_snapshots"],
            "calls": copies,
        },
    ]


def plan_teardown(*, ctx: ActionContext, scope: Scope) -> Plan:
    target = scope.target()
    cfn = account.cfn_client(ctx, target)
    name = stack_name(scope.incident_key)
    found = existing_stack(cfn, name)
    if found is None:
        raise UserError(f"{scope.incident_key} has no clean room to tear down.")
    check_owned(found, scope.incident_key)
    return Plan.from_json(
        {
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
    )


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
        live = live_request(session, stack_name(incident.key), kind)
        if live is not None:
            return Proposed(live.id, False, incident.key)
    if teardown:
        plan = plan_teardown(ctx=ctx, scope=scope)
    else:
        plan = plan_create(
            ctx=ctx, scope=scope, vpc_cidr=vpc_cidr, ami_id=ami_id, instance_type=instance_type
        )
    recorded = record_request(
        db=db,
        incident_key=incident_key,
        target=scope.target(),
        kind=kind,
        plan=plan,
        requested_by=requested_by,
        reason="tear down the forensic clean room" if teardown else "forensic clean room",
        expire_after=expire_after,
        dry_run=dry_run,
    )
    return Proposed(recorded.request_id, recorded.created, recorded.incident_key)
