"""`plan --format asl`: a real containment plan (moto) as a Step Functions state machine,
checked four ways: our own graph checks (every Next exists, every state reachable, every path
ends), cfn-lint's States Language schema, moto's States Language parser (CreateStateMachine
with `execute_state_machine`), and an execution in moto's interpreter that contains the
instance once the approval's task token comes back."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from commands.approvals import decide, request_containment
from commands.approvals.engine import ContainmentEngine
from commands.approvals.plans import Plan
from commands.asl import APPROVAL_STATE, export_asl, plan_request, state_machine
from commands.asl_sdk import EDIT, sdk_resource, states_to_edit
from commands.errors import NotFound
from commands.incidents import open_incident
from containment.context import ActionContext
from containment.custody import check_objects
from containment.revoker import FUNCTION_NAME as REVOKER
from containment.revoker.handler import handle
from containment.targets import Target
from tests.clock import TEST_CLOCK
from tests.containment.world import REGION, World, build_world
from tests.moto_gaps import sdk_task_outputs_as_json

TERMINAL = ("Succeed", "Fail")


@pytest.fixture
def world() -> Iterator[World]:
    # execute_state_machine: moto parses definitions and runs executions (its ASL interpreter).
    with (
        mock_aws(config={"stepfunctions": {"execute_state_machine": True}}),
        sdk_task_outputs_as_json(),
    ):
        yield build_world()


@pytest.fixture
def plan(world: World) -> Plan:
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
        nexts = [c["Next"] for c in state.get("Catch", [])]
        if state["Type"] == "Choice":
            nexts += [c["Next"] for c in state["Choices"]] + [state["Default"]]
        elif state["Type"] in TERMINAL or state.get("End") is True:
            assert "Next" not in state, name
        else:
            nexts.append(state.get("Next"))
        for n in nexts:
            assert n in states, f"{name} -> {n}"
            todo.append(n)
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
            if len(branch["States"]) > 1 and any(
                s["Type"] == "Choice" for s in branch["States"].values()
            ):
                out += list(branch["States"].items())  # both ways of a Choice
            else:
                out += flatten(branch["States"], branch["StartAt"])
        name = state.get("Next")
    return out


def test_the_plan_becomes_sdk_tasks_after_an_approval_step(plan, world) -> None:
    asl = state_machine(plan, incident_key="INC-1", now=TEST_CLOCK.now(), request_id=7)
    check_graph(asl["States"], asl["StartAt"], set())

    approval = asl["States"][asl["StartAt"]]
    assert asl["StartAt"] == APPROVAL_STATE
    assert approval["Resource"].endswith(".waitForTaskToken")
    assert "$$.Task.Token" in approval["Parameters"]["Message.$"]

    tasks = [s for _, s in flatten(asl["States"], asl["StartAt"]) if s["Type"] == "Task"][1:]
    changing = [c for s in plan.steps for c in s.calls if c.mutating]
    assert {t["Resource"] for t in tasks} - {
        # The evidence write reads the capture and the bucket's lock first, as the bot does.
        sdk_resource("ec2", "DescribeInstances"),
        sdk_resource("s3", "GetObjectLockConfiguration"),
    } == {sdk_resource(str(c.service), str(c.operation)) for c in changing}
    assert "arn:aws:states:::aws-sdk:ec2:createSnapshots" in {t["Resource"] for t in tasks}
    snapshot = next(t for t in tasks if t["Resource"].endswith(":createSnapshots"))
    assert snapshot["Parameters"]["InstanceSpecification"]["InstanceId"] == world.instance_id
    assert {t["Resource"] for t in tasks if ":elasticloadbalancingv2:" in t["Resource"]}


def test_independent_steps_run_in_parallel_and_dependencies_keep_their_order(plan) -> None:
    asl = state_machine(plan, incident_key="INC-1", now=TEST_CLOCK.now())
    parallels = [s for _, s in flatten_top(asl) if s["Type"] == "Parallel"]
    assert parallels, "protect's followers (snapshot, asg, lb, iam) are independent"
    wave = {}  # the top-level state each step runs in
    for top, (name, state) in enumerate(flatten_top(asl)):
        for step in steps_in(state, name):
            wave[step] = top
    for step in plan.steps:
        for dep in (*step.depends_on, *(step.after or ())):
            if step.action in wave and dep in wave:
                assert wave[dep] < wave[step.action], (dep, step.action)


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
    asl = state_machine(plan, incident_key="INC-1", now=TEST_CLOCK.now(), sequential=True)
    assert [s["Type"] for _, s in flatten_top(asl)] == ["Task", "Pass", "Task", "Task"]
    parallel = state_machine(plan, incident_key="INC-1", now=TEST_CLOCK.now())
    assert [s["Type"] for _, s in flatten_top(parallel)] == ["Task", "Pass", "Parallel"]


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
    asl = state_machine(plan, incident_key="INC-1", now=TEST_CLOCK.now())
    tasks = [s for n, s in flatten_top(asl) if n != APPROVAL_STATE and s["Type"] == "Task"]
    assert len(tasks) == 2  # the read is not repeated
    assert all(t["Comment"].startswith("EDIT BEFORE RUNNING") for t in tasks)


def cfn_lint(definition: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """cfn-lint on a template holding the definition (its States Language schema)."""
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
    linter = Path(sys.executable).with_name("cfn-lint")
    return subprocess.run([str(linter), str(path)], capture_output=True, text=True, timeout=120)


def test_asl_passes_cfn_lints_states_language_schema(plan, tmp_path: Path) -> None:
    asl = state_machine(plan, incident_key="INC-1", now=TEST_CLOCK.now())
    ok = cfn_lint(asl, tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    broken = json.loads(json.dumps(asl))
    broken["States"][APPROVAL_STATE]["Type"] = "Tsk"
    assert cfn_lint(broken, tmp_path).returncode != 0  # the schema check does bite


def test_moto_parses_the_definition_and_rejects_a_broken_one(plan) -> None:
    asl = json.dumps(state_machine(plan, incident_key="INC-1", now=TEST_CLOCK.now()))
    sfn = boto3.client("stepfunctions", region_name=REGION)
    role = "arn:aws:iam::123456789012:role/incident-bot-fallback"
    arn = sfn.create_state_machine(name="incident-bot-INC-1", definition=asl, roleArn=role)[
        "stateMachineArn"
    ]
    assert json.loads(sfn.describe_state_machine(stateMachineArn=arn)["definition"]) == (
        json.loads(asl)
    )
    broken = json.loads(asl)
    del broken["StartAt"]
    with pytest.raises(ClientError, match="StartAt"):
        sfn.create_state_machine(name="broken", definition=json.dumps(broken), roleArn=role)


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
        out = json.loads(export_asl(session=session, incident=incident, now=TEST_CLOCK.now()))
    assert out["StartAt"] == APPROVAL_STATE
    assert f"request #{first.id}" in out["Comment"]
    assert f"region {REGION}" in out["Comment"]  # where the machine must run


# moto's States Language interpreter (a port of LocalStack's) names an aws-sdk service by its
# boto3 client name; Step Functions itself uses the SDK's ids (elasticloadbalancingv2, ...).
MOTO_NAMES = {
    ":aws-sdk:elasticloadbalancingv2:": ":aws-sdk:elbv2:",
    ":aws-sdk:elasticloadbalancing:": ":aws-sdk:elb:",
}


def with_motos_names(states: dict[str, Any]) -> list[dict[str, Any]]:
    """In place: the SDK ids as moto's interpreter names them. moto runs no Lambda code, so
    each Invoke of the revoker becomes a Pass; its requests are returned for the test to run
    through the revoker's own handler, as the function would."""
    requests: list[dict[str, Any]] = []
    for name, state in states.items():
        for branch in state.get("Branches", []):
            requests += with_motos_names(branch["States"])
        if state.get("Resource", "").endswith(":lambda:invoke"):
            payload = state["Parameters"].get("Payload")
            requests.append(json.loads(payload) if payload else {"from": name})
            states[name] = {k: v for k, v in state.items() if k in ("Next", "End", "Comment")}
            states[name]["Type"] = "Pass"
        elif "Resource" in state:
            for theirs, ours in MOTO_NAMES.items():
                state["Resource"] = state["Resource"].replace(theirs, ours)
    return requests


