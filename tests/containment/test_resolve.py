"""A plain name is looked up: one kind found is that kind; none or several, the responder
is told what to type instead."""

from __future__ import annotations

import boto3
import pytest

from commands.approvals.plans import check_identifier, is_plain_name, resolve_kind
from commands.errors import UserError
from containment.resolve import kinds_named
from tests.containment.world import REGION


def test_a_name_found_as_one_kind_is_that_kind(world, make_ctx, calls) -> None:
    assert resolve_kind(world.role_name, region=REGION, account_id=None, ctx=make_ctx()) == "role"
    assert resolve_kind(world.bucket, region=REGION, account_id=None, ctx=make_ctx()) == "bucket"
    assert calls.calls and all(c.is_read for c in calls.calls)


def test_a_name_found_as_several_kinds_asks_which(world, make_ctx) -> None:
    boto3.client("s3", region_name=REGION).create_bucket(Bucket="orders-db")
    boto3.client("iam").create_role(RoleName="orders-db", AssumeRolePolicyDocument="{}")
    assert sorted(kinds_named("orders-db", region=REGION, account_id=None, ctx=make_ctx())) == [
        "bucket",
        "role",
    ]
    with pytest.raises(UserError, match="say which: role:orders-db, bucket:orders-db"):
        resolve_kind("orders-db", region=REGION, account_id=None, ctx=make_ctx())


def test_a_name_found_nowhere_says_so(world, make_ctx) -> None:
    with pytest.raises(UserError, match="No IAM user, role, S3 bucket"):
        resolve_kind("nothing-here", region=REGION, account_id=None, ctx=make_ctx())


def test_which_texts_are_plain_names() -> None:
    assert is_plain_name("orders-db") and is_plain_name("ci-deployer")
    assert not is_plain_name("i-0123456789abcdef0")  # an instance id
    assert not is_plain_name("bucket:logs")  # already says its kind
    assert not is_plain_name("sg-12345")  # another AWS id: not a name to look up
    check_identifier("orders-db")
    with pytest.raises(UserError, match="neither an instance id"):
        check_identifier("sg-12345")
