"""Step 7: cut the instance's AWS credentials.

The instance-profile association is replaced with a deny-all profile (one
ReplaceIamInstanceProfileAssociation call: disassociate-then-associate can fail with
IncorrectState). Then each role of the old profile gets a deny-all policy for sessions issued
before now, so credentials already taken off the instance stop working. The revoke policy
stays on rollback: the old sessions must stay dead.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from containment import revoker
from containment.actions.iam_revoke import DENY_ALL_ROLE_POLICY, EC2_TRUST, revoke_policy_name
from containment.concurrency import parallel, parallel_map
from containment.context import ActionContext
from containment.errors import error_code, is_not_found
from containment.registry import Action, Facts, PlannedCall, RunState, StepResult
from containment.targets import Target

# A new instance profile can take seconds to become usable (IAM is eventually consistent).
PROFILE_RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0)


ROLE_DESCRIPTION = "incident-bot: attached to contained instances; denies everything"


def boundary_arn(ctx: ActionContext, profile_arn: str) -> str | None:
    """The permissions boundary for roles the bot creates, in the instance's own account (taken
    from its current profile's ARN): the policy allows CreateRole only with it."""
    if not ctx.permissions_boundary_name:
        return None
    partition, account = profile_arn.split(":")[1], profile_arn.split(":")[4]
    return f"arn:{partition}:iam::{account}:policy/{ctx.permissions_boundary_name}"


def sharing_note(role: str, others: list[str]) -> str:
    """Said before approval: the deny reaches every instance that runs as the role."""
    return (
        f"ALSO HITS {len(others)} other instance(s) using role {role}: {', '.join(others)}"
        " (their current credentials stop working until EC2 refreshes them)"
    )


def _swap_needed(ctx: ActionContext, facts: Facts) -> bool:
    current = facts.get("iam")
    if not current:
        return False
    return current["profile_name"] != ctx.deny_all_profile_name


def _roles(ctx: ActionContext, facts: Facts) -> list[str]:
    current = facts.get("iam")
    if not current or current["profile_name"] == ctx.deny_all_profile_name:
        return []
    return list(current["roles"])


def _ready_profile(ctx: ActionContext, facts: Facts) -> str | None:
    """The deny-all profile's ARN when it exists with its role in it. A profile without its
    role is what an attempt killed between CreateInstanceProfile and AddRoleToInstanceProfile
    left: it is completed (every create tolerates what exists), not used as it is. A retry
    completes it anyway (ctx.resuming): the role's deny-all policy may be what is missing."""
    found = facts.get("deny_profile") or {}
    if ctx.deny_all_profile_name not in (found.get("roles") or []):
        return None
    if not found.get("complete", True):  # its role lacks the deny policy (capture says)
        return None
    return str(found["arn"])


