"""The evidence manifest under concurrency (moto S3): two writers that read the same version
both land their entries, because each write is conditional on the version it read."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from containment import custody
from containment.context import ActionContext
from tests.clock import TEST_CLOCK

BUCKET = "ir-evidence"
REGION = "us-east-1"


@pytest.fixture
def bucket() -> Iterator[None]:
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket=BUCKET)
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        yield


def ctx() -> ActionContext:
    return ActionContext(now=TEST_CLOCK.now, incident_key="INC-1", evidence_bucket=BUCKET)


def entry(name: str) -> dict[str, Any]:
    return {"key": f"incidents/INC-1/{name}.json", "version_id": "v1", "sha256": name * 8}


def manifest() -> dict[str, Any]:
    body = boto3.client("s3", region_name=REGION).get_object(
        Bucket=BUCKET, Key="incidents/INC-1/manifest.json"
    )["Body"]
    return json.loads(body.read())


class Interleave:
    """Both writers read the manifest before either writes; the first writes, the second's
    write waits until the first's has landed (the lost update a plain read-merge-write has)."""

    def __init__(self) -> None:
        self.both_read = threading.Barrier(2, timeout=10)
        self.first_landed = threading.Event()
        self.puts: dict[str, list[int]] = {"first": [], "second": []}

    def client(self, role: str) -> Any:
        s3 = boto3.client("s3", region_name=REGION)

        def before_put(params: dict[str, Any], **_: Any) -> None:
            if not params["Key"].endswith("manifest.json"):
                return
            self.puts[role].append(len(self.puts[role]))
            if len(self.puts[role]) > 1:
                return  # a re-merge after losing the race goes straight through
            self.both_read.wait()
            if role == "second":
                assert self.first_landed.wait(10)

        def after_put(**_: Any) -> None:
            if role == "first":
                self.first_landed.set()

        s3.meta.events.register("before-parameter-build.s3.PutObject", before_put)
        s3.meta.events.register("after-call.s3.PutObject", after_put)
        return s3


def test_two_writers_at_once_both_land_their_entries(bucket: None) -> None:
    custody.add_to_manifest(
        s3=boto3.client("s3", region_name=REGION), bucket=BUCKET, ctx=ctx(), objects=[entry("a")]
    )
    plan = Interleave()
    errors: list[BaseException] = []

    def writer(role: str, **entries: Any) -> None:
        try:
            custody.add_to_manifest(s3=plan.client(role), bucket=BUCKET, ctx=ctx(), **entries)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [
        threading.Thread(target=writer, args=("first",), kwargs={"objects": [entry("b")]}),
        threading.Thread(
            target=writer,
            args=("second",),
            kwargs={"snapshots": [{"snapshot_id": "snap-1", "copy_id": "snap-2"}]},
        ),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert errors == []
    found = manifest()
    assert [o["key"] for o in found["objects"]] == [
        "incidents/INC-1/a.json",
        "incidents/INC-1/b.json",
    ]
    assert [s["copy_id"] for s in found["snapshots"]] == ["snap-2"]
    # The second writer's first write was refused and it merged again: two puts, not one.
    assert len(plan.puts["first"]) == 1 and len(plan.puts["second"]) == 2


def test_two_first_writers_do_not_overwrite_each_other(bucket: None) -> None:
    """No manifest yet: both create it; If-None-Match * lets only one create it."""
    plan = Interleave()
    threads = [
        threading.Thread(
            target=custody.add_to_manifest,
            kwargs={"s3": plan.client(role), "bucket": BUCKET, "ctx": ctx(), "objects": [e]},
        )
        for role, e in (("first", entry("a")), ("second", entry("b")))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert sorted(o["key"] for o in manifest()["objects"]) == [
        "incidents/INC-1/a.json",
        "incidents/INC-1/b.json",
    ]
    assert len(plan.puts["second"]) == 2


def test_a_manifest_that_never_settles_is_an_error_not_a_silent_overwrite(bucket: None) -> None:
    s3 = boto3.client("s3", region_name=REGION)
    custody.add_to_manifest(s3=s3, bucket=BUCKET, ctx=ctx(), objects=[entry("a")])
    busy = boto3.client("s3", region_name=REGION)
    writes = iter(range(100))

    def another_writer(params: dict[str, Any], **_: Any) -> None:
        if params["Key"].endswith("manifest.json") and "IfMatch" in params:
            # Someone else writes between our read and our write, every time.
            changed = {**manifest(), "updated_at": f"write {next(writes)}"}
            s3.put_object(Bucket=BUCKET, Key=params["Key"], Body=json.dumps(changed))

    busy.meta.events.register("before-parameter-build.s3.PutObject", another_writer)
    with pytest.raises(RuntimeError, match="changed under every one of"):
        custody.add_to_manifest(s3=busy, bucket=BUCKET, ctx=ctx(), objects=[entry("b")])
    assert [o["key"] for o in manifest()["objects"]] == ["incidents/INC-1/a.json"]