def placeholders(value: Any, sent: bool = False) -> list[str]:
    """Every `<...>` left in a state's Parameters (a value only a person could fill; the
    Comments quote the card's text, which keeps them)."""
    if isinstance(value, str):
        return re.findall(r"<[^<>]+>", value) if sent else []
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in placeholders(v, sent or k == "Parameters")]
    if isinstance(value, list):
        return [p for v in value for p in placeholders(v, sent)]
    return []


def test_the_real_plan_needs_no_editing(plan) -> None:
    asl = state_machine(plan, incident_key="INC-1", now=TEST_CLOCK.now())
    assert states_to_edit(asl) == []
    assert placeholders(asl) == []
    assert EDIT not in json.dumps(asl)
    tasks = {n: s for n, s in flatten(asl["States"], asl["StartAt"]) if s["Type"] == "Task"}
    # The run-time values, each from where the machine has it. The deny policies are the
    # revoker's to write (the bot holds no iam:Put*Policy): an Invoke with its request.
    invokes = [s for n, s in tasks.items() if n.startswith("iam lambda.Invoke")]
    assert invokes and all(s["Parameters"]["FunctionName"] == REVOKER for s in invokes)
    deny = next(s for s in invokes if "deny-all" in json.dumps(s["Parameters"]))
    assert json.loads(deny["Parameters"]["Payload"])["op"] == "put"
    revoke = next(s for s in invokes if "revoke-sessions" in json.dumps(s))
    path = revoke["Parameters"]["Payload.$"]
    assert path == "States.JsonToString($.documents.Payload)"
    states = dict(flatten(asl["States"], asl["StartAt"]))
    built = next(
        s["Parameters"]
        for s in states.values()
        if s["Type"] == "Pass" and "revoke-sessions" in json.dumps(s.get("Parameters"))
    )
    assert built["issued_before.$"] == "$$.State.EnteredTime"
    role = next(s for n, s in tasks.items() if n == "iam iam.CreateRole")
    assert "ec2.amazonaws.com" in role["Parameters"]["AssumeRolePolicyDocument"]
    named, made = [s["Parameters"] for n, s in tasks.items() if n.startswith("tag ec2.CreateTags")]
    assert named["Resources.$"].startswith("States.Array(")
    assert named["Resources.$"].endswith(", $.created.isolation.GroupId)")
    assert made["Resources.$"] == "$.created.snapshots.SnapshotIds"
    assert {"Key": "incident-bot:isolated-at", "Value.$": "$$.State.EnteredTime"} in made["Tags"]
    locked = next(s for n, s in tasks.items() if n == "evidence put, locked")
    retain = dt.datetime.fromisoformat(locked["Parameters"]["ObjectLockRetainUntilDate"])
    # A year from when the plan was made (the test clock flows: not an exact second later).
    since_plan = TEST_CLOCK.now() + dt.timedelta(days=365) - retain
    assert dt.timedelta(0) <= since_plan < dt.timedelta(minutes=1), retain
    # The body as text once, hashed from that text for the manifest.
    assert locked["Parameters"]["Body.$"] == "$.stored.body"
    stored = states["evidence body and SHA-256"]["Parameters"]
    assert stored["body.$"] == "States.JsonToString($.capture)"
    manifest = next(
        s for n, s in tasks.items() if s["Parameters"].get("Key", "").endswith("manifest.json")
    )
    assert manifest["Parameters"]["IfNoneMatch"] == "*" and manifest["Catch"]
    assert "ObjectLockMode" not in tasks["evidence put, not locked"]["Parameters"]


