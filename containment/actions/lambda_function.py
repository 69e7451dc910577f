"""Lambda function containment: evidence, then no more invocations (reserved concurrency 0)
and no more public or function-URL invocation rights. Rollback restores the concurrency
setting and re-adds each removed permission from its captured statement.

Environment variables are recorded by name only: their values are often secrets, and the
evidence object must not become a second copy of them.
"""

from __future__ import annotations

import json
from typing import Any

from containment.actions.capture_facts import CaptureFacts, absent_as_none, planned
from containment.context import ActionContext
from containment.jsonsafe import jsonable
from containment.registry import Action, Facts, PlannedCall, RunState, StepResult
from containment.targets import Target

# Conditions that narrow a wildcard principal to one source: such a statement is not public.
_NARROWING = ("aws:sourcearn", "aws:sourceaccount", "aws:principalorgid")
URL_ACTION = "lambda:InvokeFunctionUrl"
NOT_FOUND = "ResourceNotFoundException"  # no policy, no URL, or (on removal) no statement


def _condition_values(statement: dict[str, Any]) -> dict[str, Any]:
    """Condition keys (lower-cased) to values, across operators."""
    out: dict[str, Any] = {}
    for block in (statement.get("Condition") or {}).values():
        if isinstance(block, dict):
            out.update({str(k).lower(): v for k, v in block.items()})
    return out


def _is_wildcard(principal: Any) -> bool:
    return principal == "*" or (isinstance(principal, dict) and principal.get("AWS") == "*")


def exposes(statement: dict[str, Any]) -> bool:
    """A statement letting anyone invoke the function, or any function-URL grant."""
    if statement.get("Effect", "Allow") != "Allow":
        return False
    actions = statement.get("Action")
    actions = [actions] if isinstance(actions, str) else list(actions or [])
    if URL_ACTION in actions:
        return True
    narrowed = any(k in _condition_values(statement) for k in _NARROWING)
    return _is_wildcard(statement.get("Principal")) and not narrowed


def add_permission_params(function: str, statement: dict[str, Any]) -> dict[str, Any]:
    """The AddPermission call that recreates a captured policy statement."""
    principal = statement.get("Principal")
    if isinstance(principal, dict):
        principal = principal.get("Service") or principal.get("AWS")
    action = statement.get("Action")
    params: dict[str, Any] = {
        "FunctionName": function,
        "StatementId": statement["Sid"],
        "Action": action if isinstance(action, str) else action[0],
        "Principal": principal,
    }
    cond = _condition_values(statement)
    for key, param in (
        ("aws:sourcearn", "SourceArn"),
        ("aws:sourceaccount", "SourceAccount"),
        ("aws:principalorgid", "PrincipalOrgID"),
        ("lambda:functionurlauthtype", "FunctionUrlAuthType"),
    ):
        if key in cond:
            params[param] = cond[key]
    return params


class CaptureFunction(CaptureFacts):
    name = "capture_function"
    summary = "Record the function's configuration, code SHA-256, resource policy and URL"
    kinds = ("function",)
    permissions = (
        "lambda:GetFunction",
        "lambda:GetFunctionConcurrency",
        "lambda:GetPolicy",
        "lambda:GetFunctionUrlConfig",
    )
    reads = tuple(("lambda", p.split(":")[1]) for p in permissions)

    def read(self, target: Target, ctx: ActionContext) -> Facts:
        fn = ctx.client("lambda", target)
        name = target.resource_id
        config = dict(fn.get_function(FunctionName=name)["Configuration"])
        env = config.pop("Environment", None) or {}
        variables = sorted((env.get("Variables") or {}).keys())  # names only, never values
        reserved = fn.get_function_concurrency(FunctionName=name).get(
            "ReservedConcurrentExecutions"
        )
        policy = absent_as_none(lambda: fn.get_policy(FunctionName=name)["Policy"], NOT_FOUND)
        url = absent_as_none(lambda: fn.get_function_url_config(FunctionName=name), NOT_FOUND)
        statements = json.loads(policy)["Statement"] if policy else []
        exposed = [s for s in statements if exposes(s)]
        radius = [f"runs as {config.get('Role')}"]
        if url:
            radius.append(f"function URL {url.get('FunctionUrl')} (auth {url.get('AuthType')})")
        radius.append(f"{len(exposed)} public or function-URL permission(s) to remove")
        return {
            "function_name": name,
            "function_arn": config.get("FunctionArn"),
            "configuration": jsonable(config),
            "code_sha256": config.get("CodeSha256"),
            "environment_variable_names": variables,
            "reserved_concurrency": reserved,
            "policy": policy,
            "exposing_statements": exposed,
            "function_url": jsonable(url),
            "blast_radius": radius,
        }


