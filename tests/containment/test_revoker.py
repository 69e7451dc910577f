"""incident-bot-revoker: its code against moto's IAM, and the bot's calls through it.

The handler writes only its two deny documents under incident-bot- names; anything else is
refused. The bot reaches it only through a Lambda Invoke (run here in-process by
containment/revoker/local.py, as moto runs no Lambda code), and its refusals and IAM's errors
become the step's error.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from containment import revoker
from containment.actions.iam_revoke import DENY_ALL, revoke_older_sessions
from containment.executor import run_plan
from containment.revoker.handler import Refused, handle
from containment.targets import Target
from tests.clock import T0, TEST_CLOCK
from tests.containment.world import REGION

STAMP = "2026-11-27T11:59:00Z"


class Recorded:
    """The handler's own IAM calls, to check them against what its role is granted."""

    def __init__(self) -> None:
        self.actions: list[str] = []
        self.iam = boto3.client("iam", region_name=REGION)
        self.iam.meta.events.register("before-call.*.*", self._record)

    def _record(self, model: Any, **_: Any) -> None:
        self.actions.append(f"iam:{model.name}")


def user_policy(name: str, policy: str) -> dict[str, Any]:
    return boto3.client("iam").get_user_policy(UserName=name, PolicyName=policy)["PolicyDocument"]


def role_policy(name: str, policy: str) -> dict[str, Any]:
    return boto3.client("iam").get_role_policy(RoleName=name, PolicyName=policy)["PolicyDocument"]


def test_writes_exactly_the_two_deny_documents(world) -> None:
    rec = Recorded()
    got = handle(
        {
            "op": "put",
            "principal": "user",
            "name": world.user_name,
            "policy_name": "incident-bot-revoke-sessions-INC-7",
            "issued_before": STAMP,
        },
        rec.iam,
        T0,
    )
    assert got == {"ok": True, "result": "written"}
    doc = user_policy(world.user_name, "incident-bot-revoke-sessions-INC-7")
    assert doc == json.loads(revoke_older_sessions(T0 - timedelta(minutes=1)))
    (statement,) = doc["Statement"]
    assert statement["Effect"] == "Deny" and statement["Action"] == "*"
    assert statement["Condition"] == {"DateLessThan": {"aws:TokenIssueTime": STAMP}}

    body = {"op": "put", "principal": "role", "name": world.role_name}
    body["policy_name"] = "incident-bot-deny-all-INC-7"
    assert handle(body, rec.iam, T0)["result"] == "written"
    assert role_policy(world.role_name, "incident-bot-deny-all-INC-7") == json.loads(DENY_ALL)
    assert handle(body, rec.iam, T0)["result"] == "written"  # again: the same, nothing more
    assert handle({**body, "op": "delete"}, rec.iam, T0) == {"ok": True, "result": "deleted"}
    assert handle({**body, "op": "delete"}, rec.iam, T0) == {"ok": True, "result": "absent"}
    assert boto3.client("iam").list_role_policies(RoleName=world.role_name)["PolicyNames"] == []
    # Every call it made is one its execution role is granted (deploy/iam-policy-revoker.json).
    assert set(rec.actions) <= set(revoker.EXECUTION_PERMISSIONS)
    assert set(rec.actions) == {"iam:PutUserPolicy", "iam:PutRolePolicy", "iam:DeleteRolePolicy"}


REFUSED = [
    # a name it does not own, or one that only looks like it
    {"policy_name": "AllowEverything"},
    {"policy_name": "incident-bot-admin"},
    {"policy_name": "incident-bot-deny-allow"},
    # a document of the caller's own
    {"policy_name": "incident-bot-deny-all", "PolicyDocument": '{"Effect": "Allow"}'},
    # a cut-off in the future (past the minute of skew), or not a UTC timestamp
    {"policy_name": "incident-bot-revoke-sessions-X", "issued_before": "2026-11-27T12:02:00Z"},
    {"policy_name": "incident-bot-revoke-sessions-X", "issued_before": "2026-11-27 12:00"},
    {"policy_name": "incident-bot-revoke-sessions-X"},
    {"policy_name": "incident-bot-deny-all", "issued_before": STAMP},
    # the bot's own roles, other principals, other operations
    {"principal": "role", "name": "incident-bot"},
    {"principal": "role", "name": "incident-bot-revoker"},
    {"principal": "group"},
    {"name": "arn:aws:iam::123456789012:user/ci"},
    {"op": "attach"},
    # revoked sessions stay revoked: only deny-all is ever deleted
    {"op": "delete", "policy_name": "incident-bot-revoke-sessions-INC-7"},
]


