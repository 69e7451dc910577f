"""What revoking an IAM user's or role's older sessions has in common: one inline deny of
everything for sessions issued before now (aws:TokenIssueTime), kept on rollback.

Subclasses (iam_user.RevokeUserSessionsAll, iam_role.RevokeRoleSessions) name the principal
kind; the capture step before them records whether this incident's deny is already there.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar, Literal

from containment.actions.capture_facts import planned
from containment.actions.iam_revoke import (
    revoke_document,
    revoke_older_sessions,
    revoke_policy_name,
)
from containment.context import ActionContext
from containment.registry import Action, Facts, PlannedCall, RunState, StepResult
from containment.targets import Target


class RevokePrincipalSessions(Action):
    principal: ClassVar[Literal["User", "Role"]]

    def _name_param(self, target: Target) -> dict[str, Any]:
        return {f"{self.principal}Name": target.resource_id}

    def calls(
        self,
        target: Target,
        ctx: ActionContext,
        facts: Facts,
        results: dict[str, StepResult] | None = None,
    ) -> list[PlannedCall]:
        if facts.get("revoke_policy_present"):
            return []
        call = planned(
            "iam",
            f"Put{self.principal}Policy",
            **self._name_param(target),
            PolicyName=revoke_policy_name(ctx),
            Condition="aws:TokenIssueTime < now",
        )
        sdk = {
            **self._name_param(target),
            "PolicyName": revoke_policy_name(ctx),
            "PolicyDocument": revoke_document("<now>"),
        }
        return [replace(call, sdk=sdk)]

    def apply(self, target: Target, ctx: ActionContext, state: RunState) -> StepResult:
        if state.facts.get("revoke_policy_present"):
            return self.nothing_to_do(ctx, "sessions already revoked for this incident")
        rec = self.recorder(ctx, state)
        iam = ctx.client("iam", target)
        put = iam.put_user_policy if self.principal == "User" else iam.put_role_policy
        with rec.guard():
            put(
                **self._name_param(target),
                PolicyName=revoke_policy_name(ctx),
                PolicyDocument=revoke_older_sessions(ctx.now()),
            )
            rec.change(f"{self.principal.lower()}_policy", self.change_details(target, ctx))
        return rec.result(note="kept on rollback: stolen sessions stay dead")

    def change_details(self, target: Target, ctx: ActionContext) -> dict[str, Any]:
        return {"policy_name": revoke_policy_name(ctx)}
