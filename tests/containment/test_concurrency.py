"""Independent steps run at the same time; rollback dry runs only describe."""

from __future__ import annotations

import threading
import time

from containment.executor import rollback_plan, run_plan
from tests.containment import helpers as h

LATENCY = 0.05  # every call waits this long, like a real round trip to AWS


class SlowCalls:
    """Adds LATENCY to every call; counts the calls and the most in flight at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls = 0
        self.in_flight = 0
        self.peak = 0

    def hook(self, client) -> None:
        client.meta.events.register("before-call.*.*", self.before)
        client.meta.events.register("after-call.*.*", self.after)

    def before(self, **_) -> None:
        with self.lock:
            self.calls += 1
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        time.sleep(LATENCY)

    def after(self, **_) -> None:
        with self.lock:
            self.in_flight -= 1


def test_independent_steps_overlap(world, instance, make_ctx) -> None:
    spans: dict[str, list[float]] = {}
    lock = threading.Lock()

    def on_step(name: str, event: str, _result) -> None:
        with lock:
            spans.setdefault(name, []).append(time.monotonic())

    slow = SlowCalls()
    ctx = make_ctx(client_hooks=(slow.hook,))
    results = run_plan(target=instance, ctx=ctx, on_step=on_step)
    assert all(r.status == "succeeded" for r in results.values())

    def overlap(a: str, b: str) -> bool:
        return spans[a][0] < spans[b][1] and spans[b][0] < spans[a][1]

    # After protect: snapshot, ASG and LB steps run together; the IAM step runs beside them.
    assert overlap("snapshot", "asg") and overlap("asg", "lb") and overlap("lb", "iam")
    # Isolation groups are prepared while protection runs.
    assert overlap("isolation_groups", "protect")
    # Counted, not timed: a loaded CI machine stretches moto's CPU work, never the fan-out.
    # The four steps after protect each hold a call in flight during their 50 ms sleeps.
    assert slow.calls > 35
    assert slow.peak >= 4, slow.peak


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


def test_every_thread_pool_of_containment_carries_the_runs_context() -> None:
    """A pool that is not a ContextPool loses the run's retry reporter in its threads: the
    shared clients' retries made there would reach no timeline."""
    import ast
    from pathlib import Path

    import containment

    root = Path(containment.__file__).parent
    plain = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "concurrency.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            named = node.id if isinstance(node, ast.Name) else getattr(node, "attr", None)
            if named in ("ThreadPoolExecutor", "Thread") and isinstance(
                node, ast.Name | ast.Attribute
            ):
                plain.append(f"{path.relative_to(root)}:{node.lineno}")
    assert plain == []
