"""Every containment action against AWS that misbehaves: AWS ends as after one clean run.

moto_server runs behind a fault-injecting proxy (tests/reliability/aws_proxy.py). For each
action in the registry (a new action is covered by being registered), the action's mutating
calls (its first call, for read-only actions) are faulted after its dependencies ran cleanly:
- faults after which the call took effect (`drop`, `hold`): one call per run, each on a fresh
  world, since these are what can duplicate work;
- faults that refuse the call before it runs (500, 503, throttling, reset): each of the
  action's calls gets all four in turn, in one run (every single fault is in it, and one
  world serves where sixteen would otherwise be built).
boto3 retries; where the step still fails it is run again as the approval flow's Retry does
(earlier results given). Then what AWS holds is compared with one clean run on a fresh world.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any, cast

import pytest

from containment.executor import run_plan, select_actions
from containment.registry import Action, StepResult, all_actions
from containment.targets import Target
from tests.containment.world import World
from tests.reliability.aws_proxy import REFUSED, TOOK_EFFECT, Fault
from tests.reliability.aws_state import aws_state, differences, duplicates
from tests.reliability.conftest import Bench
from tests.reliability.kinds import kind_of, target_for

READ_PREFIXES = ("Describe", "Get", "List", "Head")
ACTIONS = [a.name for a in all_actions()]


@pytest.fixture(scope="module")
def figures(bench: Bench) -> Iterator[list[dict[str, Any]]]:
    yield bench.cases
    _report(bench.cases)


def _report(cases: list[dict[str, Any]]) -> None:
    """The figures for the README and the closing note (shown with `pytest -s`)."""
    if not cases:
        return
    summary = {
        "runs": len(cases),
        "faults_injected": sum(c["injected"] for c in cases),
        "duplicates": sum(c["duplicates"] for c in cases),
        "runs_differing_from_clean": sum(1 for c in cases if c["differences"]),
        "retries_reported": sum(c["retries"] for c in cases),
        "approval_retries": sum(1 for c in cases if c["approval_retry"]),
    }
    print("\nAWS fault figures:", json.dumps(summary))
    out = os.environ.get("INCIDENT_BOT_FAULT_REPORT")
    if out:
        with open(out, "w") as fh:
            shown = [{**c, "differences": repr(c["differences"])} for c in cases]
            json.dump({"summary": summary, "cases": shown}, fh, indent=1, default=str)


def _target(action: Action, world: World) -> Target:
    return target_for(kind_of(action), world)


def _fresh(bench: Bench, name: str) -> World:
    return bench.fresh(kind_of(next(a for a in all_actions() if a.name == name)))


def _run(
    bench: Bench, name: str, world: World, faults: list[tuple[str, Fault]]
) -> tuple[dict[str, StepResult], bool, list[dict[str, Any]]]:
    """Dependencies cleanly, then the action (its calls faulted), then Retry if it failed."""
    retries: list[dict[str, Any]] = []
    ctx = bench.ctx(world, retries)
    action = next(a for a in all_actions() if a.name == name)
    target = _target(action, world)
    deps = [a.name for a in select_actions(target, [name]) if a.name != name]
    done = run_plan(target=target, ctx=ctx, action_names=deps) if deps else {}
    bench.proxy.clear_log()
    for op, fault in faults:
        bench.proxy.arm(op, fault)
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
        world = _fresh(bench, name)
        results, _, _ = _run(bench, name, world, [])
        assert results[name].status != "failed", results[name].error
        ops = list(dict.fromkeys(s.operation for s in bench.proxy.seen))
        writes = [op for op in ops if not op.startswith(READ_PREFIXES)]
        bench.clean[name] = (aws_state(bench.direct, world), writes or ops[:1])
    return bench.clean[name]


@pytest.mark.parametrize("fault", [*TOOK_EFFECT, "refused"])
@pytest.mark.parametrize("name", ACTIONS)
def test_faults_leave_what_one_clean_run_makes(
    bench: Bench, figures: list[dict[str, Any]], name: str, fault: str
) -> None:
    want, operations = _clean(bench, name)
    assert operations, f"{name} made no AWS call to fault"
    if fault == "refused":
        runs = [[(op, f) for op in operations for f in REFUSED]]
    else:
        runs = [[(op, cast(Fault, fault))] for op in operations]
    problems = []
    for armed in runs:
        world = _fresh(bench, name)
        results, approval_retry, retries = _run(bench, name, world, armed)
        ops = sorted({op for op, _ in armed})
        seen = bench.proxy.injected()
        injected = {s.operation for s in seen}
        got = aws_state(bench.direct, world)
        case = {
            "action": name,
            "operations": ops,
            "fault": fault,
            "injected": len(seen),
            "duplicates": duplicates(got, want),
            "differences": differences(got, want),
            "retries": len(retries),
            "approval_retry": approval_retry,
            "status": results[name].status,
        }
        figures.append(case)
        # A call made only on some paths (a retry's) may not come again: at least one fires.
        assert injected, f"{ops}: the armed {fault} never fired"
        if results[name].status == "failed" or case["differences"]:
            problems.append(
                {k: case[k] for k in ("operations", "status", "differences")}
                | {"error": results[name].error}
            )
        # Every injected fault is told: as a retry the client saw (botocore's or the guard's),
        # or by the failed step the approval flow retried. The proxy's log is the truth.
        told = {r["operation"] for r in retries}
        if not approval_retry and injected - told:
            problems.append({"operations": sorted(injected - told), "untold": retries})
    assert not problems, problems
