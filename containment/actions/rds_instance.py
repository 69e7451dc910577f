"""RDS DB instance containment: a snapshot first, evidence (security groups, public
accessibility, parameter groups), then the isolation security group and no public address.
Rollback puts the captured groups and accessibility back; the snapshot stays as evidence.

As with EC2, a security-group change does not cut connections already open to the database;
rotate its credentials as well (the plan says so).
"""

from __future__ import annotations

import re
from typing import Any

from botocore.exceptions import ClientError

from containment.actions.capture_facts import CaptureFacts, planned
from containment.actions.isolation_groups import create_isolation_group
from containment.context import ActionContext
from containment.errors import error_code
from containment.jsonsafe import jsonable
from containment.registry import Action, Facts, PlannedCall, RunState, StepResult
from containment.tags import creation_tags, tag_list
from containment.targets import Target

OPEN_CONNECTIONS = "open connections survive a security-group change: rotate the DB credentials"


def snapshot_id(ctx: ActionContext, db: str) -> str:
    """One snapshot per incident and instance: a re-run finds it and takes no second one."""
    raw = f"incident-bot-{ctx.incident_key}-{db}".lower()
    return re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9-]", "-", raw))[:255].rstrip("-")


def _isolation_group(ctx: ActionContext, target: Target, vpc: str | None) -> dict[str, Any] | None:
    if not vpc:
        return None
    found = ctx.client("ec2", target).describe_security_groups(
        Filters=[
            {"Name": "vpc-id", "Values": [vpc]},
            {"Name": "group-name", "Values": [ctx.isolation_group_name]},
        ]
    )["SecurityGroups"]
    return {"id": found[0]["GroupId"], "egress": found[0]["IpPermissionsEgress"]} if found else None


class CaptureDbInstance(CaptureFacts):
    name = "capture_db"
    summary = "Record the DB instance's security groups, public accessibility, parameter groups"
    kinds = ("db_instance",)
    permissions = (
        "rds:DescribeDBInstances",
        "rds:DescribeDBSnapshots",
        "ec2:DescribeSecurityGroups",
    )
    reads = tuple((p.split(":")[0], p.split(":")[1]) for p in permissions)

    def read(self, target: Target, ctx: ActionContext) -> Facts:
        rds = ctx.client("rds", target)
        name = target.resource_id
        db = rds.describe_db_instances(DBInstanceIdentifier=name)["DBInstances"][0]
        snap = snapshot_id(ctx, name)
        snapshots = [
            s["DBSnapshotIdentifier"]
            for page in rds.get_paginator("describe_db_snapshots").paginate(
                DBInstanceIdentifier=name, SnapshotType="manual"
            )
            for s in page["DBSnapshots"]
            if s["DBSnapshotIdentifier"] == snap
        ]
        vpc = (db.get("DBSubnetGroup") or {}).get("VpcId")
        groups = [g["VpcSecurityGroupId"] for g in db.get("VpcSecurityGroups", [])]
        endpoint = db.get("Endpoint") or {}
        return {
            "db_instance": name,
            "db_arn": db.get("DBInstanceArn"),
            "engine": db.get("Engine"),
            "status": db.get("DBInstanceStatus"),
            "security_groups": groups,
            "publicly_accessible": bool(db.get("PubliclyAccessible")),
            "parameter_groups": [
                p["DBParameterGroupName"] for p in db.get("DBParameterGroups", [])
            ],
            "vpc_id": vpc,
            "endpoint": jsonable(endpoint),
            "storage_encrypted": db.get("StorageEncrypted"),
            "snapshot_id": snap,
            "snapshot_exists": bool(snapshots),
            "isolation_group": _isolation_group(ctx, target, vpc),
            "blast_radius": [
                f"{db.get('Engine')} at {endpoint.get('Address', '?')}:{endpoint.get('Port', '?')}"
                + (" (publicly accessible)" if db.get("PubliclyAccessible") else ""),
                f"security groups {', '.join(groups) or 'none'} in {vpc or 'no VPC'}",
                OPEN_CONNECTIONS,
            ],
        }


def _own_snapshot(rds: Any, db: str, snapshot: str) -> dict[str, Any]:
    """The existing snapshot `snapshot`, when it is of `db` (a name clash otherwise)."""
    found = rds.describe_db_snapshots(DBSnapshotIdentifier=snapshot)["DBSnapshots"][0]
    owner = found.get("DBInstanceIdentifier")
    if owner != db:
        raise ValueError(f"snapshot {snapshot} exists but is of {owner}")
    return dict(found)


class SnapshotDbInstance(Action):
    name = "snapshot_db"
    summary = "Snapshot the DB instance (kept as evidence; not undone)"
    kinds = ("db_instance",)
    permissions = ("rds:CreateDBSnapshot", "rds:AddTagsToResource")
    depends_on = ("capture_db",)

    def calls(
        self,
        target: Target,
        ctx: ActionContext,
        facts: Facts,
        results: dict[str, StepResult] | None = None,
    ) -> list[PlannedCall]:
        if facts.get("snapshot_exists"):
            return []
        return [
            planned(
                "rds",
                "CreateDBSnapshot",
                DBInstanceIdentifier=target.resource_id,
                DBSnapshotIdentifier=facts["snapshot_id"],
            )
        ]

    def apply(self, target: Target, ctx: ActionContext, state: RunState) -> StepResult:
        facts = state.facts
        if facts.get("snapshot_exists"):
            return self.nothing_to_do(ctx, f"snapshot {facts['snapshot_id']} already taken")
        rec = self.recorder(ctx, state)
        rds = ctx.client("rds", target)
        with rec.guard():
            try:
                snap = rds.create_db_snapshot(
                    DBInstanceIdentifier=target.resource_id,
                    DBSnapshotIdentifier=facts["snapshot_id"],
                    Tags=tag_list(
                        creation_tags(incident_key=ctx.incident_key, finding_id=ctx.finding_id)
                    ),
                )["DBSnapshot"]
            except ClientError as exc:
                # The identifier is the incident's own, so AWS refuses a second one: a re-sent
                # create whose first answer was lost finds the first snapshot (taken, not failed).
                if error_code(exc) != "DBSnapshotAlreadyExists":
                    raise
                snap = _own_snapshot(rds, target.resource_id, facts["snapshot_id"])
            rec.evidence["snapshot"] = {
                "id": snap["DBSnapshotIdentifier"],
                "arn": snap.get("DBSnapshotArn"),
            }
        return rec.result()


