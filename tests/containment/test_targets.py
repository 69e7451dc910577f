"""Identifiers /contain and findings name: ids by shape, ARNs, and `kind:name`."""

from __future__ import annotations

import pytest

from containment.targets import Identifier, identify


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("i-0123456789abcdef0", Identifier("instance", "i-0123456789abcdef0")),
        ("AKIAIOSFODNN7EXAMPLE", Identifier("access_key", "AKIAIOSFODNN7EXAMPLE")),
        (
            "arn:aws:iam::123456789012:user/ops/alice",
            Identifier("user", "alice", account_id="123456789012"),
        ),
        (
            "arn:aws:iam::123456789012:role/service/app-role",
            Identifier("role", "app-role", account_id="123456789012"),
        ),
        (
            "arn:aws:sts::123456789012:assumed-role/app-role/i-0abc",
            Identifier("role", "app-role", account_id="123456789012"),
        ),
        ("arn:aws:s3:::exposed-data", Identifier("bucket", "exposed-data")),
        (
            "arn:aws:lambda:eu-west-1:123456789012:function:resize:prod",
            Identifier("function", "resize", region="eu-west-1", account_id="123456789012"),
        ),
        (
            "arn:aws:rds:us-west-2:123456789012:db:orders-db",
            Identifier("db_instance", "orders-db", region="us-west-2", account_id="123456789012"),
        ),
        ("user:alice", Identifier("user", "alice")),
        ("role:app-role", Identifier("role", "app-role")),
        ("bucket:exposed-data", Identifier("bucket", "exposed-data")),
        ("s3:exposed-data", Identifier("bucket", "exposed-data")),
        ("lambda:resize", Identifier("function", "resize")),
        ("RDS:orders-db", Identifier("db_instance", "orders-db")),
    ],
)
def test_identifiers(text: str, expected: Identifier) -> None:
    assert identify(text) == expected


def test_a_finding_kind_reads_a_plain_name() -> None:
    assert identify("exposed-data", kind="bucket") == Identifier("bucket", "exposed-data")
    assert identify("orders-db", kind="db_instance") == Identifier("db_instance", "orders-db")


@pytest.mark.parametrize(
    "text",
    [
        "exposed-data",  # plain names are ambiguous without a kind
        "sg-123",
        "bucket:Not_A_Bucket",
        "arn:aws:s3:::exposed-data/some/object",  # an object, not a bucket
        "arn:aws:iam::123456789012:policy/x",
        "arn:aws:lambda:eu-west-1:123456789012:layer:x:1",
        "user:",
        "role:" + "r" * 65,
    ],
)
def test_what_names_nothing_containable(text: str) -> None:
    assert identify(text) is None
