"""Create a resource once, even when AWS's answer is lost on the way back.

A create whose answer is lost (connection dropped, read timeout) may well have taken effect;
botocore's automatic retry then sends it again and, for APIs without an idempotency token
(CreateSnapshots, CreateSecurityGroup, CreateKey, ...), AWS makes a second one. So such
creates go through a client that does not retry, and after a transient failure we first look
for the incident's own tagged resource; only when it is not there is the create sent again.
APIs that take a `ClientToken` get one derived from the incident (`client_token`), so a
retry of the whole step is recognised by AWS too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, TypeVar

from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

from containment.context import ActionContext
from containment.errors import error_code, error_record

T = TypeVar("T")

_THROTTLED = {
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "RequestThrottled",
    "SlowDown",
}
ATTEMPTS = 5
BACKOFF = (0.2, 0.5, 1.0, 2.0)  # seconds between attempts


def transient(exc: BaseException) -> bool:
    """Worth another attempt: the network, a 5xx or throttling (not a refusal)."""
    if isinstance(exc, (ConnectionError, HTTPClientError)):
        return True
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return status >= 500 or error_code(exc) in _THROTTLED
    return False


def create_once(
    ctx: ActionContext,
    *,
    service: str,
    operation: str,
    create: Callable[[], T],
    find: Callable[[], T | None],
    attempts: int = ATTEMPTS,
) -> T:
    """`create()` (on a client built with max_attempts=1) at most until it is known to exist.

    Before every attempt after the first, `find()` looks for what an earlier attempt may have
    made; each attempt sent again is reported to `ctx.on_aws_retry` like botocore's own."""
    for attempt in range(1, attempts + 1):
        try:
            return create()
        except Exception as exc:
            if not transient(exc) or attempt == attempts:
                raise
            failure = error_record(exc, operation=operation)
        found = find() if lost_answer_code(failure) else None
        if found is not None:
            _report(ctx, service, operation, attempt + 1, failure, found=True)
            return found
        _report(ctx, service, operation, attempt + 1, failure, found=False)
        ctx.sleep(BACKOFF[min(attempt, len(BACKOFF)) - 1])
    raise AssertionError("unreachable")


def lost_answer_code(failure: dict[str, Any]) -> bool:
    # Throttling is a refusal before the call ran: nothing to look for. Anything else
    # transient (a lost connection, a timeout, a 5xx) may have run.
    return failure.get("code") not in _THROTTLED


def _report(
    ctx: ActionContext,
    service: str,
    operation: str,
    attempt: int,
    failure: dict[str, Any],
    *,
    found: bool,
) -> None:
    if ctx.on_aws_retry is None:
        return
    ctx.on_aws_retry(
        {
            "service": service,
            "operation": operation,
            "attempt": attempt,
            "after": failure.get("code") or "a failed attempt",
            "guard": "found what the lost attempt made; not sent again"
            if found
            else "looked for the incident's resource first; none, sent again",
        }
    )


def client_token(ctx: ActionContext, *parts: str) -> str:
    """A ClientToken (at most 64 ASCII characters) that is the same for the same incident and
    resources, so AWS recognises a repeated create, also across a retried step."""
    digest = hashlib.sha256("\0".join((ctx.incident_key, *parts)).encode()).hexdigest()
    return f"incident-bot-{digest[:48]}"
