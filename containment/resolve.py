"""Which kinds of resource a plain name names in an account, by asking AWS.

`/contain orders-db` could be a bucket, a role or a database. Each capture step's own first
read (already in the policy) answers "is there one?"; a name that exists as exactly one kind
is that kind, and the caller asks the responder to say `kind:name` when it is several.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from containment.concurrency import parallel
from containment.context import ActionContext
from containment.errors import classify, error_code
from containment.targets import NAME_PATTERNS, Target, TargetKind

_PROBES: dict[TargetKind, Callable[[Any, str], Any]] = {
    "user": lambda iam, n: iam.get_user(UserName=n),
    "role": lambda iam, n: iam.get_role(RoleName=n),
    "bucket": lambda s3, n: s3.get_bucket_acl(Bucket=n),
    "function": lambda fn, n: fn.get_function(FunctionName=n),
    "db_instance": lambda rds, n: rds.describe_db_instances(DBInstanceIdentifier=n),
}
_SERVICE: dict[TargetKind, str] = {
    "user": "iam",
    "role": "iam",
    "bucket": "s3",
    "function": "lambda",
    "db_instance": "rds",
}
# What each service answers for "no such thing" besides the generic not-found codes.
_ABSENT = {"NoSuchBucket", "ResourceNotFoundException", "DBInstanceNotFound", "InvalidBucketName"}


def kinds_named(
    name: str, *, region: str, account_id: str | None, ctx: ActionContext
) -> list[TargetKind]:
    """Every kind a resource called `name` exists as (kinds whose names it cannot be are not
    asked). Reads only; a kind the bot may not read is left out, not guessed."""
    candidates = [k for k, pattern in NAME_PATTERNS.items() if pattern.match(name)]

    def probe(kind: TargetKind) -> Callable[[], bool]:
        def run() -> bool:
            target = Target(kind=kind, resource_id=name, region=region, account_id=account_id)
            client = ctx.client(_SERVICE[kind], target, max_attempts=1)
            try:
                _PROBES[kind](client, name)
                return True
            except ClientError as exc:
                code = error_code(exc)
                if code in _ABSENT or classify(code) in ("not_found", "access_denied"):
                    return False
                raise

        return run

    found = parallel(*[probe(k) for k in candidates])
    return [k for k, there in zip(candidates, found, strict=True) if there]
