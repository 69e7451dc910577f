"""S3 bucket containment: evidence first, then a deny for the principals the finding names
and Block Public Access on the bucket. Rollback puts back the exact policy text and the
public-access-block settings captured before (or removes what did not exist).

The deny goes in before Block Public Access: with BlockPublicPolicy on, S3 refuses to store a
policy that is still public, and the captured policy may be. Rollback runs the other way.
"""

from __future__ import annotations

import json
from typing import Any

from containment.actions.capture_facts import CaptureFacts, absent_as_none, planned
from containment.context import ActionContext
from containment.jsonsafe import jsonable
from containment.registry import Action, Facts, PlannedCall, RunState, StepResult
from containment.targets import Target

BLOCK_ALL = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}
NO_POLICY = ("NoSuchBucketPolicy",)
NO_BLOCK = ("NoSuchPublicAccessBlockConfiguration",)


def deny_sid(ctx: ActionContext) -> str:
    return "IncidentBotDeny" + "".join(ch for ch in ctx.incident_key if ch.isalnum())


def deny_statement(ctx: ActionContext, bucket: str, principals: list[str]) -> dict[str, Any]:
    """Deny every S3 action on the bucket to the named principals, whichever session they use
    (aws:PrincipalArn of an assumed role is the role's ARN)."""
    return {
        "Sid": deny_sid(ctx),
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"],
        "Condition": {"ArnLike": {"aws:PrincipalArn": sorted(principals)}},
    }


def with_deny(policy: str | None, statement: dict[str, Any]) -> str:
    doc = json.loads(policy) if policy else {"Version": "2012-10-17", "Statement": []}
    stmts = doc.get("Statement") or []
    if isinstance(stmts, dict):
        stmts = [stmts]
    doc["Statement"] = [s for s in stmts if s.get("Sid") != statement["Sid"]] + [statement]
    return json.dumps(doc)


class CaptureBucket(CaptureFacts):
    name = "capture_bucket"
    summary = "Record the bucket's policy, ACL, public access block and versioning"
    kinds = ("bucket",)
    permissions = (
        "s3:GetBucketPolicy",
        "s3:GetBucketAcl",
        "s3:GetBucketPublicAccessBlock",
        "s3:GetBucketVersioning",
    )
    reads = (
        ("s3", "GetBucketPolicy"),
        ("s3", "GetBucketAcl"),
        ("s3", "GetPublicAccessBlock"),
        ("s3", "GetBucketVersioning"),
    )

    def read(self, target: Target, ctx: ActionContext) -> Facts:
        s3 = ctx.client("s3", target)
        bucket = target.resource_id
        acl = s3.get_bucket_acl(Bucket=bucket)  # first: NoSuchBucket fails the capture
        policy = absent_as_none(lambda: s3.get_bucket_policy(Bucket=bucket)["Policy"], *NO_POLICY)
        block = absent_as_none(
            lambda: s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"],
            *NO_BLOCK,
        )
        versioning = s3.get_bucket_versioning(Bucket=bucket)
        grants = [
            g["Grantee"].get("URI") or g["Grantee"].get("ID") or "?" for g in acl.get("Grants", [])
        ]
        public = [g for g in grants if str(g).endswith(("/AllUsers", "/AuthenticatedUsers"))]
        principals = list(target.principals)
        radius = [f"bucket policy {'present' if policy else 'absent'}; ACL grants to {len(grants)}"]
        if public:
            radius.append("ACL grants to everyone: " + ", ".join(public))
        radius.append(
            "principals to deny: " + (", ".join(principals) if principals else "none named")
        )
        return {
            "bucket": bucket,
            "policy": policy,  # the exact text, so rollback restores it byte for byte
            "acl": jsonable(acl),
            "public_access_block": block,
            "versioning": {k: v for k, v in jsonable(versioning).items()},
            "principals": principals,
            "blast_radius": radius,
        }


