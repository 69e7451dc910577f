"""Lambda function containment: evidence without secrets, concurrency 0, public and
function-URL permissions removed; rollback restores both."""

from __future__ import annotations

import json

import boto3
import pytest

from commands.approvals.engine import ContainmentEngine
from containment.actions.lambda_function import add_permission_params, exposes
from containment.executor import rollback_plan, run_plan
from containment.targets import Target
from tests.containment.lambda_code import zipped_handler
from tests.containment.test_permissions import attribute_calls, uncovered
from tests.containment.world import REGION

NAME = "thumbnailer"
SECRET = "s3cr3t-db-password"


@pytest.fixture
def fn(world):
    client = boto3.client("lambda", region_name=REGION)
    role = boto3.client("iam").get_role(RoleName=world.role_name)["Role"]["Arn"]
    client.create_function(
        FunctionName=NAME,
        Runtime="python3.11",
        Role=role,
        Handler="handler.handle",
        Code={"ZipFile": zipped_handler()},
        Environment={"Variables": {"DB_PASSWORD": SECRET, "STAGE": "prod"}},
    )
    # Anyone may invoke; S3 may invoke from one bucket (narrowed: kept).
    client.add_permission(
        FunctionName=NAME, StatementId="public", Action="lambda:InvokeFunction", Principal="*"
    )
    client.add_permission(
        FunctionName=NAME,
        StatementId="from-uploads",
        Action="lambda:InvokeFunction",
        Principal="s3.amazonaws.com",
        SourceArn="arn:aws:s3:::uploads",
    )
    return client


def target() -> Target:
    return Target(kind="function", resource_id=NAME, region=REGION)


def sids(client) -> list[str]:
    return [
        s["Sid"] for s in json.loads(client.get_policy(FunctionName=NAME)["Policy"])["Statement"]
    ]


def test_plan_changes_nothing_and_lists_the_exposure(fn, make_ctx, calls) -> None:
    plan = ContainmentEngine().plan(target=target(), ctx=make_ctx())
    assert plan.actions == [
        "capture_function",
        "evidence",
        "function_concurrency_zero",
        "function_remove_public",
    ]
    assert [c.text for c in plan.steps[3].calls] == [
        f"lambda.RemovePermission(FunctionName={NAME}, StatementId=public)"
    ]
    assert "1 public or function-URL permission(s) to remove" in plan.blast_radius["attached"]
    assert all(c.is_read for c in calls.calls)
    assert (
        fn.get_function_concurrency(FunctionName=NAME).get("ReservedConcurrentExecutions") is None
    )


def test_function_is_contained_without_copying_secrets_and_rolled_back(fn, make_ctx, calls):
    fn.put_function_concurrency(FunctionName=NAME, ReservedConcurrentExecutions=5)
    results = run_plan(target=target(), ctx=make_ctx())
    assert all(r.status == "succeeded" for r in results.values()), {
        n: r.error for n, r in results.items()
    }
    assert fn.get_function_concurrency(FunctionName=NAME)["ReservedConcurrentExecutions"] == 0
    assert sids(fn) == ["from-uploads"]
    captured = results["capture_function"].evidence
    assert captured["environment_variable_names"] == ["DB_PASSWORD", "STAGE"]
    assert (
        captured["code_sha256"] == fn.get_function(FunctionName=NAME)["Configuration"]["CodeSha256"]
    )
    assert SECRET not in json.dumps([r.to_dict() for r in results.values()])

    calls.clear()
    again = run_plan(target=target(), ctx=make_ctx())
    assert all(not r.changes for r in again.values())
    # Evidence only (a new capture also adds its hash to the manifest).
    assert {c.action for c in calls.writes()} == {"s3:PutObject"}  # evidence, refused

    undone = rollback_plan(target=target(), ctx=make_ctx(), results=results)
    assert all(r.status == "succeeded" for r in undone.values()), undone
    assert fn.get_function_concurrency(FunctionName=NAME)["ReservedConcurrentExecutions"] == 5
    assert sorted(sids(fn)) == ["from-uploads", "public"]


def test_no_reserved_concurrency_before_means_none_after_rollback(fn, make_ctx) -> None:
    results = run_plan(target=target(), ctx=make_ctx())
    rollback_plan(target=target(), ctx=make_ctx(), results=results)
    assert (
        fn.get_function_concurrency(FunctionName=NAME).get("ReservedConcurrentExecutions") is None
    )


def test_which_statements_expose_a_function() -> None:
    url = {
        "Sid": "url",
        "Effect": "Allow",
        "Principal": "*",
        "Action": "lambda:InvokeFunctionUrl",
        "Condition": {"StringEquals": {"lambda:FunctionUrlAuthType": "NONE"}},
    }
    assert exposes(url)
    assert add_permission_params("f", url)["FunctionUrlAuthType"] == "NONE"
    org = {
        "Sid": "org",
        "Principal": "*",
        "Action": "lambda:InvokeFunction",
        "Condition": {"StringEquals": {"aws:PrincipalOrgID": "o-abc"}},
    }
    assert not exposes(org)
    assert not exposes(
        {
            "Sid": "acct",
            "Principal": {"AWS": "arn:aws:iam::1:root"},
            "Action": "lambda:InvokeFunction",
        }
    )


def test_unknown_function_fails_capture(world, make_ctx) -> None:
    results = run_plan(target=target(), ctx=make_ctx())
    assert results["capture_function"].status == "failed"
    assert results["function_concurrency_zero"].blocked_by == ["capture_function"]


def test_function_steps_call_only_what_they_declare(fn, make_ctx, calls) -> None:
    ctx = make_ctx()
    on_step = attribute_calls(calls)
    results = run_plan(target=target(), ctx=ctx, max_workers=1, on_step=on_step)
    rollback_plan(target=target(), ctx=ctx, results=results, max_workers=1, on_step=on_step)
    assert {c.step for c in calls.calls} >= {
        "capture_function",
        "function_concurrency_zero",
        "function_remove_public",
    }
    assert uncovered(calls) == {}