@pytest.mark.parametrize("change", REFUSED, ids=lambda c: json.dumps(c)[:60])
def test_refuses_what_it_does_not_own(world, change: dict[str, Any]) -> None:
    rec = Recorded()
    body = {"op": "put", "principal": "user", "name": world.user_name}
    body |= {"policy_name": "incident-bot-deny-all"} | change
    with pytest.raises(Refused):
        handle(body, rec.iam, T0)
    assert rec.actions == []
    assert boto3.client("iam").list_user_policies(UserName=world.user_name)["PolicyNames"] == []


def test_an_iam_error_is_answered_not_raised(world) -> None:
    body = {"op": "put", "principal": "user", "name": "nobody"}
    got = handle(body | {"policy_name": "incident-bot-deny-all"}, Recorded().iam, T0)
    assert got["ok"] is False
    assert got["error"]["Code"] == "NoSuchEntity"
    assert got["error"]["Operation"] == "PutUserPolicy"


def test_the_bot_only_invokes_and_errors_become_client_errors(world, make_ctx, calls) -> None:
    ctx = make_ctx()
    target = Target(kind="user", resource_id=world.user_name, region=REGION)
    body = revoker.request("put", "user", world.user_name, "incident-bot-revoke-sessions-INC-7")
    body["issued_before"] = STAMP
    assert revoker.invoke(ctx, target, body) == "written"
    assert [c.action for c in calls.calls] == ["lambda:InvokeFunction"]
    assert json.loads(calls.calls[0].params) == body  # the payload is all the bot sends

    future = TEST_CLOCK.now() + timedelta(hours=1)
    later = revoker.request(
        "put", "user", world.user_name, "incident-bot-revoke-sessions-X", future
    )
    with pytest.raises(ClientError) as refused:
        revoker.invoke(ctx, target, later)
    assert refused.value.response["Error"]["Code"] == "Refused"
    assert "in the future" in refused.value.response["Error"]["Message"]
    assert refused.value.operation_name == "Invoke"

    missing = revoker.request("put", "user", "nobody", "incident-bot-deny-all")
    with pytest.raises(ClientError) as denied:
        revoker.invoke(ctx, target, missing)
    assert denied.value.response["Error"]["Code"] == "NoSuchEntity"
    assert denied.value.operation_name == "PutUserPolicy"


def test_lambdas_response_shape(world, make_ctx) -> None:
    lam = make_ctx().client("lambda", Target(kind="user", resource_id="x", region=REGION))
    out = lam.invoke(FunctionName="incident-bot-revoker", Payload=b'{"op": "nothing"}')
    assert out["StatusCode"] == 200 and out["FunctionError"] == "Unhandled"
    payload = json.loads(out["Payload"].read())
    assert payload["errorType"] == "Refused"


def test_a_step_fails_with_the_revokers_refusal_and_writes_nothing(world, make_ctx) -> None:
    """A bot whose clock runs ahead of the function's: the cut-off is refused, the step says
    so, and the user has no policy."""
    ahead = make_ctx(now=lambda: TEST_CLOCK.now() + timedelta(hours=2))
    target = Target(kind="user", resource_id=world.user_name, region=REGION)
    results = run_plan(target=target, ctx=ahead, action_names=["revoke_user_sessions_all"])
    step = results["revoke_user_sessions_all"]
    assert step.status == "failed"
    assert step.error["code"] == "Refused" and "in the future" in step.error["message"]
    assert boto3.client("iam").list_user_policies(UserName=world.user_name)["PolicyNames"] == []


class FailFirstInvoke:
    """The revoker unreachable once (not deployed yet, throttled): the Invoke fails."""

    def __init__(self) -> None:
        self.left = 1

    def hook(self, client: Any) -> None:
        client.meta.events.register("before-call.lambda.Invoke", self._fail)

    def _fail(self, **_: Any) -> None:
        if self.left:
            self.left -= 1
            raise ClientError(
                {"Error": {"Code": "ResourceNotFoundException", "Message": "no function"}},
                "Invoke",
            )


def test_a_deny_all_profile_left_without_its_policy_is_finished_on_retry(
    world, instance, make_ctx, calls
) -> None:
    ctx = make_ctx(client_hooks=(calls.hook, FailFirstInvoke().hook))
    first = run_plan(target=instance, ctx=ctx, action_names=["capture", "iam"])
    assert first["iam"].status == "failed"
    assert "incident-bot-revoker is not deployed" in first["iam"].error["message"]
    iam = boto3.client("iam")
    assert iam.list_role_policies(RoleName="incident-bot-deny-all")["PolicyNames"] == []
    # The approval flow's Retry: capture again, then the step; the profile is finished.
    ctx.forget_inspection(instance)
    again = run_plan(target=instance, ctx=ctx, action_names=["capture", "iam"])
    assert again["iam"].status == "succeeded", again["iam"].error
    assert iam.list_role_policies(RoleName="incident-bot-deny-all")["PolicyNames"] == [
        "incident-bot-deny-all"
    ]
