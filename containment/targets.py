"""What a containment acts on: an EC2 instance, an IAM access key, user or role, an S3 bucket,
a Lambda function or an RDS DB instance.

Instance and access-key ids say what they are. The other kinds' plain names do not (a bucket
and a role may both be called `web`), so they are named by ARN or by a `kind:name` prefix
(`user:alice`, `role:app`, `bucket:logs`, `lambda:resize`, `rds:orders-db`); a GuardDuty
finding says its resource type, so its plain id is parsed with that kind.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

TargetKind = Literal["instance", "access_key", "user", "role", "bucket", "function", "db_instance"]
TARGET_KINDS: tuple[TargetKind, ...] = (
    "instance",
    "access_key",
    "user",
    "role",
    "bucket",
    "function",
    "db_instance",
)

_INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8}([0-9a-f]{9})?$")
_ACCESS_KEY_ID = re.compile(r"^(AKIA|ASIA)[A-Z0-9]{12,124}$")
# Names as AWS allows them (IAM: 64 chars user, 64 role; S3: 3-63; Lambda: 64; RDS: 63).
NAME_PATTERNS: dict[TargetKind, re.Pattern[str]] = {
    "user": re.compile(r"^[\w+=,.@-]{1,64}$"),
    "role": re.compile(r"^[\w+=,.@-]{1,64}$"),
    "bucket": re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"),
    "function": re.compile(r"^[A-Za-z0-9_-]{1,64}$"),
    "db_instance": re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,62}$"),
}
# `kind:name` prefixes a responder may type (and the finding card's button carries).
PREFIXES: dict[str, TargetKind] = {
    "user": "user",
    "role": "role",
    "bucket": "bucket",
    "s3": "bucket",
    "lambda": "function",
    "function": "function",
    "rds": "db_instance",
    "db": "db_instance",
}
_ARN = re.compile(
    r"^arn:(?P<partition>aws[\w-]*):(?P<service>[\w-]+):(?P<region>[\w-]*):"
    r"(?P<account>\d{12})?:(?P<resource>.+)$"
)


@dataclass(frozen=True)
class Target:
    kind: TargetKind
    resource_id: str
    region: str
    account_id: str | None = None
    user_name: str | None = None
    # Principal ARNs the finding names as the actors (an S3 bucket's deny names them).
    principals: tuple[str, ...] = ()

    def __str__(self) -> str:
        where = f"{self.account_id}/{self.region}" if self.account_id else self.region
        return f"{self.kind} {self.resource_id} ({where})"


@dataclass(frozen=True)
class Identifier:
    """A parsed identifier: the kind, the plain id, and what an ARN said about where it is."""

    kind: TargetKind
    resource_id: str
    region: str | None = None
    account_id: str | None = None


def kind_of(resource_id: str) -> TargetKind | None:
    """The target kind a resource id names by its shape alone, or None."""
    if _INSTANCE_ID.match(resource_id):
        return "instance"
    if _ACCESS_KEY_ID.match(resource_id):
        return "access_key"
    return None


def identify(text: str, *, kind: TargetKind | None = None) -> Identifier | None:
    """What `text` names (an id, an ARN, or `kind:name`); `kind` reads a plain name as that
    kind (a finding's resource type). None when it names nothing containable."""
    text = text.strip()
    if text.startswith("arn:"):
        return _from_arn(text)
    shaped = kind_of(text)
    if shaped is not None:
        return Identifier(shaped, text)
    prefix, sep, name = text.partition(":")
    if sep and prefix.lower() in PREFIXES:
        kind, text = PREFIXES[prefix.lower()], name.strip()
    if kind in NAME_PATTERNS and NAME_PATTERNS[kind].match(text):
        return Identifier(kind, text)
    return None


def _from_arn(arn: str) -> Identifier | None:
    m = _ARN.match(arn)
    if m is None:
        return None
    service, region, account = m["service"], m["region"] or None, m["account"] or None
    resource = m["resource"]
    found: tuple[TargetKind, str] | None = None
    if service == "iam" and resource.startswith(("user/", "role/")):
        kind: TargetKind = "user" if resource.startswith("user/") else "role"
        found = (kind, resource.rsplit("/", 1)[1])  # the name is after any path
    elif service == "sts" and resource.startswith("assumed-role/"):
        parts = resource.split("/")
        found = ("role", parts[1]) if len(parts) >= 2 else None
    elif service == "s3" and "/" not in resource:
        found = ("bucket", resource)
    elif service == "lambda" and resource.startswith("function:"):
        found = ("function", resource.split(":")[1])  # a version or alias qualifier is dropped
    elif service == "rds" and resource.startswith("db:"):
        found = ("db_instance", resource[3:])
    elif service == "ec2" and resource.startswith("instance/"):
        found = ("instance", resource.split("/", 1)[1])
    if found is None or not found[1]:
        return None
    kind, name = found
    pattern = NAME_PATTERNS.get(kind)
    if pattern is not None and not pattern.match(name):
        return None
    return Identifier(kind, name, region=region, account_id=account)