class ThrottleFunction(Action):
    name = "function_concurrency_zero"
    summary = "Set reserved concurrency to 0: no invocation runs"
    kinds = ("function",)
    permissions = ("lambda:PutFunctionConcurrency", "lambda:DeleteFunctionConcurrency")
    depends_on = ("capture_function",)

    def calls(
        self,
        target: Target,
        ctx: ActionContext,
        facts: Facts,
        results: dict[str, StepResult] | None = None,
    ) -> list[PlannedCall]:
        if facts.get("reserved_concurrency") == 0:
            return []
        return [
            planned(
                "lambda",
                "PutFunctionConcurrency",
                FunctionName=target.resource_id,
                ReservedConcurrentExecutions=0,
            )
        ]

    def apply(self, target: Target, ctx: ActionContext, state: RunState) -> StepResult:
        if state.facts.get("reserved_concurrency") == 0:
            return self.nothing_to_do(ctx, "reserved concurrency already 0")
        rec = self.recorder(ctx, state)
        with rec.guard():
            rec.change_item("concurrency", "before", state.captured.get("reserved_concurrency"))
            ctx.client("lambda", target).put_function_concurrency(
                FunctionName=target.resource_id, ReservedConcurrentExecutions=0
            )
        return rec.result()

    def rollback_calls(
        self, target: Target, ctx: ActionContext, result: StepResult
    ) -> list[PlannedCall]:
        change = result.changes.get("concurrency")
        if not change:
            return []
        if change.get("before") is None:
            return [planned("lambda", "DeleteFunctionConcurrency", FunctionName=target.resource_id)]
        return [
            planned(
                "lambda",
                "PutFunctionConcurrency",
                FunctionName=target.resource_id,
                ReservedConcurrentExecutions=change["before"],
            )
        ]

    def rollback(self, target: Target, ctx: ActionContext, result: StepResult) -> StepResult | None:
        change = result.changes.get("concurrency")
        if not change:
            return None
        rec = self.recorder(ctx)
        fn = ctx.client("lambda", target)
        with rec.guard():
            if change.get("before") is None:
                fn.delete_function_concurrency(FunctionName=target.resource_id)
            else:
                fn.put_function_concurrency(
                    FunctionName=target.resource_id,
                    ReservedConcurrentExecutions=change["before"],
                )
            rec.change("concurrency", {"restored": change.get("before")})
        return rec.result()


class RemovePublicPermissions(Action):
    name = "function_remove_public"
    summary = "Remove resource-policy statements that let anyone (or a function URL) invoke it"
    kinds = ("function",)
    permissions = ("lambda:RemovePermission", "lambda:AddPermission")
    depends_on = ("capture_function",)

    def calls(
        self,
        target: Target,
        ctx: ActionContext,
        facts: Facts,
        results: dict[str, StepResult] | None = None,
    ) -> list[PlannedCall]:
        return [
            planned(
                "lambda", "RemovePermission", FunctionName=target.resource_id, StatementId=s["Sid"]
            )
            for s in facts.get("exposing_statements") or []
        ]

    def apply(self, target: Target, ctx: ActionContext, state: RunState) -> StepResult:
        exposed = state.facts.get("exposing_statements") or []
        if not exposed:
            return self.nothing_to_do(ctx, "no public or function-URL permission")
        rec = self.recorder(ctx, state)
        fn = ctx.client("lambda", target)
        with rec.guard():
            for statement in exposed:
                sid = statement["Sid"]
                absent_as_none(
                    lambda sid=sid: fn.remove_permission(
                        FunctionName=target.resource_id, StatementId=sid
                    ),
                    NOT_FOUND,
                )
                rec.change_item("removed", sid, statement)
        return rec.result()

    def rollback_calls(
        self, target: Target, ctx: ActionContext, result: StepResult
    ) -> list[PlannedCall]:
        return [
            PlannedCall("lambda", "AddPermission", add_permission_params(target.resource_id, s))
            for s in (result.changes.get("removed") or {}).values()
        ]

    def rollback(self, target: Target, ctx: ActionContext, result: StepResult) -> StepResult | None:
        removed: dict[str, Any] = result.changes.get("removed") or {}
        if not removed:
            return None
        rec = self.recorder(ctx)
        fn = ctx.client("lambda", target)
        with rec.guard():
            for sid, statement in removed.items():
                fn.add_permission(**add_permission_params(target.resource_id, statement))
                rec.change_item("restored", sid, True)
        return rec.result()
