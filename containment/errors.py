"""Turn AWS failures into the error records a step result carries."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

_DENIED = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthFailure"}
_THROTTLED = {
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "SlowDown",
}
# The instance (or its ENIs/volumes) went away or can no longer be changed.
_GONE = {"IncorrectInstanceState", "InstanceTerminated"}


def error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code") or "ClientError")
    return type(exc).__name__


def is_not_found(exc: BaseException) -> bool:
    code = error_code(exc)
    return code.endswith(".NotFound") or code in {"NoSuchEntity", "NotFound", "NoSuchKey"}


def classify(code: str) -> str:
    if code in _DENIED:
        return "access_denied"
    if code in _THROTTLED:
        return "throttled"
    if code in _GONE:
        return "instance_gone"
    if code.endswith(".NotFound") or code.endswith("NotFound") or code == "NoSuchEntity":
        return "not_found"
    return "error"


def error_record(exc: BaseException, *, operation: str | None = None) -> dict[str, Any]:
    code = error_code(exc)
    if isinstance(exc, ClientError):
        message = str(exc.response.get("Error", {}).get("Message") or exc)
        operation = operation or exc.operation_name
    elif isinstance(exc, BotoCoreError):
        message = str(exc)
    else:
        message = str(exc) or type(exc).__name__
    record: dict[str, Any] = {"code": code, "message": message[:500], "kind": classify(code)}
    if operation:
        record["operation"] = operation
    return record
