"""Which resource tags mean "this holds personal data" under the policy."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from commands.deadlines.policy import DeadlinePolicy


def _tag_pairs(tags: Any) -> list[tuple[str, str]]:
    """Tags as (key, value) from a dict, AWS `[{Key, Value}]` or GuardDuty `[{key, value}]`."""
    if not tags:
        return []
    if isinstance(tags, Mapping):
        return [(str(k), str(v)) for k, v in tags.items() if v is not None]
    pairs = []
    for tag in tags:
        if isinstance(tag, Mapping):
            key = tag.get("Key", tag.get("key"))
            value = tag.get("Value", tag.get("value"))
            if key is not None and value is not None:
                pairs.append((str(key), str(value)))
        elif isinstance(tag, tuple | list) and len(tag) == 2:
            pairs.append((str(tag[0]), str(tag[1])))
    return pairs


def personal_data_tag(tags: Any, *, policy: DeadlinePolicy) -> tuple[str, str] | None:
    """The first tag that marks personal data under the policy, matched case-insensitively.

    Case-insensitive on purpose: `dataclassification=pii` missing the clock costs far more
    than a false start, which `/incident notified` or a note can settle.
    """
    wanted = {
        k.strip().lower(): {v.strip().lower() for v in values}
        for k, values in policy.personal_data_tags.items()
    }
    for key, value in _tag_pairs(tags):
        values = wanted.get(key.strip().lower())
        if values and value.strip().lower() in values:
            return key, value
    return None
