"""The create-once guard on its own: when it looks, when it re-sends, what it reports."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError, ReadTimeoutError

from containment.context import ActionContext
from containment.idempotency import client_token, create_once, transient
from tests.clock import TEST_CLOCK


def error(code: str, status: int) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "x"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "CreateThing",
    )


def ctx(retries: list[dict[str, Any]]) -> ActionContext:
    return ActionContext(
        incident_key="INC-5", now=TEST_CLOCK.now, sleep=lambda _: None, on_aws_retry=retries.append
    )


class Attempts:
    """create() failing with the given errors in turn, then answering "made"."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.sent = 0

    def __call__(self) -> str:
        self.sent += 1
        if self.errors:
            raise self.errors.pop(0)
        return "made"


def test_lost_answer_is_looked_for_and_not_sent_again() -> None:
    retries: list[dict[str, Any]] = []
    create = Attempts(ReadTimeoutError(endpoint_url="http://aws"))
    found = create_once(
        ctx(retries), service="ec2", operation="CreateThing", create=create, find=lambda: "there"
    )
    assert (found, create.sent) == ("there", 1)
    assert retries[0]["operation"] == "CreateThing" and "not sent again" in retries[0]["guard"]


def test_nothing_found_is_sent_again_and_reported() -> None:
    retries: list[dict[str, Any]] = []
    looked: list[int] = []
    create = Attempts(error("InternalError", 500))
    out = create_once(
        ctx(retries),
        service="ec2",
        operation="CreateThing",
        create=create,
        find=lambda: looked.append(1),
    )
    assert (out, create.sent, len(looked)) == ("made", 2, 1)
    assert [r["attempt"] for r in retries] == [2]


def test_throttling_is_retried_without_looking() -> None:
    looked: list[int] = []
    create = Attempts(error("RequestLimitExceeded", 503), error("Throttling", 400))
    out = create_once(
        ctx([]),
        service="ec2",
        operation="CreateThing",
        create=create,
        find=lambda: looked.append(1),
    )
    assert (out, create.sent, looked) == ("made", 3, [])


def test_refusals_are_not_retried() -> None:
    create = Attempts(error("UnauthorizedOperation", 403))
    with pytest.raises(ClientError):
        create_once(
            ctx([]), service="ec2", operation="CreateThing", create=create, find=lambda: None
        )
    assert create.sent == 1
    assert not transient(error("InvalidGroup.Duplicate", 400))


def test_gives_up_after_the_last_attempt() -> None:
    create = Attempts(*[error("InternalError", 500) for _ in range(5)])
    with pytest.raises(ClientError):
        create_once(
            ctx([]), service="ec2", operation="CreateThing", create=create, find=lambda: None
        )
    assert create.sent == 5


def test_client_token_is_stable_per_incident_and_resources() -> None:
    one = ctx([])
    token = client_token(one, "flow-logs", "eni-1", "eni-2")
    assert token == client_token(one, "flow-logs", "eni-1", "eni-2")
    assert token != client_token(one, "flow-logs", "eni-1")
    assert len(token) <= 64 and token.isascii()
