"""The optional volatile capture: SSM Run Command before isolation. moto's SSM does not know
EC2 instances' agents nor run commands, so SSM answers through a Stubber with real shapes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import Stubber

from containment.actions.volatile import DOCUMENT, NOT_MANAGED, TIMEOUT_S, VolatileCapture
from containment.context import ActionContext
from containment.registry import RunState, actions_for, get_action
from containment.targets import Target
from tests.clock import TEST_CLOCK

ROOT = Path(__file__).resolve().parents[2]

INSTANCE = "i-0123456789abcdef0"
TARGET = Target(kind="instance", resource_id=INSTANCE, region="us-east-1")
BUCKET = "ir-evidence"
PREFIX = f"incidents/INC-7/instance/{INSTANCE}/volatile/"
SEND_PARAMS = {
    "InstanceIds": [INSTANCE],
    "DocumentName": DOCUMENT,
    "TimeoutSeconds": TIMEOUT_S,
    "Parameters": {"EvidenceBucket": [BUCKET], "EvidencePrefix": [PREFIX]},
    "Comment": "incident-bot INC-7: volatile capture",
}


def info(ping: str | None) -> dict[str, Any]:
    if ping is None:
        return {"InstanceInformationList": []}
    return {
        "InstanceInformationList": [
            {
                "InstanceId": INSTANCE,
                "PingStatus": ping,
                "AgentVersion": "3.3.40.0",
                "PlatformType": "Linux",
                "PlatformName": "Amazon Linux",
                "ResourceType": "EC2Instance",
            }
        ]
    }


def invocation(status: str) -> dict[str, Any]:
    return {
        "CommandId": "c0ffee00-1111-2222-3333-444455556666",
        "InstanceId": INSTANCE,
        "DocumentName": DOCUMENT,
        "Status": status,
        "StatusDetails": status,
        "ResponseCode": 0 if status == "Success" else 1,
        "StandardOutputContent": "upload: processes.txt",
        "StandardErrorContent": "",
    }


class Ssm:
    """One stubbed SSM client per context (the action reads and sends through one)."""

    def __init__(self) -> None:
        self.stubs: list[Stubber] = []
        self.responses: list[tuple[str, dict[str, Any], dict[str, Any] | None]] = []
        self.hook_error = False

    def hook(self, client: Any) -> None:
        if client.meta.service_model.service_name != "ssm":
            return
        stub = Stubber(client)
        if self.hook_error:
            stub.add_client_error(
                "describe_instance_information", "AccessDeniedException", "not authorized"
            )
        for method, response, params in self.responses:
            stub.add_response(method, response, params)
        stub.activate()
        self.stubs.append(stub)

    def ctx(self, **kw: Any) -> ActionContext:
        return ActionContext(
            now=TEST_CLOCK.now,
            incident_key="INC-7",
            evidence_bucket=BUCKET,
            client_hooks=(self.hook,),
            **kw,
        )


def describe(ping: str | None) -> tuple[str, dict[str, Any], dict[str, Any]]:
    return (
        "describe_instance_information",
        info(ping),
        {"Filters": [{"Key": "InstanceIds", "Values": [INSTANCE]}]},
    )


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(VolatileCapture, "poll_seconds", 0)


def test_is_optional_and_runs_before_isolation_and_the_role_swap() -> None:
    action = get_action("volatile_capture")
    assert action.optional
    assert "volatile_capture" not in [a.name for a in actions_for(TARGET)]
    order = [a.name for a in actions_for(TARGET, include=["volatile_capture"])]
    assert order.index("volatile_capture") < order.index("isolate")
    assert order.index("volatile_capture") < order.index("iam")
    assert {"ssm:SendCommand", "ssm:GetCommandInvocation"} <= set(action.permissions)


def test_the_plan_shows_the_command_and_its_timeout() -> None:
    ssm = Ssm()
    ssm.responses = [describe("Online")]
    calls = VolatileCapture().calls(TARGET, ssm.ctx(), {})
    assert [(c.service, c.operation) for c in calls] == [
        ("ssm", "SendCommand"),
        ("ssm", "GetCommandInvocation"),
    ]
    assert calls[0].params == SEND_PARAMS
    assert "before the security-group change" in (calls[0].note or "")
    assert f"{TIMEOUT_S // 60} min" in (calls[0].note or "")


@pytest.mark.parametrize("ping", [None, "ConnectionLost"])
def test_the_plan_says_when_the_instance_is_not_ssm_managed(ping: str | None) -> None:
    ssm = Ssm()
    ssm.responses = [describe(ping)]
    calls = VolatileCapture().calls(TARGET, ssm.ctx(), {})
    assert len(calls) == 1 and not calls[0].mutating
    assert NOT_MANAGED in (calls[0].note or "")


def test_apply_sends_the_document_and_waits_for_it() -> None:
    ssm = Ssm()
    command_id = "c0ffee00-1111-2222-3333-444455556666"
    wait = {"CommandId": command_id, "InstanceId": INSTANCE}
    ssm.responses = [
        describe("Online"),
        ("send_command", {"Command": {"CommandId": command_id, "Status": "Pending"}}, SEND_PARAMS),
        ("get_command_invocation", invocation("InProgress"), wait),
        ("get_command_invocation", invocation("Success"), wait),
        ("get_command_invocation", invocation("Success"), wait),
    ]
    result = VolatileCapture().apply(TARGET, ssm.ctx(), RunState({}, {}))
    assert result.status == "succeeded", result.error
    assert result.evidence["command_id"] == command_id
    assert result.evidence["location"] == f"s3://{BUCKET}/{PREFIX}"
    assert result.evidence["status"] == "Success"
    assert len(ssm.stubs) == 1
    ssm.stubs[0].assert_no_pending_responses()


def test_a_failed_capture_fails_the_step_with_its_status() -> None:
    ssm = Ssm()
    command_id = "c0ffee00-1111-2222-3333-444455556666"
    wait = {"CommandId": command_id, "InstanceId": INSTANCE}
    ssm.responses = [
        describe("Online"),
        ("send_command", {"Command": {"CommandId": command_id}}, SEND_PARAMS),
        ("get_command_invocation", invocation("Failed"), wait),
    ]
    result = VolatileCapture().apply(TARGET, ssm.ctx(), RunState({}, {}))
    assert result.status == "failed"
    assert result.evidence["status"] == "Failed"


def test_unreadable_ssm_state_is_said_and_isolation_goes_ahead() -> None:
    ssm = Ssm()
    ssm.hook_error = True
    result = VolatileCapture().apply(TARGET, ssm.ctx(), RunState({}, {}))
    assert result.status == "skipped"
    assert (result.note or "").startswith("SSM state unreadable (AccessDeniedException)")


def test_not_ssm_managed_is_nothing_to_do() -> None:
    ssm = Ssm()
    ssm.responses = [describe(None)]
    result = VolatileCapture().apply(TARGET, ssm.ctx(), RunState({}, {}))
    assert result.status == "skipped" and result.note == NOT_MANAGED


def test_the_shipped_document_collects_what_the_step_promises() -> None:
    doc = json.loads((ROOT / "deploy" / "ssm-volatile-capture.json").read_text())
    assert doc["schemaVersion"] == "2.2"
    assert set(doc["parameters"]) >= {"EvidenceBucket", "EvidencePrefix", "MemoryTool"}
    script = "\n".join(doc["mainSteps"][0]["inputs"]["runCommand"])
    for what in ("ps aux", "ss -tunap", "who", "MemoryTool", "{{ EvidencePrefix }}"):
        assert what in script, what
    # The step's prefix passes the document's own validation.
    assert re.fullmatch(doc["parameters"]["EvidencePrefix"]["allowedPattern"], PREFIX)
