"""Lambda function lookup: runtime, role, VPC, function URL and the resource-policy statements
open to anyone; and its summary lines."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from commands.impact_lookups.reads import Clients, Reader, Unread, first_read, labelled
from storage.facts import FunctionImpact

# Condition keys that tie a wildcard principal to one account, organization or source: such a
# statement is not open to anyone.
_LIMITING_KEYS = {
    "aws:sourcearn",
    "aws:sourceaccount",
    "aws:sourceowner",
    "aws:sourceorgid",
    "aws:principalorgid",
    "aws:principalaccount",
    "aws:principalarn",
    "aws:principalorgpaths",
}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def public_statements(policy: str | Mapping[str, Any]) -> list[str]:
    """The Sids of resource-policy statements that allow anyone (a wildcard principal with no
    condition tying it to an account, organization or source)."""
    doc = json.loads(policy) if isinstance(policy, str) else policy
    found = []
    for i, statement in enumerate(_as_list(doc.get("Statement") or [])):
        if not isinstance(statement, dict) or statement.get("Effect") != "Allow":
            continue
        principal = statement.get("Principal")
        anyone = principal == "*" or (
            isinstance(principal, dict) and "*" in _as_list(principal.get("AWS"))
        )
        if not anyone:
            continue
        keys = {
            str(k).lower()
            for test in (statement.get("Condition") or {}).values()
            if isinstance(test, dict)
            for k in test
        }
        if not keys & _LIMITING_KEYS:
            found.append(str(statement.get("Sid") or f"statement {i + 1}"))
    return found


def function_impact(
    *, client: Clients, name: str, region: str, tag_keys: Mapping[str, str], notes: list[str]
) -> dict[str, Any]:
    read = Reader(notes)
    what = f"Lambda function {name}"
    lam = client("lambda", region)
    got = first_read(
        notes, what, lambda: lam.get_function(FunctionName=name), {"ResourceNotFoundException"}
    )
    if isinstance(got, Unread):
        return {}
    conf = got.get("Configuration") or {}
    vpc_config = conf.get("VpcConfig") or {}
    function: FunctionImpact = {
        "runtime": conf.get("Runtime"),
        "package_type": conf.get("PackageType"),
        "role": conf.get("Role"),
        "last_modified": conf.get("LastModified"),
        "vpc": (
            {
                "vpc_id": vpc_config.get("VpcId"),
                "subnets": list(vpc_config.get("SubnetIds") or []),
                "security_groups": list(vpc_config.get("SecurityGroupIds") or []),
            }
            if vpc_config.get("SubnetIds")
            else None
        ),
    }
    # GetFunction returns Tags only to callers allowed lambda:ListTags.
    out: dict[str, Any] = {"tags": labelled(got.get("Tags") or {}, tag_keys)}
    policy = read(
        f"{what} resource policy",
        lambda: lam.get_policy(FunctionName=name),
        {"ResourceNotFoundException": None},
    )
    if not isinstance(policy, Unread):
        function["public_statements"] = public_statements(policy["Policy"]) if policy else []
    url = read(
        f"{what} function URL",
        lambda: lam.get_function_url_config(FunctionName=name),
        {"ResourceNotFoundException": None},
    )
    if not isinstance(url, Unread):
        function["url_auth"] = url.get("AuthType") if url else None
    out["function"] = function
    return out


def function_lines(f: Mapping[str, Any]) -> list[str]:
    runtime = f.get("runtime") or f.get("package_type") or "?"
    role = (f.get("role") or "?").rsplit("/", 1)[-1]
    lines = [f"Lambda {runtime}, execution role {role}, last modified {f.get('last_modified')}"]
    vpc = f.get("vpc")
    if vpc:
        lines.append(
            f"in VPC {vpc.get('vpc_id')}: subnets {', '.join(vpc['subnets']) or 'none'}; "
            f"security groups {', '.join(vpc['security_groups']) or 'none'}"
        )
    elif "vpc" in f:
        lines.append("not in a VPC (reaches the internet directly)")
    exposure = []
    if "url_auth" in f:
        auth = f["url_auth"]
        exposure.append(
            "no function URL"
            if auth is None
            else ("function URL PUBLIC (auth NONE)" if auth == "NONE" else f"function URL {auth}")
        )
    if "public_statements" in f:
        public = f["public_statements"]
        exposure.append(
            "resource policy allows anyone: " + ", ".join(public)
            if public
            else "no public resource-policy statements"
        )
    if exposure:
        lines.append("; ".join(exposure))
    return lines
