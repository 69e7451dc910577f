"""`plan --format asl`: a real containment plan (moto) as a Step Functions state machine,
checked three ways: our own graph checks, cfn-lint's States Language schema, and moto's
CreateStateMachine (which accepts any string: it proves only that the API takes it)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from commands.approvals import decide, request_containment
from commands.approvals.engine import ContainmentEngine
from commands.asl import APPROVAL_STATE, export_asl, plan_request, sdk_resource, state_machine
from commands.errors import NotFound
from commands.incidents import open_incident
from containment.context import ActionContext
from containment.targets import Target
from tests.clock import TEST_CLOCK
from tests.containment.world import REGION, World, build_world

TERMINAL = ("Succeed", "Fail")


@pytest.fixture
def world() -> Iterator[World]:
    with mock_aws():
        yield build_world()


@pytest.fixture
def plan(world: World) -> dict[str, Any]:
    target = Target(kind="instance", resource_id=world.instance_id, region=REGION)
    ctx = ActionContext(
        incident_key="INC-1",
        now=TEST_CLOCK.now,
        evidence_bucket=world.bucket,
        evidence_kms_key_id=world.kms_key_id,
    )
    return ContainmentEngine().plan(target=target, ctx=ctx)


def check_graph(states: dict[str, Any], start: str, seen: set[str]) -> None:
    """Every Next exists, every state is reachable from StartAt, every path ends."""
    assert start in states, start
    reach: set[str] = set()
    todo = [start]
    while todo:
        name = todo.pop()
        if name in reach:
            continue
        reach.add(name)
        assert name not in seen, f"state name {name!r} used twice"
        state = states[name]
        assert len(name) <= 80
        if state["Type"] in TERMINAL or state.get("End") is True:
            assert "Next" not in state, name
        else:
            assert state.get("Next") in states, f"{name} -> {state.get('Next')}"
            todo.append(state["Next"])
        for branch in state.get("Branches", []):
            check_graph(branch["States"], branch["StartAt"], seen | reach)
    assert reach == set(states), f"unreachable: {set(states) - reach}"


def flatten(states: dict[str, Any], start: str) -> list[tuple[str, Any]]:
    """States in the order they run (branches inlined)."""
    out: list[tuple[str, Any]] = []
    name: str | None = start
    while name is not None:
        state = states[name]
        out.append((name, state))
        for branch in state.get("Branches", []):
            out += flatten(branch["States"], branch["StartAt"])
        name = state.get("Next")
    return out


def test_the_plan_becomes_sdk_tasks_after_an_approval_step(plan, world) -> None:
    asl = state_machine(plan, incident_key="INC-1", request_id=7)
    check_graph(asl["States"], asl["StartAt"], set())

    approval = asl["States"][asl["StartAt"]]
    assert asl["StartAt"] == APPROVAL_STATE
    assert approval["Resource"].endswith(".waitForTaskToken")
    assert "$$.Task.Token" in approval["Parameters"]["Message.$"]

    tasks = [s for _, s in flatten(asl["States"], asl["StartAt"]) if s["Type"] == "Task"][1:]
    changing = [c for s in plan["steps"] for c in s["calls"] if c["mutating"]]
    assert sorted(t["Resource"] for t in tasks) == sorted(
        sdk_resource(c["service"], c["operation"]) for c in changing
    )
    assert "arn:aws:states:::aws-sdk:ec2:createSnapshots" in {t["Resource"] for t in tasks}
    snapshot = next(t for t in tasks if t["Resource"].endswith(":createSnapshots"))
    assert snapshot["Parameters"]["InstanceSpecification"]["InstanceId"] == world.instance_id
    assert {t["Resource"] for t in tasks if ":elasticloadbalancingv2:" in t["Resource"]}


def test_independent_steps_run_in_parallel_and_dependencies_keep_their_order(plan) -> None:
    asl = state_machine(plan, incident_key="INC-1")
    parallels = [s for _, s in flatten_top(asl) if s["Type"] == "Parallel"]
    assert parallels, "protect's followers (snapshot, asg, lb, iam) are independent"
    wave = {}  # the top-level state each step runs in
    for top, (name, state) in enumerate(flatten_top(asl)):
        for step in steps_in(state, name):
            wave[step] = top
    for step in plan["steps"]:
        for dep in (*step["depends_on"], *step["after"]):
            if step["action"] in wave and dep in wave:
                assert wave[dep] < wave[step["action"]], (dep, step["action"])


def flatten_top(asl: dict[str, Any]) -> list[tuple[str, Any]]:
    out = []
    name = asl["StartAt"]
    while name is not None:
        out.append((name, asl["States"][name]))
        name = asl["States"][name].get("Next")
    return out


def steps_in(state: dict[str, Any], name: str) -> set[str]:
    if state["Type"] == "Parallel":
        return {n.split(" ")[0] for b in state["Branches"] for n in b["States"]}
    return {name.split(" ")[0]} if name != APPROVAL_STATE else set()


def test_a_rollback_plan_runs_one_step_after_another() -> None:
    plan = {
        "steps": [
            {"action": "isolate", "depends_on": [], "after": [], "calls": [_call("A")]},
            {"action": "iam", "depends_on": [], "after": [], "calls": [_call("B")]},
        ]
    }
    asl = state_machine(plan, incident_key="INC-1", sequential=True)
    assert [s["Type"] for _, s in flatten_top(asl)] == ["Task", "Task", "Task"]
    parallel = state_machine(plan, incident_key="INC-1")
    assert [s["Type"] for _, s in flatten_top(parallel)] == ["Task", "Parallel"]


def _call(op: str, **params: Any) -> dict[str, Any]:
    return {"service": "ec2", "operation": op, "params": params, "mutating": True, "text": op}


def test_placeholders_and_missing_parameters_are_flagged_for_editing() -> None:
    plan = {
        "steps": [
            {
                "action": "isolation_groups",
                "calls": [
                    _call("RevokeSecurityGroupEgress", GroupId="<new isolation group>"),
                    {"service": "ec2", "operation": "CreateTags", "text": "ec2.CreateTags()"},
                    _call("DescribeInstances") | {"mutating": False},
                ],
            }
        ]
    }
    asl = state_machine(plan, incident_key="INC-1")
    tasks = [s for n, s in flatten_top(asl) if n != APPROVAL_STATE]
    assert len(tasks) == 2  # the read is not repeated
    assert all(t["Comment"].startswith("EDIT BEFORE RUNNING") for t in tasks)


def test_asl_passes_cfn_lints_states_language_schema(plan, tmp_path: Path) -> None:
    def lint(definition: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        template = {
            "AWSTemplateFormatVersion": "2010-09-09",
            "Resources": {
                "Plan": {
                    "Type": "AWS::StepFunctions::StateMachine",
                    "Properties": {
                        "RoleArn": "arn:aws:iam::123456789012:role/incident-bot-fallback",
                        "Definition": definition,
                    },
                }
            },
        }
        path = tmp_path / "machine.json"
        path.write_text(json.dumps(template))
        cfn_lint = Path(sys.executable).with_name("cfn-lint")
        return subprocess.run(
            [str(cfn_lint), str(path)], capture_output=True, text=True, timeout=120
        )

    asl = state_machine(plan, incident_key="INC-1")
    ok = lint(asl)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    broken = json.loads(json.dumps(asl))
    broken["States"][APPROVAL_STATE]["Type"] = "Tsk"
    assert lint(broken).returncode != 0  # the schema check does bite


def test_moto_step_functions_accepts_and_returns_the_definition(plan) -> None:
    asl = json.dumps(state_machine(plan, incident_key="INC-1"))
    sfn = boto3.client("stepfunctions", region_name=REGION)
    arn = sfn.create_state_machine(
        name="incident-bot-INC-1",
        definition=asl,
        roleArn="arn:aws:iam::123456789012:role/incident-bot-fallback",
    )["stateMachineArn"]
    assert json.loads(sfn.describe_state_machine(stateMachineArn=arn)["definition"]) == (
        json.loads(asl)
    )


def test_export_picks_the_approved_plan_else_the_latest(database, world, plan) -> None:
    with database.session() as session:
        incident = open_incident(session=session, title="C2", created_by="W1")
        assert incident.key == "INC-1"
        with pytest.raises(NotFound, match="/contain"):
            plan_request(session=session, incident=incident)
        first = request_containment(
            session=session,
            incident=incident,
            target=Target(kind="instance", resource_id=world.instance_id, region=REGION),
            plan=plan,
            requested_by="W1",
            expire_after=dt.timedelta(minutes=30),
        ).request
        assert plan_request(session=session, incident=incident).id == first.id
        decide(
            session=session,
            request_id=first.id,
            actor="W2",
            approve=True,
            approvers=["W2"],
            two_person_rule=True,
        )
        later = request_containment(
            session=session,
            incident=incident,
            target=Target(kind="access_key", resource_id=world.access_key_id, region=REGION),
            plan=plan,
            requested_by="W1",
            expire_after=dt.timedelta(minutes=30),
        ).request
        assert later.status == "pending"
        assert plan_request(session=session, incident=incident).id == first.id
        out = json.loads(export_asl(session=session, incident=incident))
    assert out["StartAt"] == APPROVAL_STATE
    assert f"request #{first.id}" in out["Comment"]