def test_the_exported_machine_contains_the_instance_in_moto_after_approval(world, plan) -> None:
    """Run the export in moto's interpreter: nothing changes until the task token comes back
    through the approval topic; then the ENIs end in the isolation group the machine made."""
    asl = state_machine(plan, incident_key="INC-1", now=TEST_CLOCK.now())
    assert states_to_edit(asl) == [] and placeholders(asl) == []  # runs as exported
    revoker_requests = with_motos_names(asl["States"])
    assert any(
        r.get("policy_name", "").startswith("incident-bot-deny-all") for r in revoker_requests
    )
    sns = boto3.client("sns", region_name=REGION)
    sqs = boto3.client("sqs", region_name=REGION)
    ec2 = boto3.client("ec2", region_name=REGION)
    topic = sns.create_topic(Name="incident-bot-approvals")["TopicArn"]
    queue = sqs.create_queue(QueueName="approver")["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])
    queue_arn = attributes["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    sfn = boto3.client("stepfunctions", region_name=REGION)
    machine = sfn.create_state_machine(
        name="incident-bot-INC-1",
        definition=json.dumps(asl),
        roleArn="arn:aws:iam::123456789012:role/incident-bot-fallback",
    )["stateMachineArn"]

    def enis() -> dict[str, list[str]]:
        out = ec2.describe_network_interfaces(NetworkInterfaceIds=world.enis)
        return {
            e["NetworkInterfaceId"]: sorted(g["GroupId"] for g in e["Groups"])
            for e in out["NetworkInterfaces"]
        }

    before = enis()
    execution = sfn.start_execution(
        stateMachineArn=machine, input=json.dumps({"approval_topic_arn": topic})
    )["executionArn"]
    message = wait_for(lambda: sqs.receive_message(QueueUrl=queue).get("Messages"))
    text = json.loads(message[0]["Body"])["Message"]
    token = re.search(r"--task-token (\S+)", text)
    assert token, text
    assert sfn.describe_execution(executionArn=execution)["status"] == "RUNNING"
    assert enis() == before  # waiting for the approval: nothing changed yet

    sfn.send_task_success(taskToken=token[1], output="true")

    def finished() -> dict[str, Any] | None:
        described = sfn.describe_execution(executionArn=execution)
        return None if described["status"] == "RUNNING" else described

    done = wait_for(finished)
    assert done["status"] == "SUCCEEDED", done.get("cause")
    isolation = ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": ["incident-bot-isolation"]}]
    )["SecurityGroups"]
    assert len(isolation) == 1
    assert enis() == {eni: [isolation[0]["GroupId"]] for eni in world.enis}
    snapshots = ec2.describe_snapshots(
        Filters=[{"Name": "tag:incident-bot:incident", "Values": ["INC-1"]}]
    )["Snapshots"]
    assert {s["VolumeId"] for s in snapshots} == set(world.volumes)
    # The snapshots the machine made were tagged by it too (their ids from CreateSnapshots).
    assert all(
        {t["Key"] for t in s["Tags"]} >= {"incident-bot:status", "incident-bot:isolated-at"}
        for s in snapshots
    )
    iam = boto3.client("iam", region_name=REGION)
    profile = ec2.describe_iam_instance_profile_associations(
        Filters=[{"Name": "instance-id", "Values": [world.instance_id]}]
    )["IamInstanceProfileAssociations"]
    assert [p["IamInstanceProfile"]["Arn"].rsplit("/", 1)[1] for p in profile] == [
        "incident-bot-deny-all"
    ]
    assert iam.get_role(RoleName="incident-bot-deny-all")
    # The chain of custody: the machine wrote the manifest, with the SHA-256 of what it stored.
    s3 = boto3.client("s3", region_name=REGION)
    [manifest_key] = [
        o["Key"]
        for o in s3.list_objects_v2(Bucket=world.bucket)["Contents"]
        if o["Key"].endswith("INC-1/manifest.json")
    ]
    manifest = json.loads(s3.get_object(Bucket=world.bucket, Key=manifest_key)["Body"].read())
    assert check_objects(s3, world.bucket, manifest) == (1, [])
    # The revoker's part, as its function would do it when the machine invokes it.
    for request in revoker_requests:
        if "op" in request:
            assert handle(request, iam, TEST_CLOCK.now())["result"] == "written", request
    assert iam.list_role_policies(RoleName="incident-bot-deny-all")["PolicyNames"] == [
        "incident-bot-deny-all"
    ]


def wait_for(probe: Any, seconds: float = 30) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if value := probe():
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")
