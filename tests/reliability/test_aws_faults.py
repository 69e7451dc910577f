"""Every containment action against AWS that misbehaves once: AWS ends as after one clean run.

moto_server runs behind a fault-injecting proxy (tests/reliability/aws_proxy.py). For each
action in the registry (a new action is covered by being registered) and each fault, every
mutating call the action makes (its first call, for read-only actions) is faulted once, after
its dependencies ran cleanly. boto3 retries; where the step still fails, it is run again as
the approval flow's Retry does (earlier results given). Then what AWS holds is compared with
what one clean run of the same action made on a fresh world.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from botocore.retries.standard import ExponentialBackoff

from bench._proxy import MotoServer
from containment.context import ActionContext
from containment.executor import run_plan, select_actions
from containment.registry import Action, StepResult, all_actions
from containment.targets import Target
from tests.clock import TEST_CLOCK
from tests.containment.world import REGION, World, build_world
from tests.reliability.aws_proxy import FAULTS, TOOK_EFFECT, Fault, FaultProxy
from tests.reliability.aws_state import aws_state, differences, duplicates

READ_TIMEOUT = 1.0  # seconds; a held answer comes later than this
READ_PREFIXES = ("Describe", "Get", "List", "Head")
ACTIONS = [a.name for a in all_actions()]


class _At(boto3.Session):
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
    direct: _At
    proxied: _At
    clean: dict[str, tuple[dict[str, Any], list[str]]] = field(default_factory=dict)
    cases: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture(scope="module")
def bench() -> Iterator[Bench]:
    with (
        MotoServer() as server,
        FaultProxy(server.url, hold_seconds=READ_TIMEOUT + 0.5) as proxy,
    ):
        b = Bench(server, proxy, _At(server.url), _At(proxy.url))
        yield b
    _report(b.cases)


@pytest.fixture(autouse=True)
def quick_throttle_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    # botocore waits up to 1 s before retrying a throttled call; the delay is not under test.
    monkeypatch.setitem(ExponentialBackoff._DEFAULT_BACKOFF_CONFIG, "throttling_base_scale", 0.05)


def _report(cases: list[dict[str, Any]]) -> None:
    """The figures, for the README and the closing note (shown with `pytest -s`)."""
    if not cases:
        return
    summary = {
        "faults_injected": sum(c["injected"] for c in cases),
        "runs": len(cases),
        "duplicates": sum(c["duplicates"] for c in cases),
        "runs_differing_from_clean": sum(1 for c in cases if c["differences"]),
        "retries_seen_by_boto3": sum(c["retries"] for c in cases),
        "approval_retries": sum(1 for c in cases if c["approval_retry"]),
    }
    print("\nAWS fault figures:", json.dumps(summary))
    out = os.environ.get("INCIDENT_BOT_FAULT_REPORT")
    if out:
        with open(out, "w") as fh:
            json.dump({"summary": summary, "cases": cases}, fh, indent=1, default=str)


def _target(action: Action, world: World) -> Target:
    if "instance" in action.kinds:
        return Target(kind="instance", resource_id=world.instance_id, region=REGION)
    return Target(kind="access_key", resource_id=world.access_key_id, region=REGION)


def _ctx(bench: Bench, world: World, retries: list[dict[str, Any]]) -> ActionContext:
    return ActionContext(
        incident_key="INC-18",
        finding_id="gd-finding-18",
        evidence_bucket=world.bucket,
        # No configured key: the evidence step makes the incident's own KMS key (CreateKey).
        evidence_key_per_incident=True,
        session_factory=lambda: bench.proxied,
        now=TEST_CLOCK.now,
        read_timeout=READ_TIMEOUT,
        connect_timeout=READ_TIMEOUT,
        sleep=lambda _: None,
        on_aws_retry=retries.append,
    )


def _fresh(bench: Bench) -> World:
    bench.proxy.disarm()
    bench.server.reset()
    return build_world(bench.direct)


def _run(
    bench: Bench, name: str, world: World, *, fault: tuple[str, Fault] | None
) -> tuple[dict[str, StepResult], bool, list[dict[str, Any]]]:
    """Dependencies cleanly, then the action (its calls faulted), then Retry if it failed."""
    retries: list[dict[str, Any]] = []
    ctx = _ctx(bench, world, retries)
    action = next(a for a in all_actions() if a.name == name)
    target = _target(action, world)
    deps = [a.name for a in select_actions(target, [name]) if a.name != name]
    done = run_plan(target=target, ctx=ctx, action_names=deps) if deps else {}
    bench.proxy.clear_log()
    if fault:
        bench.proxy.arm(*fault)
    results = {**done, **run_plan(target=target, ctx=ctx, action_names=[name], previous=done)}
    retried = False
    if results[name].status == "failed":  # the approval flow's Retry: what is not done
        retried = True
        bench.proxy.disarm()
        ctx.forget_inspection(target)
        again = run_plan(target=target, ctx=ctx, action_names=[name], previous=results)
        results = {**results, **again}
    return results, retried, retries


def _clean(bench: Bench, name: str) -> tuple[dict[str, Any], list[str]]:
    """What one clean run of the action leaves, and the operations its own step calls."""
    if name not in bench.clean:
        world = _fresh(bench)
        results, _, _ = _run(bench, name, world, fault=None)
        assert results[name].status != "failed", results[name].error
        ops = list(dict.fromkeys(s.operation for s in bench.proxy.seen))
        writes = [op for op in ops if not op.startswith(READ_PREFIXES)]
        bench.clean[name] = (aws_state(bench.direct, world), writes or ops[:1])
    return bench.clean[name]


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("name", ACTIONS)
def test_one_fault_leaves_what_one_clean_run_makes(bench: Bench, name: str, fault: Fault) -> None:
    want, operations = _clean(bench, name)
    assert operations, f"{name} made no AWS call to fault"
    problems = []
    for op in operations:
        world = _fresh(bench)
        results, approval_retry, retries = _run(bench, name, world, fault=(op, fault))
        injected = [s for s in bench.proxy.injected() if s.operation == op]
        got = aws_state(bench.direct, world)
        case = {
            "action": name,
            "operation": op,
            "fault": fault,
            "injected": len(injected),
            "duplicates": duplicates(got, want),
            "differences": differences(got, want),
            "retries": len(retries),
            "approval_retry": approval_retry,
            "status": results[name].status,
        }
        bench.cases.append(case)
        assert injected, f"{op}: the armed {fault} never fired"
        if results[name].status == "failed" or case["differences"]:
            problems.append(
                {k: case[k] for k in ("operation", "status", "differences")}
                | {"error": results[name].error}
            )
        # Every failure boto3 retried is told (the proxy's log is the truth to check against).
        retried_ops = {r["operation"] for r in retries}
        if not approval_retry and fault != "hold" or fault in TOOK_EFFECT:
            assert op in retried_ops or approval_retry, (op, retries)
    assert not problems, problems
