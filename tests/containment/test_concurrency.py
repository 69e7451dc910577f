"""Independent steps run at the same time; rollback dry runs only describe."""

from __future__ import annotations

import threading
import time

from containment.executor import rollback_plan, run_plan
from tests.containment import helpers as h

LATENCY = 0.05  # every call waits this long, like a real round trip to AWS


def slow(client) -> None:
    client.meta.events.register("before-call.*.*", lambda **_: time.sleep(LATENCY))


def test_independent_steps_overlap(world, instance, make_ctx) -> None:
    spans: dict[str, list[float]] = {}
    lock = threading.Lock()

    def on_step(name: str, event: str, _result) -> None:
        with lock:
            spans.setdefault(name, []).append(time.monotonic())

    ctx = make_ctx(client_hooks=(slow,))
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
    # 42 calls one after the other would take 2.1 s; the longest chain is 7 calls deep.
    assert elapsed < 25 * LATENCY, elapsed


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
