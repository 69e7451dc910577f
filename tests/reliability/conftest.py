"""The reliability bench: moto_server behind the fault-injecting proxy, once per module."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.retries.standard import ExponentialBackoff

from bench._proxy import MotoServer as _MotoServer
from containment.context import ActionContext
from containment.revoker.local import in_process_revoker
from tests.clock import TEST_CLOCK
from tests.containment.world import REGION, World, build_world
from tests.reliability.aws_proxy import FaultProxy
from tests.reliability.kinds import build_kind

ROOT = Path(__file__).resolve().parents[2]
READ_TIMEOUT = 0.6  # seconds; a held answer comes later than this


class MotoServer(_MotoServer):
    """bench's moto_server runner, started through tests/reliability/moto_main.py."""

    def __enter__(self) -> MotoServer:
        command = [sys.executable, "-m", "tests.reliability.moto_main"]
        command += ["-H", "127.0.0.1", "-p", str(self.port)]
        self._proc = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError("moto_server exited at start")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("moto_server did not start within 30 s")


class At(boto3.Session):
    """A session whose clients all talk to one endpoint (moto_server or the proxy)."""

    def __init__(self, url: str) -> None:
        super().__init__(region_name=REGION)
        self.url = url
        self._clients: dict[Any, Any] = {}

    def client(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        kwargs.setdefault("endpoint_url", self.url)
        if "config" in kwargs:  # the bot's own clients: the context caches those
            return super().client(*args, **kwargs)
        # Building worlds and reading them back: one client per service for the module
        # (creating a client costs more CPU than most of the calls made with it).
        key = (args, tuple(sorted(kwargs.items())))
        if key not in self._clients:
            self._clients[key] = super().client(*args, **kwargs)
        return self._clients[key]


@dataclass
class Bench:
    server: MotoServer
    proxy: FaultProxy
    direct: At  # straight to moto_server: building worlds, reading state back
    proxied: At  # through the proxy: what the bot uses
    clean: dict[str, Any] = field(default_factory=dict)
    cases: list[dict[str, Any]] = field(default_factory=list)
    _shared: ActionContext | None = None
    _retries: list[dict[str, Any]] = field(default_factory=list)

    def fresh(self, kind: str = "instance") -> World:
        """A new world with `kind`'s resources (tests/reliability/kinds.py) in it."""
        self.proxy.disarm()
        self.server.reset()
        world = build_world(self.direct)
        build_kind(self.direct, world, kind)
        return world

    def ctx(
        self, world: World, retries: list[dict[str, Any]] | None = None, **kw: Any
    ) -> ActionContext:
        """The bot's context for `world`. Without options, one context serves the module (its
        clients reused, retries reported into `retries`): the world's names are the same."""
        if kw or retries is None:
            return self._new_ctx(world, retries, **kw)
        self._retries = retries
        if self._shared is None:
            self._shared = self._new_ctx(
                world, None, on_aws_retry=lambda r: self._retries.append(r)
            )
        return self._shared

    def _retries_sink(self, retry: dict[str, Any]) -> None:
        self._retries.append(retry)

    def _new_ctx(
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
            # incident-bot-revoker run here (moto_server runs no Lambda code); its IAM calls
            # go through the proxy too, one attempt each, so a fault there fails the step and
            # the approval flow's Retry runs it again, as with the deployed function.
            "client_hooks": (in_process_revoker(TEST_CLOCK.now),),
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
