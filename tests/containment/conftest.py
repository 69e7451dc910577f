"""Fixtures for containment tests: the moto world, call recording and fault injection."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from moto import mock_aws

from containment.context import ActionContext
from containment.revoker.local import in_process_revoker
from containment.targets import Target
from tests.clock import TEST_CLOCK
from tests.containment.world import REGION, World, build_world

READ_PREFIXES = ("Describe", "Get", "List")
# API operations whose IAM action has another name (Service Authorization Reference).
IAM_ACTION_OF = {
    "s3:GetPublicAccessBlock": "s3:GetBucketPublicAccessBlock",
    "s3:PutPublicAccessBlock": "s3:PutBucketPublicAccessBlock",
    "s3:DeletePublicAccessBlock": "s3:PutBucketPublicAccessBlock",
    "s3:GetObjectLockConfiguration": "s3:GetBucketObjectLockConfiguration",
    "lambda:Invoke": "lambda:InvokeFunction",
}


@dataclass
class Call:
    action: str  # IAM action name, e.g. "ec2:ModifyNetworkInterfaceAttribute"
    operation: str
    params: dict[str, Any]
    step: str | None

    @property
    def is_read(self) -> bool:
        return self.operation.startswith(READ_PREFIXES)


@dataclass
class CallLog:
    """Every AWS call made through clients built by a context, via botocore's before-call."""

    calls: list[Call] = field(default_factory=list)
    step: str | None = None  # set by tests that run one step at a time
    lock: threading.Lock = field(default_factory=threading.Lock)

    def hook(self, client: Any) -> None:
        client.meta.events.register("before-call.*.*", self._record)

    def _record(self, model: Any, params: dict[str, Any], **_: Any) -> None:
        prefix = model.service_model.signing_name
        action = f"{prefix}:{model.name}"
        with self.lock:
            self.calls.append(
                Call(
                    IAM_ACTION_OF.get(action, action),
                    model.name,
                    params.get("body") or {},
                    self.step,
                )
            )

    def operations(self) -> list[str]:
        return [c.operation for c in self.calls]

    def writes(self) -> list[Call]:
        return [c for c in self.calls if not c.is_read]

    def clear(self) -> None:
        with self.lock:
            self.calls.clear()


class Faults:
    """Make chosen operations fail, as AWS would, through botocore's own event hooks."""

    def __init__(self) -> None:
        self.rules: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def fail(
        self,
        operation: str,
        code: str,
        *,
        times: int | None = None,
        status: int = 400,
        message: str = "injected",
        before: Callable[[], None] | None = None,
    ) -> None:
        self.rules.append(
            {
                "op": operation,
                "code": code,
                "left": times,
                "status": status,
                "message": message,
                "before": before,
            }
        )

    def _take(self, operation: str) -> dict[str, Any] | None:
        with self.lock:
            for rule in self.rules:
                if rule["op"] == operation and (rule["left"] is None or rule["left"] > 0):
                    if rule["left"] is not None:
                        rule["left"] -= 1
                    return rule
        return None

    def hook(self, client: Any) -> None:
        # before-send, registered first on the same node as moto's own handler so its response
        # is the one used; the retry handler still sees it (throttling is retried).
        client.meta.events.register_first("before-send", self._send)

    def _send(self, request: Any, **kwargs: Any) -> AWSResponse | None:
        operation = str(kwargs.get("event_name", "")).rsplit(".", 1)[-1]
        rule = self._take(operation)
        if rule is None:
            return None
        if rule["before"]:
            rule["before"]()
        # botocore calls every before-send handler (then takes the first response): point this
        # attempt elsewhere so moto's handler does not carry it out. Retries build new requests.
        request.url = "https://fault-injected.invalid/"
        body = (
            "<?xml version='1.0' encoding='UTF-8'?><Response><Errors><Error>"
            f"<Code>{rule['code']}</Code><Message>{rule['message']}</Message>"
            "</Error></Errors><RequestID>fault</RequestID></Response>"
        ).encode()
        return AWSResponse(request.url, rule["status"], {}, _Raw(body))


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.body


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        yield


@pytest.fixture
def world(aws: None) -> World:
    return build_world()


@pytest.fixture
def calls() -> CallLog:
    return CallLog()


@pytest.fixture
def faults() -> Faults:
    return Faults()


@pytest.fixture
def make_ctx(world: World, calls: CallLog, faults: Faults) -> Callable[..., ActionContext]:
    def make(**kw: Any) -> ActionContext:
        options: dict[str, Any] = {
            "incident_key": "INC-7",
            "finding_id": "gd-finding-1",
            "evidence_bucket": world.bucket,
            "evidence_kms_key_id": world.kms_key_id,
            "now": TEST_CLOCK.now,
        }
        # incident-bot-revoker, run here as the deployed function would (moto runs no Lambda
        # code): last, so the recorder and faults see the bot's Invoke.
        hooks = kw.pop("client_hooks", (calls.hook, faults.hook))
        options["client_hooks"] = (*hooks, in_process_revoker(TEST_CLOCK.now))
        options.update(kw)
        return ActionContext(**options)

    return make


@pytest.fixture
def instance(world: World) -> Target:
    return Target(kind="instance", resource_id=world.instance_id, region=REGION)


@pytest.fixture
def access_key(world: World) -> Target:
    return Target(kind="access_key", resource_id=world.access_key_id, region=REGION)
