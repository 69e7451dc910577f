"""The bot's side of incident-bot-revoker: every inline IAM policy it writes goes through it.

The bot is granted `lambda:InvokeFunction` on that one function, never `iam:Put*Policy` (IAM
has no condition key on an inline policy's content, so whoever held those rights could write
an Allow). The function's code (handler.py, shipped inline in deploy/) writes only the fixed
deny documents. `invoke` sends one request through the context's clients and turns the
function's refusal or IAM's error into the ClientError the step records.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from botocore.exceptions import ClientError

from containment.context import ActionContext
from containment.policy_scopes import REVOKER_NAME
from containment.registry import PlannedCall
from containment.revoker.handler import STAMP
from containment.targets import Target

FUNCTION_NAME = REVOKER_NAME
PERMISSION = "lambda:InvokeFunction"  # all the bot needs (the contain capability)
# What handler.py calls with its execution role (containment/policy.revoker_document).
EXECUTION_PERMISSIONS = (
    "iam:PutRolePolicy",
    "iam:PutUserPolicy",
    "iam:DeleteRolePolicy",
    "iam:DeleteUserPolicy",
    "logs:CreateLogStream",  # Lambda's own logging
    "logs:PutLogEvents",
)
Principal = Literal["user", "role"]


def request(
    op: Literal["put", "delete"],
    principal: Principal,
    name: str,
    policy_name: str,
    issued_before: datetime | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {"op": op, "principal": principal, "name": name}
    out["policy_name"] = policy_name
    if issued_before is not None:
        out["issued_before"] = issued_before.strftime(STAMP)
    return out


def planned(
    op: Literal["put", "delete"],
    principal: Principal,
    name: str,
    policy_name: str,
    *,
    deny: str | None = None,
    note: str | None = None,
) -> PlannedCall:
    """What the plan shows: the Invoke, and the IAM write the function makes for it."""
    kind = principal.title()
    params: dict[str, Any] = {
        "FunctionName": FUNCTION_NAME,
        "Writes": f"iam.{op.title()}{kind}Policy",
        f"{kind}Name": name,
        "PolicyName": policy_name,
    }
    if deny:
        params["Deny"] = deny
    # What a Step Functions export sends (commands/asl.py): the request itself, the cut-off of
    # a session revoke being the time the state runs (`<now>`).
    body: dict[str, Any] = {"op": op, "principal": principal, "name": name}
    body["policy_name"] = policy_name
    if op == "put" and policy_name.startswith("incident-bot-revoke-sessions"):
        body["issued_before"] = "<now>"
    sdk = {"FunctionName": FUNCTION_NAME, "Payload": json.dumps(body)}
    return PlannedCall("lambda", "Invoke", params, note=note, sdk=sdk)


def invoke(ctx: ActionContext, target: Target, body: dict[str, Any]) -> str:
    """Send one request to the revoker in the target's account; its result ("written",
    "deleted", "absent"). Repeating a request changes nothing more (it is idempotent)."""
    lam = ctx.client("lambda", target)
    try:
        out = lam.invoke(FunctionName=FUNCTION_NAME, Payload=json.dumps(body).encode())
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            exc.response["Error"]["Message"] = (
                f"{FUNCTION_NAME} is not deployed in account {target.account_id or 'of the bot'}"
                f" ({target.region}): deploy deploy/bot.yml or deploy/member-account-role.yml"
            )
        raise
    raw = out["Payload"].read()
    try:
        answer = json.loads(raw or b"null")
    except ValueError:
        answer = None
    if out.get("FunctionError"):
        error = answer if isinstance(answer, dict) else {}
        raise ClientError(
            {
                "Error": {
                    "Code": str(error.get("errorType") or out["FunctionError"]),
                    "Message": f"{FUNCTION_NAME}: {error.get('errorMessage') or raw[:300]!r}",
                }
            },
            "Invoke",
        )
    if not isinstance(answer, dict) or not answer.get("ok"):
        error = (answer or {}).get("error") if isinstance(answer, dict) else None
        error = error if isinstance(error, dict) else {}
        raise ClientError(
            {
                "Error": {
                    "Code": str(error.get("Code") or "RevokerError"),
                    "Message": f"{FUNCTION_NAME}: {error.get('Message') or raw[:300]!r}",
                }
            },
            str(error.get("Operation") or "Invoke"),
        )
    return str(answer.get("result"))