def _revoke_egress(ec2: Any, gid: str, rules: list[dict[str, Any]]) -> None:
    try:
        ec2.revoke_security_group_egress(GroupId=gid, IpPermissions=rules)
    except ClientError as exc:
        if error_code(exc) != "InvalidPermission.NotFound":  # revoked since it was read
            raise


class IsolateDbInstance(Action):
    name = "isolate_db"
    summary = "Move the DB instance to the isolation security group; not publicly accessible"
    kinds = ("db_instance",)
    permissions = (
        "rds:ModifyDBInstance",
        "ec2:DescribeSecurityGroups",  # a concurrent incident may have made the group since
        "ec2:CreateSecurityGroup",
        "ec2:CreateTags",
        "ec2:RevokeSecurityGroupEgress",
    )
    depends_on = ("capture_db",)
    after = ("snapshot_db",)  # the snapshot shows the instance as it was found

    @staticmethod
    def _isolated(facts: Facts) -> bool:
        iso = facts.get("isolation_group") or {}
        return facts["security_groups"] == [iso.get("id")] and not facts["publicly_accessible"]

    def calls(
        self,
        target: Target,
        ctx: ActionContext,
        facts: Facts,
        results: dict[str, StepResult] | None = None,
    ) -> list[PlannedCall]:
        if self._isolated(facts):
            return []
        out: list[PlannedCall] = []
        iso = facts.get("isolation_group")
        if iso is None:
            out.append(
                planned(
                    "ec2",
                    "CreateSecurityGroup",
                    GroupName=ctx.isolation_group_name,
                    VpcId=facts["vpc_id"],
                )
            )
            out.append(planned("ec2", "RevokeSecurityGroupEgress", GroupId="<new isolation group>"))
        out.append(
            PlannedCall(
                "rds",
                "ModifyDBInstance",
                {
                    "DBInstanceIdentifier": target.resource_id,
                    "VpcSecurityGroupIds": [iso["id"] if iso else "<isolation group>"],
                    "PubliclyAccessible": False,
                    "ApplyImmediately": True,
                },
                note=OPEN_CONNECTIONS,
            )
        )
        return out

    def _ensure_group(self, target: Target, ctx: ActionContext, facts: Facts, rec: Any) -> str:
        iso = facts.get("isolation_group") or _isolation_group(ctx, target, facts["vpc_id"])
        if iso is not None:
            if iso.get("egress"):  # an earlier attempt made it and lost the answer, say
                _revoke_egress(ctx.client("ec2", target), str(iso["id"]), iso["egress"])
                rec.change_item("tightened", iso["id"], {"egress": iso["egress"]})
            return str(iso["id"])
        if not facts.get("vpc_id"):
            raise ValueError(f"{target.resource_id} is not in a VPC: no security group to use")
        # Created once even when CreateSecurityGroup's answer is lost (it takes no token).
        gid, ours = create_isolation_group(target, ctx, facts["vpc_id"])
        if ours:  # shared across incidents: not deleted on rollback
            rec.evidence["created_group"] = gid
        return gid

    def apply(self, target: Target, ctx: ActionContext, state: RunState) -> StepResult:
        facts = state.facts
        if self._isolated(facts):
            return self.nothing_to_do(ctx, "already isolated and not publicly accessible")
        rec = self.recorder(ctx, state)
        with rec.guard():
            gid = self._ensure_group(target, ctx, facts, rec)
            # What rollback restores is what the capture saw, before any attempt.
            rec.change_item("db", "security_groups", state.captured["security_groups"])
            rec.change_item("db", "publicly_accessible", state.captured["publicly_accessible"])
            ctx.client("rds", target).modify_db_instance(
                DBInstanceIdentifier=target.resource_id,
                VpcSecurityGroupIds=[gid],
                PubliclyAccessible=False,
                ApplyImmediately=True,
            )
            rec.change_item("db", "isolation_group", gid)
        return rec.result(note=OPEN_CONNECTIONS)

    def rollback_calls(
        self, target: Target, ctx: ActionContext, result: StepResult
    ) -> list[PlannedCall]:
        db = result.changes.get("db")
        if not db:
            return []
        return [
            planned(
                "rds",
                "ModifyDBInstance",
                DBInstanceIdentifier=target.resource_id,
                VpcSecurityGroupIds=db["security_groups"],
                PubliclyAccessible=db["publicly_accessible"],
                ApplyImmediately=True,
            )
        ]

    def rollback(self, target: Target, ctx: ActionContext, result: StepResult) -> StepResult | None:
        db = result.changes.get("db")
        if not db:
            return None
        rec = self.recorder(ctx)
        with rec.guard():
            ctx.client("rds", target).modify_db_instance(
                DBInstanceIdentifier=target.resource_id,
                VpcSecurityGroupIds=db["security_groups"],
                PubliclyAccessible=db["publicly_accessible"],
                ApplyImmediately=True,
            )
            rec.change("db", {"restored": db["security_groups"]})
        return rec.result()
