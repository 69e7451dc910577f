"""ActionContext: retry configuration, client reuse (within a context, and across runs in the
bot's own account, each run told of its own retries), assumed-role credentials refreshed."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse

from containment.concurrency import ContextPool
from containment.context import ActionContext, retries_reported_to, shareable
from containment.targets import Target
from tests.clock import TEST_CLOCK
from tests.containment.conftest import CallLog
from tests.containment.world import REGION


def test_clients_use_standard_retries_and_are_reused() -> None:
    ctx = ActionContext(
        now=TEST_CLOCK.now, incident_key="INC-1", retry_mode="adaptive", max_attempts=4
    )
    target = Target(kind="instance", resource_id="i-12345678", region=REGION)
    ec2 = ctx.client("ec2", target)
    assert ec2.meta.config.retries == {"mode": "adaptive", "total_max_attempts": 4}
    assert ctx.client("ec2", target) is ec2
    assert ctx.client("ec2", target, max_attempts=1) is not ec2
    assert (
        ActionContext(now=TEST_CLOCK.now, incident_key="x").config().retries["mode"] == "standard"
    )


def test_role_session_name_is_valid_for_sts() -> None:
    assert (
        ActionContext(now=TEST_CLOCK.now, incident_key="INC 42/a b").role_session_name()
        == "incident-bot-INC-42-a-b"
    )
    assert len(ActionContext(now=TEST_CLOCK.now, incident_key="I" * 100).role_session_name()) == 64


@pytest.mark.usefixtures("aws")
def test_assumed_credentials_are_renewed_before_they_expire() -> None:
    clock = {"now": datetime.now(UTC)}
    log = CallLog()
    ctx = ActionContext(
        incident_key="INC-3",
        cross_account_role_name="IncidentBotResponder",
        external_id="ext",
        client_hooks=(log.hook,),
        now=lambda: clock["now"],
    )
    target = Target(
        kind="instance", resource_id="i-12345678", region=REGION, account_id="222222222222"
    )
    first = ctx.client("ec2", target)
    assert ctx.client("ec2", target) is first
    clock["now"] += timedelta(minutes=58)  # moto's credentials last an hour
    renewed = ctx.client("ec2", target)
    assert renewed is not first
    assert [c.operation for c in log.calls] == ["AssumeRole", "AssumeRole"]
    # The bot's own account (the evidence bucket) needs no role.
    ctx.home_client("s3", REGION)
    assert [c.operation for c in log.calls] == ["AssumeRole", "AssumeRole"]


# -- clients shared by every run in the bot's own account ------------------------------------

EC2_INTERNAL_ERROR = (
    b'<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>InternalError'
    b"</Code><Message>An internal error has occurred</Message></Error></Errors>"
    b"<RequestID>59dbff89-35bd-4eac-99ed-be587EXAMPLE</RequestID></Response>"
)


class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.data


_attempts = threading.local()


def _first_attempt_fails(request: Any, **_: Any) -> AWSResponse | None:
    """EC2 answers 500 to every call's first attempt in each thread (botocore retries it)."""
    if getattr(_attempts, "failed", False):
        _attempts.failed = False
        return None
    _attempts.failed = True
    return AWSResponse(request.url, 500, {}, _Body(EC2_INTERNAL_ERROR))


@shareable
def first_attempts_fail(client: Any) -> None:
    if client.meta.service_model.service_name == "ec2":
        client.meta.events.register_first("before-send.ec2.DescribeVpcs", _first_attempt_fails)


@pytest.mark.usefixtures("aws")
def test_runs_share_the_bots_own_clients_and_each_hears_of_its_own_retries() -> None:
    first: list[dict[str, Any]] = []
    second: list[dict[str, Any]] = []
    hooks = (first_attempts_fail,)
    a = ActionContext(
        now=TEST_CLOCK.now, incident_key="INC-1", on_aws_retry=first.append, client_hooks=hooks
    )
    b = ActionContext(
        now=TEST_CLOCK.now, incident_key="INC-2", on_aws_retry=second.append, client_hooks=hooks
    )
    target = Target(kind="instance", resource_id="i-12345678", region=REGION)
    ec2 = a.client("ec2", target)
    assert b.client("ec2", target) is ec2  # made once for both runs
    # A hook not known to be stateless keeps its clients to its own context.
    own = ActionContext(now=TEST_CLOCK.now, incident_key="INC-3", client_hooks=(lambda c: None,))
    assert own.client("ec2", target) is not ec2

    def run(ctx: ActionContext, calls: int) -> None:
        # As the executor runs a plan: the run's reporter set, its calls made in pool threads.
        with retries_reported_to(ctx.on_aws_retry), ContextPool(max_workers=calls) as pool:
            futures = [pool.submit(ec2.describe_vpcs) for _ in range(calls)]
        assert all(f.result()["Vpcs"] for f in futures)

    runs = [threading.Thread(target=run, args=(a, 3)), threading.Thread(target=run, args=(b, 2))]
    for t in runs:
        t.start()
    for t in runs:
        t.join()
    assert [(r["operation"], r["attempt"], r["after"]) for r in first] == [
        ("DescribeVpcs", 2, "HTTP 500 InternalError")
    ] * 3
    assert len(second) == 2
    ec2.describe_vpcs()  # outside any run: retried, told to no one
    assert (len(first), len(second)) == (3, 2)
