"""What revoking an IAM user's or role's older sessions has in common: one inline deny of
everything for sessions issued before now (aws:TokenIssueTime), kept on rollback, written by
incident-bot-revoker (containment/revoker).

Subclasses (iam_user.RevokeUserSessionsAll, iam_role.RevokeRoleSessions) name the principal
kind; the capture step before them records whether this incident's deny is already there.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from containment import revoker
from containment.actions.iam_revoke import revoke_policy_name
from containment.context import ActionContext
from containment.registry import Action, Facts, PlannedCall, RunState, StepResult
from containment.targets import Target


class RevokePrincipalSessions(Action):
    principal: ClassVar[Literal["User", "Role"]]
    permissions = (revoker.PERMISSION,)

    @property
    def kind(self) -> revoker.Principal:
        return "user" if self.principal == "User" else "role"

    def calls(
        self,
        target: Target,
        ctx: ActionContext,
        facts: Facts,
        results: dict[str, StepResult] | None = None,
    ) -> list[PlannedCall]:
        if facts.get("revoke_policy_present"):
            return []
        return [
            revoker.planned(
                "put",
                self.kind,
                target.resource_id,
                revoke_policy_name(ctx),
                deny="* when aws:TokenIssueTime < now",
            )
        ]

    def apply(self, target: Target, ctx: ActionContext, state: RunState) -> StepResult:
        if state.facts.get("revoke_policy_present"):
            return self.nothing_to_do(ctx, "sessions already revoked for this incident")
        rec = self.recorder(ctx, state)
        with rec.guard():
            body = revoker.request(
                "put", self.kind, target.resource_id, revoke_policy_name(ctx), ctx.now()
            )
            revoker.invoke(ctx, target, body)
            rec.change(f"{self.principal.lower()}_policy", self.change_details(target, ctx))
        return rec.result(note="kept on rollback: stolen sessions stay dead")

    def change_details(self, target: Target, ctx: ActionContext) -> dict[str, Any]:
        return {"policy_name": revoke_policy_name(ctx)}
