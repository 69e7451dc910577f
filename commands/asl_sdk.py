"""What Step Functions' AWS SDK integrations take, for commands/asl.py: a call's Resource ARN,
whether the parameters a plan recorded can be sent as they are (checked against botocore's
model; a state that cannot says EDIT BEFORE RUNNING in its Comment), and quoting inside
intrinsic functions."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

# boto3 service names whose Step Functions SDK integration name differs (the SDK's own ids).
SDK_SERVICE = {
    "elbv2": "elasticloadbalancingv2",
    "elb": "elasticloadbalancing",
    "logs": "cloudwatchlogs",
    "events": "eventbridge",
    "stepfunctions": "sfn",
}
PLACEHOLDER = re.compile(r"^<[^<>]+>$")


def sdk_resource(service: str, operation: str) -> str:
    """`ec2`, `CreateSnapshots` -> `arn:aws:states:::aws-sdk:ec2:createSnapshots`."""
    name = SDK_SERVICE.get(service, service)
    return f"arn:aws:states:::aws-sdk:{name}:{operation[:1].lower()}{operation[1:]}"


def quote(text: str) -> str:
    """Text inside a States.Format string literal: escape what the intrinsic parser reserves."""
    out = text
    for ch in "\\'{}":
        out = out.replace(ch, "\\" + ch)
    return out


def recorded(call: Mapping[str, Any]) -> Any:
    return call.get("sdk") if call.get("sdk") is not None else call.get("params")


EDIT = "EDIT BEFORE RUNNING"


def call_comment(step: Mapping[str, Any], call: Mapping[str, Any], params: Any) -> str:
    text = str(call.get("text") or f"{call.get('service')}.{call.get('operation')}")
    problem = send_problem(str(call["service"]), str(call["operation"]), params)
    return f"{EDIT}: {problem}: {text}" if problem else f"{step.get('action')}: {text}"


def send_problem(service: str, operation: str, params: Any) -> str | None:
    """Why these recorded parameters cannot be sent as they are (None: they can)."""
    if params is None:
        return "the plan did not record this call's parameters"
    if _has_placeholder(params):
        return "a <placeholder> stands for a value only known at run time"
    shape = _input_shape(service, operation)
    if shape is None:
        return None
    given = {k.removesuffix(".$") for k in params}
    unknown = sorted(given - set(shape.members))
    if unknown:
        return f"{', '.join(unknown)} summarise what the bot sends, not {operation} parameters"
    missing = sorted(set(shape.required_members) - given)
    if missing:
        return f"{operation} also needs {', '.join(missing)}"
    return None


def _input_shape(service: str, operation: str) -> Any:
    """botocore's model of the call's input, or None when botocore does not know it."""
    from botocore.exceptions import UnknownServiceError
    from botocore.model import OperationNotFoundError

    try:
        model = _botocore().get_service_model(service)
        return model.operation_model(operation).input_shape
    except (UnknownServiceError, OperationNotFoundError):
        return None


@functools.cache
def _botocore() -> Any:
    import botocore.session

    return botocore.session.get_session()


def states_to_edit(definition: Mapping[str, Any]) -> list[str]:
    """The names of the states whose Comment says they must be edited before running."""
    out: list[str] = []
    for name, state in definition.get("States", {}).items():
        if str(state.get("Comment", "")).startswith(EDIT):
            out.append(name)
        for branch in state.get("Branches", []):
            out += states_to_edit(branch)
    return out


def _has_placeholder(value: Any) -> bool:
    if isinstance(value, str):
        return bool(PLACEHOLDER.match(value))
    if isinstance(value, Mapping):
        return any(_has_placeholder(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_placeholder(v) for v in value)
    return False
