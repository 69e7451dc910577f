"""What a containment acts on: an EC2 instance or an IAM access key."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

TargetKind = Literal["instance", "access_key"]

_INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8}([0-9a-f]{9})?$")
_ACCESS_KEY_ID = re.compile(r"^(AKIA|ASIA)[A-Z0-9]{12,124}$")


@dataclass(frozen=True)
class Target:
    kind: TargetKind
    resource_id: str
    region: str
    account_id: str | None = None
    user_name: str | None = None

    def __str__(self) -> str:
        where = f"{self.account_id}/{self.region}" if self.account_id else self.region
        return f"{self.kind} {self.resource_id} ({where})"


def kind_of(resource_id: str) -> TargetKind | None:
    """The target kind a resource id names, or None when it names neither."""
    if _INSTANCE_ID.match(resource_id):
        return "instance"
    if _ACCESS_KEY_ID.match(resource_id):
        return "access_key"
    return None
