"""The registry's order and selection, step-result records and the generated policy file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from commands.permissions import deploy_files, policy_document
from containment.executor import select_actions
from containment.registry import StepResult, actions_for, all_actions, get_action
from containment.targets import Target, kind_of

INSTANCE = Target(kind="instance", resource_id="i-0123456789abcdef0", region="us-east-1")
KEY = Target(kind="access_key", resource_id="AKIAIOSFODNN7EXAMPLE", region="us-east-1")
ROOT = Path(__file__).resolve().parents[2]


def names(actions) -> list[str]:
    return [a.name for a in actions]


def test_instance_order_follows_the_containment_procedure() -> None:
    assert names(actions_for(INSTANCE)) == [
        "capture",
        "evidence",
        "protect",
        "snapshot",
        "asg",
        "lb",
        "isolation_groups",
        "isolate",
        "drop_transit",
        "iam",
        "tag",
    ]
    order = names(actions_for(INSTANCE))
    for action in actions_for(INSTANCE):
        for dep in (*action.depends_on, *action.after):
            if dep in order:
                assert order.index(dep) < order.index(action.name)


def test_optional_actions_only_when_asked() -> None:
    assert "flow_logs" not in names(actions_for(INSTANCE))
    assert "flow_logs" in names(actions_for(INSTANCE, include=["flow_logs"]))
    assert get_action("flow_logs").optional


def test_selection_pulls_in_hard_dependencies_only() -> None:
    assert names(select_actions(INSTANCE, ["isolate"])) == [
        "capture",
        "isolation_groups",
        "isolate",
    ]
    assert names(select_actions(KEY, ["deactivate_key"])) == ["capture_key", "deactivate_key"]
    with pytest.raises(KeyError):
        select_actions(INSTANCE, ["no-such-step"])


def test_access_key_actions() -> None:
    assert names(actions_for(KEY)) == [
        "capture_key",
        "evidence",
        "deactivate_key",
        "revoke_user_sessions",
    ]


def test_every_dependency_names_a_registered_action() -> None:
    known = {a.name for a in all_actions()}
    for action in all_actions():
        assert set(action.depends_on) | set(action.after) <= known | {"capture_key"}


def test_step_result_retry_semantics() -> None:
    ok = StepResult(action="x", status="succeeded")
    failed = StepResult(action="x", status="failed", error={"code": "AccessDenied"})
    blocked = StepResult(action="x", status="skipped", blocked_by=["y"])
    not_needed = StepResult(action="x", status="skipped", note="not in an ASG")
    dry = StepResult(action="x", status="skipped", dry_run=True)
    assert [r.done for r in (ok, failed, blocked, not_needed, dry)] == [
        True,
        False,
        False,
        True,
        False,
    ]
    assert StepResult.from_dict(json.loads(json.dumps(failed.to_dict()))) == failed


def test_target_kinds_from_ids() -> None:
    assert kind_of("i-0123456789abcdef0") == "instance"
    assert kind_of("i-12345678") == "instance"
    assert kind_of("AKIAIOSFODNN7EXAMPLE") == "access_key"
    assert kind_of("sg-123") is None


def test_deploy_policy_files_are_the_generated_policies() -> None:
    # Regenerate with: python -m commands.permissions deploy/
    files = deploy_files()
    assert set(files) >= {
        "iam-policy.json",
        "iam-policy-triage.json",
        "iam-permissions-boundary.json",
    }
    for name, doc in files.items():
        assert json.loads((ROOT / "deploy" / name).read_text()) == doc, name
    assert files["iam-policy.json"] == policy_document()
