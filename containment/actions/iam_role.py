"""IAM role containment (a finding on assumed-role credentials): revoke every session of the
role issued before now, and optionally deny the role everything.

Revoking does not stop new sessions: the instances and functions that run as the role get
fresh credentials and carry on, which is usually what the responder wants. The plan lists
them (the blast radius) so the approver knows who a deny-all would stop too.
"""

from __future__ import annotations

from typing import Any

from containment import revoker
from containment.actions.capture_facts import CaptureFacts
from containment.actions.iam_revoke import revoke_policy_name
from containment.actions.revoke_principal_sessions import RevokePrincipalSessions
from containment.context import ActionContext
from containment.jsonsafe import jsonable
from containment.registry import Action, Facts, PlannedCall, RunState, StepResult
from containment.targets import Target


def deny_all_policy_name(ctx: ActionContext) -> str:
    return f"incident-bot-deny-all-{ctx.incident_key}"[:128]


def _users_of_role(target: Target, ctx: ActionContext, role_arn: str) -> dict[str, list[str]]:
    """Instances (through their instance profiles) and Lambda functions running as the role."""
    iam = ctx.client("iam", target)
    profiles = [
        p["Arn"]
        for page in iam.get_paginator("list_instance_profiles_for_role").paginate(
            RoleName=target.resource_id
        )
        for p in page["InstanceProfiles"]
    ]
    instances: list[str] = []
    if profiles:
        ec2 = ctx.client("ec2", target)
        for page in ec2.get_paginator("describe_instances").paginate():
            for reservation in page["Reservations"]:
                for inst in reservation["Instances"]:
                    arn = (inst.get("IamInstanceProfile") or {}).get("Arn")
                    if arn in profiles and inst["State"]["Name"] != "terminated":
                        instances.append(inst["InstanceId"])
    functions = [
        f["FunctionName"]
        for page in ctx.client("lambda", target).get_paginator("list_functions").paginate()
        for f in page["Functions"]
        if f.get("Role") == role_arn
    ]
    return {"instance_profiles": profiles, "instances": instances, "functions": functions}


class CaptureRole(CaptureFacts):
    name = "capture_role"
    summary = "Record the role, its policies and what runs as it (instances, functions)"
    kinds = ("role",)
    permissions = (
        "iam:GetRole",
        "iam:ListAttachedRolePolicies",
        "iam:ListRolePolicies",
        "iam:ListInstanceProfilesForRole",
        "ec2:DescribeInstances",
        "lambda:ListFunctions",
    )
    reads = tuple((p.split(":")[0], p.split(":")[1]) for p in permissions)

    def read(self, target: Target, ctx: ActionContext) -> Facts:
        iam = ctx.client("iam", target)
        name = target.resource_id
        role = iam.get_role(RoleName=name)["Role"]
        attached = [
            p["PolicyArn"]
            for page in iam.get_paginator("list_attached_role_policies").paginate(RoleName=name)
            for p in page["AttachedPolicies"]
        ]
        inline = [
            n
            for page in iam.get_paginator("list_role_policies").paginate(RoleName=name)
            for n in page["PolicyNames"]
        ]
        users = _users_of_role(target, ctx, role["Arn"])
        radius = [f"instance {i} (runs as this role)" for i in users["instances"]]
        radius += [f"Lambda function {f} (runs as this role)" for f in users["functions"]]
        return {
            "role_name": name,
            "role_arn": role["Arn"],
            "role_created": jsonable(role.get("CreateDate")),
            "last_used": jsonable(role.get("RoleLastUsed") or {}),
            "trust_policy": jsonable(role.get("AssumeRolePolicyDocument")),
            "attached_policies": attached,
            "inline_policies": inline,
            **users,
            "revoke_policy_present": revoke_policy_name(ctx) in inline,
            "deny_all_present": deny_all_policy_name(ctx) in inline,
            "blast_radius": radius or ["nothing found running as this role"],
        }


class RevokeRoleSessions(RevokePrincipalSessions):
    name = "revoke_role_sessions"
    summary = "Deny the role's sessions issued before now (aws:TokenIssueTime)"
    kinds = ("role",)
    depends_on = ("capture_role",)
    principal = "Role"


class DenyAllRole(Action):
    """Optional: stops new sessions too, so everything listed in the blast radius stops."""

    name = "deny_all_role"
    summary = "Deny the role everything (an inline deny-all; rollback removes it)"
    kinds = ("role",)
    permissions = (revoker.PERMISSION,)
    depends_on = ("capture_role",)
    optional = True

    def calls(
        self,
        target: Target,
        ctx: ActionContext,
        facts: Facts,
        results: dict[str, StepResult] | None = None,
    ) -> list[PlannedCall]:
        if facts.get("deny_all_present"):
            return []
        stopped = len(facts.get("instances") or []) + len(facts.get("functions") or [])
        return [
            revoker.planned(
                "put",
                "role",
                target.resource_id,
                deny_all_policy_name(ctx),
                deny="*",
                note=f"stops {stopped} instance(s)/function(s) running as the role",
            )
        ]

    def apply(self, target: Target, ctx: ActionContext, state: RunState) -> StepResult:
        if state.facts.get("deny_all_present"):
            return self.nothing_to_do(ctx, "the role is already denied everything")
        rec = self.recorder(ctx, state)
        with rec.guard():
            body = revoker.request("put", "role", target.resource_id, deny_all_policy_name(ctx))
            revoker.invoke(ctx, target, body)
            rec.change("deny_all", {"policy_name": deny_all_policy_name(ctx)})
        return rec.result()

    def rollback_calls(
        self, target: Target, ctx: ActionContext, result: StepResult
    ) -> list[PlannedCall]:
        deny: dict[str, Any] | None = result.changes.get("deny_all")
        if not deny:
            return []
        return [revoker.planned("delete", "role", target.resource_id, deny["policy_name"])]

    def rollback(self, target: Target, ctx: ActionContext, result: StepResult) -> StepResult | None:
        deny: dict[str, Any] | None = result.changes.get("deny_all")
        if not deny:
            return None
        rec = self.recorder(ctx)
        with rec.guard():
            body = revoker.request("delete", "role", target.resource_id, deny["policy_name"])
            revoker.invoke(ctx, target, body)  # "absent" when already gone: nothing to undo
            rec.change("deny_all", {"removed": deny["policy_name"]})
        return rec.result()
