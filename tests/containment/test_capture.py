"""Capture details: the console screenshot (Stubber: moto has no GetConsoleScreenshot)."""

from __future__ import annotations

import base64
import hashlib
import json

from botocore.stub import Stubber

from containment.executor import run_plan
from tests.containment import helpers as h

JPEG = base64.b64encode(b"\xff\xd8\xff\xe0fake-jpeg-bytes").decode()


def test_screenshot_is_kept_when_available(world, instance, make_ctx, calls) -> None:
    stubbers: list[Stubber] = []

    def stub_screenshot(client) -> None:
        # The screenshot goes through its own no-retry client: stub just that one.
        if client.meta.service_model.service_name == "ec2" and (
            client.meta.config.retries.get("total_max_attempts") == 1
        ):
            stubber = Stubber(client)
            stubber.add_response(
                "get_console_screenshot",
                {"InstanceId": world.instance_id, "ImageData": JPEG},
                {"InstanceId": world.instance_id, "WakeUp": False},
            )
            stubber.activate()
            stubbers.append(stubber)

    ctx = make_ctx(client_hooks=(calls.hook, stub_screenshot))
    results = run_plan(target=instance, ctx=ctx, action_names=["evidence"])
    assert list(results) == ["capture", "evidence"]
    shot = results["capture"].evidence["screenshot"]
    assert shot == {
        "available": True,
        "sha256": hashlib.sha256(JPEG.encode()).hexdigest(),
        "bytes": len(JPEG),
    }
    stubbers[0].assert_no_pending_responses()
    ev = results["evidence"].evidence
    body = json.loads(h.client("s3").get_object(Bucket=ev["bucket"], Key=ev["key"])["Body"].read())
    assert body["screenshot"]["image_base64"] == JPEG  # the image itself only goes to S3
    assert "image_base64" not in json.dumps(results["capture"].to_dict())


def test_missing_screenshot_is_recorded_not_fatal(world, instance, make_ctx) -> None:
    results = run_plan(target=instance, ctx=make_ctx(), action_names=["capture"])
    capture = results["capture"]
    assert capture.status == "succeeded"
    assert capture.evidence["screenshot"] == {"available": False}
    assert "screenshot" in capture.evidence["optional_errors"]
    assert capture.evidence["console_output_sha256"]


def test_unknown_role_sharing_is_said_not_hidden(world, instance, make_ctx, faults) -> None:
    from commands.approvals.plans import blast_radius
    from containment.actions.capture import inspect_instance

    faults.fail("ListInstanceProfilesForRole", "AccessDenied", message="not allowed")
    facts = inspect_instance(instance, make_ctx())
    assert "shared_with" not in facts["iam"]
    assert facts["iam"]["shared_check_error"]["code"] == "AccessDenied"
    attached = blast_radius(facts)["attached"]
    assert any(
        "could not check which other instances use role(s) app-role: AccessDenied" in line
        for line in attached
    ), attached
