"""The reliability bench: moto_server behind the fault-injecting proxy, once per module."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from botocore.retries.standard import ExponentialBackoff

from bench._proxy import MotoServer
from containment.context import ActionContext
from tests.clock import TEST_CLOCK
from tests.containment.world import REGION, World, build_world
from tests.reliability.aws_proxy import FaultProxy

READ_TIMEOUT = 0.6  # seconds; a held answer comes later than this


class At(boto3.Session):
    """A session whose clients all talk to one endpoint (moto_server or the proxy)."""

    def __init__(self, url: str) -> None:
        super().__init__(region_name=REGION)
        self.url = url

    def client(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        kwargs.setdefault("endpoint_url", self.url)
        return super().client(*args, **kwargs)


@dataclass
class Bench:
    server: MotoServer
    proxy: FaultProxy
    direct: At  # straight to moto_server: building worlds, reading state back
    proxied: At  # through the proxy: what the bot uses
    clean: dict[str, Any] = field(default_factory=dict)
    cases: list[dict[str, Any]] = field(default_factory=list)

    def fresh(self) -> World:
        self.proxy.disarm()
        self.server.reset()
        return build_world(self.direct)

    def ctx(
        self, world: World, retries: list[dict[str, Any]] | None = None, **kw: Any
    ) -> ActionContext:
        options: dict[str, Any] = {
            "incident_key": "INC-18",
            "finding_id": "gd-finding-18",
            "evidence_bucket": world.bucket,
            # No configured key: the evidence step makes the incident's own KMS key (CreateKey).
            "evidence_key_per_incident": True,
            "session_factory": lambda: self.proxied,
            "now": TEST_CLOCK.now,
            "read_timeout": READ_TIMEOUT,
            "connect_timeout": READ_TIMEOUT,
            "sleep": lambda _: None,
        }
        if retries is not None:
            options["on_aws_retry"] = retries.append
        options.update(kw)
        return ActionContext(**options)


@pytest.fixture(scope="module")
def bench() -> Iterator[Bench]:
    with (
        MotoServer() as server,
        FaultProxy(server.url, hold_seconds=READ_TIMEOUT + 0.4) as proxy,
    ):
        yield Bench(server, proxy, At(server.url), At(proxy.url))


@pytest.fixture(autouse=True)
def quick_throttle_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    # botocore waits up to 1 s before retrying a throttled call; the delay is not under test.
    monkeypatch.setitem(ExponentialBackoff._DEFAULT_BACKOFF_CONFIG, "throttling_base_scale", 0.05)