class DenyBucketPrincipals(Action):
    name = "bucket_deny_principals"
    summary = "Add a deny for the finding's principals to the bucket policy"
    kinds = ("bucket",)
    permissions = ("s3:PutBucketPolicy", "s3:DeleteBucketPolicy")
    depends_on = ("capture_bucket",)

    def calls(
        self,
        target: Target,
        ctx: ActionContext,
        facts: Facts,
        results: dict[str, StepResult] | None = None,
    ) -> list[PlannedCall]:
        principals = facts.get("principals") or []
        if not principals or self._present(facts, ctx, principals):
            return []
        return [
            planned(
                "s3",
                "PutBucketPolicy",
                Bucket=target.resource_id,
                Deny=", ".join(principals),
                Keeps="every existing statement",
            )
        ]

    @staticmethod
    def _present(facts: Facts, ctx: ActionContext, principals: list[str]) -> bool:
        wanted = deny_statement(ctx, facts["bucket"], principals)
        policy = facts.get("policy")
        return bool(policy) and wanted in (json.loads(policy).get("Statement") or [])

    def apply(self, target: Target, ctx: ActionContext, state: RunState) -> StepResult:
        facts = state.facts
        principals = facts.get("principals") or []
        if not principals:
            return self.nothing_to_do(ctx, "the finding names no principal to deny")
        if self._present(facts, ctx, principals):
            return self.nothing_to_do(ctx, "the deny is already in the bucket policy")
        rec = self.recorder(ctx, state)
        with rec.guard():
            # What rollback restores is what the capture saw, before any attempt changed it.
            rec.change_item("policy", "before", state.captured.get("policy"))
            statement = deny_statement(ctx, target.resource_id, principals)
            ctx.client("s3", target).put_bucket_policy(
                Bucket=target.resource_id, Policy=with_deny(facts.get("policy"), statement)
            )
            rec.change_item("policy", "sid", statement["Sid"])
        return rec.result()

    def rollback_calls(
        self, target: Target, ctx: ActionContext, result: StepResult
    ) -> list[PlannedCall]:
        policy = result.changes.get("policy")
        if not policy:
            return []
        if policy.get("before") is None:
            return [planned("s3", "DeleteBucketPolicy", Bucket=target.resource_id)]
        return [planned("s3", "PutBucketPolicy", Bucket=target.resource_id, Policy="as captured")]

    def rollback(self, target: Target, ctx: ActionContext, result: StepResult) -> StepResult | None:
        policy = result.changes.get("policy")
        if not policy:
            return None
        rec = self.recorder(ctx)
        s3 = ctx.client("s3", target)
        with rec.guard():
            if policy.get("before") is None:
                s3.delete_bucket_policy(Bucket=target.resource_id)
            else:
                s3.put_bucket_policy(Bucket=target.resource_id, Policy=policy["before"])
            rec.change("policy", {"restored": policy.get("before") is not None})
        return rec.result()


class BlockBucketPublicAccess(Action):
    name = "bucket_block_public"
    summary = "Turn on all four Block Public Access settings of the bucket"
    kinds = ("bucket",)
    permissions = ("s3:PutBucketPublicAccessBlock",)
    depends_on = ("capture_bucket",)
    after = ("bucket_deny_principals",)

    def calls(
        self,
        target: Target,
        ctx: ActionContext,
        facts: Facts,
        results: dict[str, StepResult] | None = None,
    ) -> list[PlannedCall]:
        if facts.get("public_access_block") == BLOCK_ALL:
            return []
        return [planned("s3", "PutPublicAccessBlock", Bucket=target.resource_id, **BLOCK_ALL)]

    def apply(self, target: Target, ctx: ActionContext, state: RunState) -> StepResult:
        if state.facts.get("public_access_block") == BLOCK_ALL:
            return self.nothing_to_do(ctx, "public access already blocked")
        rec = self.recorder(ctx, state)
        with rec.guard():
            rec.change_item("block", "before", state.captured.get("public_access_block"))
            ctx.client("s3", target).put_public_access_block(
                Bucket=target.resource_id, PublicAccessBlockConfiguration=BLOCK_ALL
            )
        return rec.result()

    def rollback_calls(
        self, target: Target, ctx: ActionContext, result: StepResult
    ) -> list[PlannedCall]:
        block = result.changes.get("block")
        if not block:
            return []
        if block.get("before") is None:
            return [planned("s3", "DeletePublicAccessBlock", Bucket=target.resource_id)]
        return [planned("s3", "PutPublicAccessBlock", Bucket=target.resource_id, **block["before"])]

    def rollback(self, target: Target, ctx: ActionContext, result: StepResult) -> StepResult | None:
        block = result.changes.get("block")
        if not block:
            return None
        rec = self.recorder(ctx)
        s3 = ctx.client("s3", target)
        with rec.guard():
            if block.get("before") is None:
                s3.delete_public_access_block(Bucket=target.resource_id)
            else:
                s3.put_public_access_block(
                    Bucket=target.resource_id, PublicAccessBlockConfiguration=block["before"]
                )
            rec.change("block", {"restored": block.get("before")})
        return rec.result()
