"""incident-bot-revoker (AWS Lambda): the one writer of incident-bot's inline IAM policies.

It writes only two fixed deny documents, under incident-bot- names, and deletes only the
deny-all ones: no request can make it write an Allow. Stdlib and boto3 only (shipped inline).
"""

import json
import os
import re
from datetime import UTC, datetime, timedelta
from typing import Any

NAME = re.compile(r"[\w+=,.@-]{1,64}")
POLICY = re.compile(r"incident-bot-(deny-all|revoke-sessions)(-[\w+=,.@-]{1,99})?")
STAMP = "%Y-%m-%dT%H:%M:%SZ"
SKEW = timedelta(seconds=60)  # the bot's clock may run a little ahead of this one
KEYS = ("op", "principal", "name", "policy_name", "issued_before")
# The bot's own roles (its execution role's Deny says the same).
PROTECTED = os.environ.get("PROTECTED_ROLES", "incident-bot incident-bot-revoker").split()


class Refused(ValueError):
    """A request this function does not carry out."""


def document(policy_name: str, issued_before: Any = None, now: Any = None) -> str:
    """Deny everything, or everything to sessions issued before `issued_before`."""
    match = POLICY.fullmatch(policy_name)
    if match is None:
        raise Refused("policy_name must be incident-bot-deny-all* or incident-bot-revoke-sessions*")
    deny: dict[str, Any] = {"Sid": "IncidentBotDenyAll", "Effect": "Deny"}
    deny |= {"Action": "*", "Resource": "*"}
    if match[1] == "deny-all":
        if issued_before is not None:
            raise Refused("a deny-all policy takes no issued_before")
    else:
        try:
            cut = re.sub(r"\.\d{1,6}Z$", "Z", issued_before)  # Step Functions' ms
            when = datetime.strptime(cut, STAMP).replace(tzinfo=UTC)
        except (TypeError, ValueError):
            raise Refused(f"issued_before must be UTC as {STAMP}") from None
        if now is not None and when > now + SKEW:
            raise Refused(f"issued_before {issued_before} is in the future")
        deny["Sid"] = "IncidentBotRevokeOlderSessions"
        deny["Condition"] = {"DateLessThan": {"aws:TokenIssueTime": issued_before}}
    return json.dumps({"Version": "2012-10-17", "Statement": [deny]})


def handle(event: Any, iam: Any, now: datetime) -> dict[str, Any]:
    """Carry out one request with `iam` (a boto3 IAM client), or refuse it."""
    if not isinstance(event, dict) or set(event) - set(KEYS):
        raise Refused(f"the request is a JSON object with keys among {KEYS}")
    op, who, name, policy = (event.get(k) for k in KEYS[:4])
    if who not in ("user", "role"):
        raise Refused("principal must be user or role")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise Refused("name must be an IAM user or role name")
    if who == "role" and name in PROTECTED:
        raise Refused(f"role {name} is incident-bot's own")
    if op not in ("put", "delete"):
        raise Refused("op must be put or delete")
    deletable = re.fullmatch(r"incident-bot-deny-all(-[\w+=,.@-]{1,99})?", str(policy))
    if op == "put":
        call = {"PolicyDocument": document(str(policy), event.get("issued_before"), now)}
    elif deletable and "issued_before" not in event:
        call = {}
    else:
        raise Refused("only a deny-all policy is deleted: revoked sessions stay revoked")
    method = f"{op}_{who}_policy"
    try:
        getattr(iam, method)(**{f"{who.title()}Name": name, "PolicyName": policy}, **call)
    except Exception as exc:  # IAM's answer goes back to the bot, which records it
        error = dict(getattr(exc, "response", {}).get("Error") or {})
        if not error:
            raise
        if op == "delete" and error.get("Code") == "NoSuchEntity":
            return {"ok": True, "result": "absent"}
        error["Operation"] = "".join(w.title() for w in method.split("_"))
        return {"ok": False, "error": error}
    return {"ok": True, "result": "written" if op == "put" else "deleted"}


def lambda_handler(event: Any, context: Any) -> dict[str, Any]:
    import boto3

    return handle(event, boto3.client("iam"), datetime.now(UTC))