class RestrictInstanceIam(Action):
    name = "iam"
    summary = "Replace the instance profile with a deny-all one; revoke older role sessions"
    permissions = (
        "ec2:ReplaceIamInstanceProfileAssociation",
        "ec2:DescribeIamInstanceProfileAssociations",
        "iam:PassRole",  # implied by associating the deny-all profile's role
        "iam:GetInstanceProfile",
        "iam:CreateRole",
        "iam:CreateInstanceProfile",
        "iam:AddRoleToInstanceProfile",
        "iam:GetRolePolicy",
        revoker.PERMISSION,  # the deny policies, written by incident-bot-revoker
    )
    depends_on = ("capture",)
    # The volatile capture uploads with the instance's own role: replace it afterwards.
    after = ("protect", "volatile_capture")

    def calls(
        self,
        target: Target,
        ctx: ActionContext,
        facts: Facts,
        results: dict[str, StepResult] | None = None,
    ) -> list[PlannedCall]:
        out: list[PlannedCall] = []
        name = ctx.deny_all_profile_name
        if _swap_needed(ctx, facts):
            if _ready_profile(ctx, facts) is None:
                boundary = boundary_arn(ctx, facts["iam"]["profile_arn"])
                out += [
                    PlannedCall(
                        "iam",
                        "CreateRole",
                        {"RoleName": name},
                        sdk={  # what a Step Functions export sends (commands/asl.py)
                            "RoleName": name,
                            "AssumeRolePolicyDocument": EC2_TRUST,
                            "Description": ROLE_DESCRIPTION,
                            **({"PermissionsBoundary": boundary} if boundary else {}),
                        },
                    ),
                    PlannedCall("iam", "CreateInstanceProfile", {"InstanceProfileName": name}),
                    revoker.planned("put", "role", name, DENY_ALL_ROLE_POLICY, deny="*"),
                    PlannedCall(
                        "iam",
                        "AddRoleToInstanceProfile",
                        {"InstanceProfileName": name, "RoleName": name},
                    ),
                ]
            out.append(
                PlannedCall(
                    "ec2",
                    "ReplaceIamInstanceProfileAssociation",
                    {
                        "AssociationId": facts["iam"]["association_id"],
                        "IamInstanceProfile": {"Name": name},
                    },
                )
            )
        shared = (facts.get("iam") or {}).get("shared_with") or {}
        for role in _roles(ctx, facts):
            policy = revoke_policy_name(ctx)
            others = shared.get(role)
            out.append(
                PlannedCall(
                    "iam", "GetRolePolicy", {"RoleName": role, "PolicyName": policy}, mutating=False
                )
            )
            out.append(
                revoker.planned(
                    "put",
                    "role",
                    role,
                    policy,
                    deny="* when aws:TokenIssueTime < now",
                    note=sharing_note(role, others) if others else None,
                )
            )
        return out

    def apply(self, target: Target, ctx: ActionContext, state: RunState) -> StepResult:
        facts = state.facts
        roles = _roles(ctx, facts)
        if not roles and ctx.resuming:
            # Killed after the swap, before the old role's sessions were revoked: the role
            # the capture saw still needs it (has_policy skips one already done).
            roles = _roles(ctx, state.captured)
        if not _swap_needed(ctx, facts) and not roles:
            note = "no instance profile" if not facts.get("iam") else "deny-all profile in place"
            return self.nothing_to_do(ctx, note)
        rec = self.recorder(ctx, state)
        ec2 = ctx.client("ec2", target)
        iam = ctx.client("iam", target)
        policy = revoke_policy_name(ctx)

        def swap() -> None:
            if not _swap_needed(ctx, facts):
                return
            ready = _ready_profile(ctx, facts)
            arn = (None if ctx.resuming else ready) or self._create_profile(
                iam, ctx, target, boundary_arn(ctx, facts["iam"]["profile_arn"])
            )
            out = self._replace(ec2, ctx, facts["iam"]["association_id"], arn)
            before = (state.captured.get("iam") or facts["iam"])["profile_arn"]
            rec.change(
                "profile",
                {"before_arn": before, "deny_arn": arn, "association_id": out["AssociationId"]},
            )

        def has_policy(role: str) -> bool:
            try:
                iam.get_role_policy(RoleName=role, PolicyName=policy)
                return True
            except ClientError as exc:
                if is_not_found(exc):
                    return False
                raise

        def revoke(item: tuple[str, bool]) -> None:
            role, present = item
            if present:
                rec.evidence.setdefault("already_revoked", []).append(role)
                return
            # Cut-off taken after the swap, so sessions of the old role issued up to now die.
            revoker.invoke(ctx, target, revoker.request("put", "role", role, policy, ctx.now()))
            rec.change_item("revoked_roles", role, policy)

        swap_error: list[BaseException] = []

        def swap_first() -> None:
            try:
                swap()
            except Exception as exc:  # still revoke the old sessions, then report this
                swap_error.append(exc)

        with rec.guard():
            _, present = parallel(swap_first, lambda: parallel_map(has_policy, roles))
            parallel_map(revoke, list(zip(roles, present, strict=True)))
            if swap_error:
                raise swap_error[0]
        if rec.error:
            rec.left("profile_swapped", "profile" in rec.changes)
            rec.left("revoked_roles", sorted(rec.changes.get("revoked_roles", {})))
        return rec.result()

    def _create_profile(
        self, iam: Any, ctx: ActionContext, target: Target, boundary: str | None
    ) -> str:
        name = ctx.deny_all_profile_name

        def tolerate_exists(fn: Any, **kwargs: Any) -> Any:
            try:
                return fn(**kwargs)
            except ClientError as exc:
                if error_code(exc) != "EntityAlreadyExists":
                    raise
                return None

        _, profile = parallel(
            lambda: tolerate_exists(
                iam.create_role,
                RoleName=name,
                AssumeRolePolicyDocument=EC2_TRUST,
                Description=ROLE_DESCRIPTION,
                **({"PermissionsBoundary": boundary} if boundary else {}),
            ),
            lambda: tolerate_exists(iam.create_instance_profile, InstanceProfileName=name),
        )
        parallel(
            lambda: revoker.invoke(
                ctx, target, revoker.request("put", "role", name, DENY_ALL_ROLE_POLICY)
            ),
            lambda: self._add_role(iam, name),
        )
        if profile is None:  # created meanwhile by a concurrent containment
            profile = iam.get_instance_profile(InstanceProfileName=name)
        return str(profile["InstanceProfile"]["Arn"])

    @staticmethod
    def _add_role(iam: Any, name: str) -> None:
        try:
            iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
        except ClientError as exc:
            # A profile holds one role: a re-sent call whose first answer was lost (or a
            # concurrent containment) finds it there already.
            if error_code(exc) not in ("EntityAlreadyExists", "LimitExceeded"):
                raise
            roles = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]["Roles"]
            if name not in [r["RoleName"] for r in roles]:
                raise

    def _replace(self, ec2: Any, ctx: ActionContext, association_id: str, arn: str) -> Any:
        for delay in (*PROFILE_RETRY_DELAYS, None):
            try:
                return ec2.replace_iam_instance_profile_association(
                    AssociationId=association_id, IamInstanceProfile={"Arn": arn}
                )["IamInstanceProfileAssociation"]
            except ClientError as exc:
                if delay is None or error_code(exc) != "InvalidParameterValue":
                    raise
                ctx.sleep(delay)
        raise AssertionError("unreachable")

    def rollback_calls(
        self, target: Target, ctx: ActionContext, result: StepResult
    ) -> list[PlannedCall]:
        profile = result.changes.get("profile")
        if not profile:
            return []
        return [
            PlannedCall(
                "ec2",
                "DescribeIamInstanceProfileAssociations",
                {"InstanceId": target.resource_id},
                mutating=False,
            ),
            PlannedCall(
                "ec2",
                "ReplaceIamInstanceProfileAssociation",
                {
                    "AssociationId": "<current>",
                    "IamInstanceProfile": {"Arn": profile["before_arn"]},
                },
            ),
        ]

    def rollback(self, target: Target, ctx: ActionContext, result: StepResult) -> StepResult | None:
        profile = result.changes.get("profile")
        if not profile:
            return None
        rec = self.recorder(ctx)
        with rec.guard():
            ec2 = ctx.client("ec2", target)
            found = ec2.describe_iam_instance_profile_associations(
                Filters=[{"Name": "instance-id", "Values": [target.resource_id]}]
            )["IamInstanceProfileAssociations"]
            live = [a for a in found if a.get("State") in ("associating", "associated")]
            if not live or live[0]["IamInstanceProfile"]["Arn"] != profile["deny_arn"]:
                return self.nothing_to_do(ctx, "instance profile changed since; left as is")
            ec2.replace_iam_instance_profile_association(
                AssociationId=live[0]["AssociationId"],
                IamInstanceProfile={"Arn": profile["before_arn"]},
            )
            rec.change("profile", {"restored_arn": profile["before_arn"]})
        return rec.result(note="session revoke policy kept: stolen sessions stay dead")
