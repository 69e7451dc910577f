"""ActionContext: retry configuration, client reuse, assumed-role credentials refreshed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from containment.context import ActionContext
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
