"""Access-key containment (IAM findings): record last use, deactivate, revoke user sessions."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from containment import revoker
from containment.actions.iam_revoke import revoke_policy_name
from containment.concurrency import parallel
from containment.context import ActionContext
from containment.errors import is_not_found
from containment.jsonsafe import jsonable
from containment.registry import Action, Facts, PlannedCall, RunState, StepResult
from containment.targets import Target


def inspect_access_key(target: Target, ctx: ActionContext) -> Facts:
    iam = ctx.client("iam", target)
    key_id = target.resource_id
    policy = revoke_policy_name(ctx)

    def last_used() -> dict[str, Any]:
        return jsonable(iam.get_access_key_last_used(AccessKeyId=key_id))

    def keys_and_policy(user: str) -> tuple[list[dict[str, Any]], bool]:
        def keys() -> list[dict[str, Any]]:
            out: list[dict[str, Any]] = []
            for page in iam.get_paginator("list_access_keys").paginate(UserName=user):
                out.extend(jsonable(page["AccessKeyMetadata"]))
            return out

        def has_policy() -> bool:
            try:
                iam.get_user_policy(UserName=user, PolicyName=policy)
                return True
            except ClientError as exc:
                if is_not_found(exc):
                    return False
                raise

        found, present = parallel(keys, has_policy)
        return found, present

    if target.user_name:
        used, (keys, present) = parallel(last_used, lambda: keys_and_policy(target.user_name))
        user = target.user_name
    else:
        used = last_used()
        user = used["UserName"]
        keys, present = keys_and_policy(user)
    mine = [k for k in keys if k["AccessKeyId"] == key_id]
    if not mine:
        raise ClientError(
            {"Error": {"Code": "NoSuchEntity", "Message": f"{key_id} is not a key of {user}"}},
            "ListAccessKeys",
        )
    return {
        "captured_at": ctx.now().isoformat(),
        "access_key_id": key_id,
        "user_name": user,
        "status": mine[0]["Status"],
        "created": mine[0].get("CreateDate"),
        "last_used": used.get("AccessKeyLastUsed", {}),
        "other_keys": [
            {"id": k["AccessKeyId"], "status": k["Status"]} for k in keys if k is not mine[0]
        ],
        "revoke_policy_present": present,
    }


class CaptureAccessKey(Action):
    name = "capture_key"
    summary = "Record the key's owner, status and last use"
    kinds = ("access_key",)
    permissions = (
        "iam:GetAccessKeyLastUsed",
        "iam:ListAccessKeys",
        "iam:GetUserPolicy",
    )
    mutating = False
    provides_facts = True

    def inspect(self, target: Target, ctx: ActionContext) -> Facts:
        return inspect_access_key(target, ctx)

    def calls(
        self,
        target: Target,
        ctx: ActionContext,
        facts: Facts,
        results: dict[str, StepResult] | None = None,
    ) -> list[PlannedCall]:
        user = facts.get("user_name", target.user_name or "<owner>")
        return [
            PlannedCall(
                "iam", "GetAccessKeyLastUsed", {"AccessKeyId": target.resource_id}, mutating=False
            ),
            PlannedCall("iam", "ListAccessKeys", {"UserName": user}, mutating=False),
            PlannedCall(
                "iam",
                "GetUserPolicy",
                {"UserName": user, "PolicyName": revoke_policy_name(ctx)},
                mutating=False,
            ),
        ]

    def apply(self, target: Target, ctx: ActionContext, state: RunState) -> StepResult:
        rec = self.recorder(ctx, state)
        with rec.guard():
            if not state.facts:  # the executor shares this dict with every later step
                state.facts.update(inspect_access_key(target, ctx))
            rec.evidence.update(state.facts)
        return rec.result()


class DeactivateAccessKey(Action):
    name = "deactivate_key"
    summary = "Deactivate the access key"
    kinds = ("access_key",)
    permissions = ("iam:UpdateAccessKey",)
    depends_on = ("capture_key",)

    def calls(
        self,
        target: Target,
        ctx: ActionContext,
        facts: Facts,
        results: dict[str, StepResult] | None = None,
    ) -> list[PlannedCall]:
        if facts["status"] == "Inactive":
            return []
        return [
            PlannedCall(
                "iam",
                "UpdateAccessKey",
                {
                    "UserName": facts["user_name"],
                    "AccessKeyId": target.resource_id,
                    "Status": "Inactive",
                },
            )
        ]

    def apply(self, target: Target, ctx: ActionContext, state: RunState) -> StepResult:
        facts = state.facts
        if facts["status"] == "Inactive":
            return self.nothing_to_do(ctx, "key already inactive")
        rec = self.recorder(ctx, state)
        with rec.guard():
            ctx.client("iam", target).update_access_key(
                UserName=facts["user_name"], AccessKeyId=target.resource_id, Status="Inactive"
            )
            rec.change("key", {"user_name": facts["user_name"], "before": facts["status"]})
        return rec.result()

    def rollback_calls(
        self, target: Target, ctx: ActionContext, result: StepResult
    ) -> list[PlannedCall]:
        key = result.changes.get("key")
        if not key:
            return []
        return [
            PlannedCall(
                "iam",
                "UpdateAccessKey",
                {
                    "UserName": key["user_name"],
                    "AccessKeyId": target.resource_id,
                    "Status": key["before"],
                },
            )
        ]

    def rollback(self, target: Target, ctx: ActionContext, result: StepResult) -> StepResult | None:
        key = result.changes.get("key")
        if not key:
            return None
        rec = self.recorder(ctx)
        with rec.guard():
            ctx.client("iam", target).update_access_key(
                UserName=key["user_name"], AccessKeyId=target.resource_id, Status=key["before"]
            )
            rec.change("key", {"status": key["before"]})
        return rec.result()


class RevokeUserSessions(Action):
    name = "revoke_user_sessions"
    summary = "Deny the key owner's sessions issued before now (aws:TokenIssueTime)"
    kinds = ("access_key",)
    permissions = (revoker.PERMISSION,)
    depends_on = ("capture_key",)

    def calls(
        self,
        target: Target,
        ctx: ActionContext,
        facts: Facts,
        results: dict[str, StepResult] | None = None,
    ) -> list[PlannedCall]:
        if facts["revoke_policy_present"]:
            return []
        return [
            revoker.planned(
                "put",
                "user",
                facts["user_name"],
                revoke_policy_name(ctx),
                deny="* when aws:TokenIssueTime < now",
            )
        ]

    def apply(self, target: Target, ctx: ActionContext, state: RunState) -> StepResult:
        facts = state.facts
        if facts["revoke_policy_present"]:
            return self.nothing_to_do(ctx, "sessions already revoked for this incident")
        rec = self.recorder(ctx, state)
        with rec.guard():
            body = revoker.request(
                "put", "user", facts["user_name"], revoke_policy_name(ctx), ctx.now()
            )
            revoker.invoke(ctx, target, body)
            rec.change(
                "user_policy",
                {"user_name": facts["user_name"], "policy_name": revoke_policy_name(ctx)},
            )
        return rec.result(note="kept on rollback: stolen sessions stay dead")
