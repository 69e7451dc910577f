"""The incident's own KMS key in an exported state machine (commands/asl.py), made as the
bot's evidence step makes it (containment.actions.evidence.per_incident_key): found by its
alias, else created (tagged for the incident, the bot's description) and aliased; a run that
loses the alias to another (the bot itself, or a second execution) uses the alias's key and
schedules its own, unused one for deletion. The key's `{KeyId, Arn}` ends at `$.created.key`,
where CreateAlias, the evidence write and the manifest take it from.

Retries: the DescribeKey reads and CreateAlias (which cannot make a second alias; a re-sent
one whose first answer was lost gets AlreadyExists, and the alias is then checked) are
retried. CreateKey takes no client token, so a retried CreateKey could make a second key:
its state has no Retry, and a failed CreateKey fails the execution. Run it again: the
lookup finds the key by its alias if CreateAlias had run; a key made but never aliased stays
tagged `incident-bot:incident` (the bot's own retry adopts such a key; `/incident wipe`
schedules it for deletion with the incident's other keys).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from commands.asl_runtime import KEY
from commands.asl_sdk import sdk_resource

# Step Functions names an AWS SDK integration's errors `<Service>.<Exception>`, PascalCase.
NOT_FOUND = "Kms.NotFoundException"
ALIAS_TAKEN = "Kms.AlreadyExistsException"
_RESULT = {"KeyId.$": "$.KeyMetadata.KeyId", "Arn.$": "$.KeyMetadata.Arn"}
_SCRATCH = "$.key"  # inside the branch; the Parallel puts the result at $.created.key


class Names(Protocol):
    def unique(self, wanted: str) -> str: ...


def _retry(*first: str) -> list[dict[str, Any]]:
    """Retry anything but the errors named (answers the branch acts on, never retried)."""
    out: list[dict[str, Any]] = [{"ErrorEquals": list(first), "MaxAttempts": 0}] if first else []
    return [
        *out,
        {"ErrorEquals": ["States.ALL"], "IntervalSeconds": 2, "MaxAttempts": 3, "BackoffRate": 2},
    ]


def key_states(
    step: Mapping[str, Any],
    create: Mapping[str, Any],
    alias: Mapping[str, Any],
    names: Names,
) -> tuple[str, dict[str, Any]]:
    """One Parallel state of one branch (so its Catches and Choice can end several ways)
    whose result, `{KeyId, Arn}`, lands at `$.created.key`. `create` and `alias`: the SDK
    parameters recorded for CreateKey and CreateAlias."""
    action = step["action"]
    alias_name = str(alias["AliasName"])
    find = names.unique(f"{action} kms.DescribeKey {alias_name}")
    make = names.unique(f"{action} kms.CreateKey")
    name_it = names.unique(f"{action} kms.CreateAlias")
    whose = names.unique(f"{action} alias taken: kms.DescribeKey")
    ours = names.unique(f"{action} alias taken: is it ours?")
    kept = names.unique(f"{action} the alias names our key")
    drop = names.unique(f"{action} kms.ScheduleKeyDeletion (our unused key)")
    use = names.unique(f"{action} use the alias's key")
    alias_params = {k: v for k, v in alias.items() if k != "TargetKeyId"}
    branch: dict[str, Any] = {
        find: {
            "Type": "Task",
            "Comment": f"{action}: the incident's key by its alias, if made before",
            "Resource": sdk_resource("kms", "DescribeKey"),
            "Parameters": {"KeyId": alias_name},
            "ResultSelector": _RESULT,
            "ResultPath": _SCRATCH,
            "Retry": _retry(NOT_FOUND),
            "Catch": [{"ErrorEquals": [NOT_FOUND], "ResultPath": "$.lookup", "Next": make}],
            "End": True,
        },
        make: {
            "Type": "Task",
            "Comment": (
                f"{action}: the incident's own key (crypto-shredded by the wipe). Not retried: "
                "CreateKey takes no client token, so a retry could make a second key"
            ),
            "Resource": sdk_resource("kms", "CreateKey"),
            "Parameters": dict(create),
            "ResultSelector": _RESULT,
            "ResultPath": _SCRATCH,
            "Next": name_it,
        },
        name_it: {
            "Type": "Task",
            "Comment": f"{action}: {alias_name} names the key just made",
            "Resource": sdk_resource("kms", "CreateAlias"),
            "Parameters": {**alias_params, "TargetKeyId.$": f"{_SCRATCH}.KeyId"},
            "ResultPath": None,
            "Retry": _retry(ALIAS_TAKEN),
            "Catch": [{"ErrorEquals": [ALIAS_TAKEN], "ResultPath": "$.taken", "Next": whose}],
            "End": True,
        },
        whose: {
            "Type": "Task",
            "Comment": f"{action}: which key {alias_name} names (a re-sent CreateAlias, or a race)",
            "Resource": sdk_resource("kms", "DescribeKey"),
            "Parameters": {"KeyId": alias_name},
            "ResultSelector": _RESULT,
            "ResultPath": "$.aliased",
            "Retry": _retry(),
            "Next": ours,
        },
        ours: {
            "Type": "Choice",
            "Choices": [
                {
                    "Variable": "$.aliased.KeyId",
                    "StringEqualsPath": f"{_SCRATCH}.KeyId",
                    "Next": kept,
                }
            ],
            "Default": drop,
        },
        kept: {"Type": "Pass", "Comment": "our own alias, its first answer lost", "End": True},
        drop: {
            "Type": "Task",
            "Comment": f"{action}: another run aliased its key first; ours was never used",
            "Resource": sdk_resource("kms", "ScheduleKeyDeletion"),
            "Parameters": {"KeyId.$": f"{_SCRATCH}.KeyId", "PendingWindowInDays": 7},
            "ResultPath": None,
            "Next": use,
        },
        use: {"Type": "Pass", "InputPath": "$.aliased", "ResultPath": _SCRATCH, "End": True},
    }
    state = {
        "Type": "Parallel",
        "Comment": (
            f"{action}: the incident's own KMS key ({alias_name}), found or made; "
            f"its KeyId and Arn are kept under $.created.{KEY}"
        ),
        "Branches": [{"StartAt": find, "States": branch}],
        "ResultSelector": {
            "KeyId.$": f"$[0].{_SCRATCH[2:]}.KeyId",
            "Arn.$": f"$[0].{_SCRATCH[2:]}.Arn",
        },
        "ResultPath": f"$.created.{KEY}",
    }
    return names.unique(f"{action} the incident's KMS key"), state
