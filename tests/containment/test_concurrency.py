"""Independent steps run at the same time; rollback dry runs only describe."""

from __future__ import annotations

import threading
import time

from containment.executor import rollback_plan, run_plan
from tests.containment import helpers as h

LATENCY = 0.05  # every call waits this long, like a real round trip to AWS


class SlowCalls:
    """Adds LATENCY to every call and keeps each call's duration."""

    def __init__(self) -> None:
        self.local = threading.local()
        self.durations: list[float] = []

    def hook(self, client) -> None:
        client.meta.events.register("before-call.*.*", self.before)
        client.meta.events.register("after-call.*.*", self.after)

    def before(self, **_) -> None:
        self.local.start = time.monotonic()
        time.sleep(LATENCY)

    def after(self, **_) -> None:
        self.durations.append(time.monotonic() - self.local.start)


def test_independent_steps_overlap(world, instance, make_ctx) -> None:
    spans: dict[str, list[float]] = {}
    lock = threading.Lock()

    def on_step(name: str, event: str, _result) -> None:
        with lock:
            spans.setdefault(name, []).append(time.monotonic())

    slow = SlowCalls()
    ctx = make_ctx(client_hooks=(slow.hook,))
    start = time.monotonic()
    results = run_plan(target=instance, ctx=ctx, on_step=on_step)
    elapsed = time.monotonic() - start
    assert all(r.status == "succeeded" for r in results.values())

    def overlap(a: str, b: str) -> bool:
        return spans[a][0] < spans[b][1] and spans[b][0] < spans[a][1]

    # After protect: snapshot, ASG and LB steps run together; the IAM step runs beside them.
    assert overlap("snapshot", "asg") and overlap("asg", "lb") and overlap("lb", "iam")
    # Isolation groups are prepared while protection runs.
    assert overlap("isolation_groups", "protect")
    # ~40 calls, the longest chain 7 deep: far below the calls' time one after the other.
    sequential = sum(slow.durations)
    assert len(slow.durations) > 35
    assert elapsed < 0.5 * sequential, (elapsed, sequential)


def test_rollback_dry_run_plans_without_changing(world, instance, make_ctx, calls) -> None:
    results = run_plan(target=instance, ctx=make_ctx())
    isolated = h.eni_groups(world)
    calls.clear()
    planned = rollback_plan(target=instance, ctx=make_ctx(dry_run=True), results=results)
    assert calls.calls == []
    assert all(r.dry_run and r.status == "skipped" for r in planned.values())
    restore = planned["isolate"].planned
    assert {c["params"]["NetworkInterfaceId"]: c["params"]["Groups"] for c in restore} == (
        world.eni_groups
    )
    assert h.eni_groups(world) == isolated
