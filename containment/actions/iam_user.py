"""IAM user containment: every access key off, the console password gone, sessions revoked.

Policies and groups are recorded, never detached: detaching would change what the user can
do in ways the responder did not see on the card, and the session deny already stops them.
The console password cannot be restored (the bot is never granted iam:CreateLoginProfile),
so rollback says a human must set a new one.
"""

from __future__ import annotations

from typing import Any

from containment.actions.capture_facts import CaptureFacts, absent_as_none, planned
from containment.actions.iam_revoke import revoke_policy_name
from containment.actions.revoke_principal_sessions import RevokePrincipalSessions
from containment.context import ActionContext
from containment.jsonsafe import jsonable
from containment.registry import Action, Facts, PlannedCall, RunState, StepResult
from containment.targets import Target

HUMAN_RESET = (
    "the console password was deleted and is not restored: a human must set a new one "
    "(iam:CreateLoginProfile), with a password reset required at sign-in"
)


class CaptureUser(CaptureFacts):
    name = "capture_user"
    summary = "Record the user's keys, console login (when it was created), policies and groups"
    kinds = ("user",)
    permissions = (
        "iam:GetUser",
        "iam:ListAccessKeys",
        "iam:GetLoginProfile",
        "iam:ListAttachedUserPolicies",
        "iam:ListUserPolicies",
        "iam:ListGroupsForUser",
    )
    reads = tuple(("iam", p.split(":")[1]) for p in permissions)

    def read(self, target: Target, ctx: ActionContext) -> Facts:
        iam = ctx.client("iam", target)
        name = target.resource_id
        user = iam.get_user(UserName=name)["User"]
        keys = [
            k
            for page in iam.get_paginator("list_access_keys").paginate(UserName=name)
            for k in page["AccessKeyMetadata"]
        ]
        login = absent_as_none(lambda: iam.get_login_profile(UserName=name)["LoginProfile"])
        attached = [
            p["PolicyArn"]
            for page in iam.get_paginator("list_attached_user_policies").paginate(UserName=name)
            for p in page["AttachedPolicies"]
        ]
        inline = [
            n
            for page in iam.get_paginator("list_user_policies").paginate(UserName=name)
            for n in page["PolicyNames"]
        ]
        groups = [
            g["GroupName"]
            for page in iam.get_paginator("list_groups_for_user").paginate(UserName=name)
            for g in page["Groups"]
        ]
        return {
            "user_name": name,
            "user_arn": user["Arn"],
            "user_created": jsonable(user.get("CreateDate")),
            "password_last_used": jsonable(user.get("PasswordLastUsed")),
            "access_keys": [
                {
                    "id": k["AccessKeyId"],
                    "status": k["Status"],
                    "created": jsonable(k["CreateDate"]),
                }
                for k in keys
            ],
            "login_profile": jsonable(login),  # CreateDate: when the password was set
            "attached_policies": attached,
            "inline_policies": inline,
            "groups": groups,
            "revoke_policy_present": revoke_policy_name(ctx) in inline,
            "blast_radius": [
                f"{len(keys)} access key(s), console login "
                + ("yes" if login else "no")
                + f", {len(attached) + len(inline)} policies and {len(groups)} group(s) kept"
            ],
        }


class DeactivateUserKeys(Action):
    name = "deactivate_user_keys"
    summary = "Deactivate every active access key of the user"
    kinds = ("user",)
    permissions = ("iam:UpdateAccessKey",)
    depends_on = ("capture_user",)

    def calls(
        self,
        target: Target,
        ctx: ActionContext,
        facts: Facts,
        results: dict[str, StepResult] | None = None,
    ) -> list[PlannedCall]:
        return [
            planned(
                "iam",
                "UpdateAccessKey",
                UserName=target.resource_id,
                AccessKeyId=k["id"],
                Status="Inactive",
            )
            for k in facts["access_keys"]
            if k["status"] == "Active"
        ]

    def apply(self, target: Target, ctx: ActionContext, state: RunState) -> StepResult:
        active = [k["id"] for k in state.facts["access_keys"] if k["status"] == "Active"]
        if not active:
            return self.nothing_to_do(ctx, "no active access key")
        rec = self.recorder(ctx, state)
        iam = ctx.client("iam", target)
        with rec.guard():
            for key_id in active:
                iam.update_access_key(
                    UserName=target.resource_id, AccessKeyId=key_id, Status="Inactive"
                )
                rec.change_item("keys", key_id, "Active")
        return rec.result()

    def rollback_calls(
        self, target: Target, ctx: ActionContext, result: StepResult
    ) -> list[PlannedCall]:
        return [
            planned(
                "iam",
                "UpdateAccessKey",
                UserName=target.resource_id,
                AccessKeyId=key_id,
                Status=status,
            )
            for key_id, status in (result.changes.get("keys") or {}).items()
        ]

    def rollback(self, target: Target, ctx: ActionContext, result: StepResult) -> StepResult | None:
        keys: dict[str, str] = result.changes.get("keys") or {}
        if not keys:
            return None
        rec = self.recorder(ctx)
        iam = ctx.client("iam", target)
        with rec.guard():
            for key_id, status in keys.items():  # only the keys this step deactivated
                iam.update_access_key(
                    UserName=target.resource_id, AccessKeyId=key_id, Status=status
                )
                rec.change_item("keys", key_id, status)
        return rec.result()


class DeleteLoginProfile(Action):
    name = "delete_login_profile"
    summary = "Delete the console password (its creation time is in the capture)"
    kinds = ("user",)
    permissions = ("iam:DeleteLoginProfile",)
    depends_on = ("capture_user",)

    def calls(
        self,
        target: Target,
        ctx: ActionContext,
        facts: Facts,
        results: dict[str, StepResult] | None = None,
    ) -> list[PlannedCall]:
        if not facts.get("login_profile"):
            return []
        return [planned("iam", "DeleteLoginProfile", UserName=target.resource_id)]

    def apply(self, target: Target, ctx: ActionContext, state: RunState) -> StepResult:
        profile: dict[str, Any] | None = state.facts.get("login_profile")
        if not profile:
            return self.nothing_to_do(ctx, "the user has no console password")
        rec = self.recorder(ctx, state)
        with rec.guard():
            iam = ctx.client("iam", target)
            absent_as_none(lambda: iam.delete_login_profile(UserName=target.resource_id))
            rec.change(
                "login_profile",
                {
                    "created": profile.get("CreateDate"),
                    "reset_required": profile.get("PasswordResetRequired"),
                },
            )
        return rec.result()

    def rollback_calls(
        self, target: Target, ctx: ActionContext, result: StepResult
    ) -> list[PlannedCall]:
        return []  # nothing the bot may call: a human sets the new password

    def rollback(self, target: Target, ctx: ActionContext, result: StepResult) -> StepResult | None:
        if not result.changes.get("login_profile"):
            return None
        rec = self.recorder(ctx)
        rec.change("human_action", HUMAN_RESET)
        return rec.result(note=HUMAN_RESET)


class RevokeUserSessionsAll(RevokePrincipalSessions):
    name = "revoke_user_sessions_all"
    summary = "Deny the user's sessions issued before now (aws:TokenIssueTime)"
    kinds = ("user",)
    depends_on = ("capture_user",)
    principal = "User"

    def change_details(self, target: Target, ctx: ActionContext) -> dict[str, Any]:
        return {"user_name": target.resource_id, "policy_name": revoke_policy_name(ctx)}
