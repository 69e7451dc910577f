"""Every AWS call an action makes is covered by the permissions it declares.

The calls are recorded through botocore's before-call event on every client the context
builds. Steps run one at a time here so each call is attributed to the step making it.
"""

from __future__ import annotations

import json
from collections import defaultdict

import pytest

from commands.permissions import declared_permissions, feature_permissions, policy_document
from containment import revoker
from containment.capabilities import CAPABILITIES
from containment.executor import plan_all, rollback_plan, run_plan
from containment.policy import CROSS_ACCOUNT_ACTION
from containment.policy_scopes import UNSCOPABLE, is_read
from containment.registry import all_actions, get_action
from tests.deploy.parliament_check import access_levels


def attribute_calls(calls):
    def on_step(name: str, event: str, _result) -> None:
        if event == "started":
            calls.step = name

    return on_step


def uncovered(calls) -> dict[str, set[str]]:
    missing: dict[str, set[str]] = defaultdict(set)
    for call in calls.calls:
        assert call.step is not None, call
        if call.action not in get_action(call.step).permissions:
            missing[call.step].add(call.action)
    return dict(missing)


def test_instance_steps_and_rollbacks_call_only_what_they_declare(
    world, instance, make_ctx, calls
) -> None:
    ctx = make_ctx()
    names = [a.name for a in all_actions() if "instance" in a.kinds]  # optional ones too
    results = run_plan(
        target=instance, ctx=ctx, action_names=names, max_workers=1, on_step=attribute_calls(calls)
    )
    # flow_logs: moto refuses S3 flow-log delivery to a prefix; its calls are still checked.
    # volatile_capture: moto's SSM knows no instance agents, so it skips (Stubber-tested in
    # test_volatile.py, whose calls are the declared ones).
    skips = ("flow_logs", "volatile_capture")
    assert all(r.status == "succeeded" for n, r in results.items() if n not in skips), {
        n: r.error for n, r in results.items() if r.status != "succeeded"
    }
    assert "flow_logs" in {c.step for c in calls.calls}
    undone = rollback_plan(
        target=instance, ctx=ctx, results=results, max_workers=1, on_step=attribute_calls(calls)
    )
    assert all(r.status == "succeeded" for r in undone.values())
    ran = {c.step for c in calls.calls}
    assert {"capture", "protect", "isolate", "iam", "tag", "lb", "asg"} <= ran
    assert uncovered(calls) == {}


def test_access_key_steps_call_only_what_they_declare(world, access_key, make_ctx, calls):
    ctx = make_ctx()
    results = run_plan(target=access_key, ctx=ctx, max_workers=1, on_step=attribute_calls(calls))
    rollback_plan(
        target=access_key, ctx=ctx, results=results, max_workers=1, on_step=attribute_calls(calls)
    )
    assert {c.step for c in calls.calls} >= {"capture_key", "deactivate_key", "evidence"}
    assert uncovered(calls) == {}


def test_planning_reads_only_what_capture_and_the_action_declare(
    world, instance, make_ctx, calls
) -> None:
    ctx = make_ctx()
    names = [a.name for a in all_actions() if "instance" in a.kinds]
    plan_all(target=instance, ctx=ctx, action_names=names)
    allowed = {p for a in all_actions() if "instance" in a.kinds for p in a.permissions}
    assert calls.calls and all(c.is_read for c in calls.calls)
    assert {c.action for c in calls.calls} <= allowed


@pytest.mark.parametrize("action", all_actions(), ids=lambda a: a.name)
def test_declarations_are_well_formed(action) -> None:
    assert action.permissions, action.name
    assert all(p.count(":") == 1 and p.split(":")[1][:1].isupper() for p in action.permissions)
    assert len(set(action.permissions)) == len(action.permissions)


def _granted(doc) -> set[str]:
    return {a for s in doc["Statement"] if s["Effect"] == "Allow" for a in s["Action"]}


def test_policy_covers_every_declared_permission_and_cross_account() -> None:
    doc = policy_document()
    declared = {p for a in all_actions() for p in a.permissions}
    # The command features (impact, trail, clean room, abuse, wipe, ...) declare theirs apart.
    declared |= set(feature_permissions())
    assert declared | {CROSS_ACCOUNT_ACTION} == _granted(doc)
    read = doc["Statement"][0]
    assert read["Resource"] == "*" and all(is_read(a) for a in read["Action"])
    assume = next(s for s in doc["Statement"] if s["Action"] == [CROSS_ACCOUNT_ACTION])
    assert assume["Condition"] == {"Null": {"sts:ExternalId": "false"}}


@pytest.mark.parametrize("capability", CAPABILITIES)
def test_each_action_is_granted_in_its_own_capability(capability) -> None:
    granted = _granted(policy_document(capability=capability))
    declared = {p for a in all_actions() if a.capability == capability for p in a.permissions}
    declared |= set(feature_permissions(capability))
    assert declared | {CROSS_ACCOUNT_ACTION} == granted
    assert set(declared_permissions(capability)) == declared


def test_all_is_the_union_of_the_capabilities() -> None:
    union = set().union(*(_granted(policy_document(capability=c)) for c in CAPABILITIES))
    assert _granted(policy_document(capability="all")) == union


def test_triage_writes_nothing() -> None:
    doc = policy_document(capability="triage", cross_account_role_name=None)
    allowed = [s for s in doc["Statement"] if s["Effect"] == "Allow"]
    assert len(allowed) == 1 and all(is_read(a) for a in allowed[0]["Action"])
    # AWS's own access levels agree (parliament ships the Service Authorization Reference).
    levels = access_levels()
    assert {levels[a] for a in allowed[0]["Action"]} <= {"Read", "List"}


def test_every_write_is_scoped_to_resources_or_conditions() -> None:
    doc = policy_document()
    for stmt in doc["Statement"]:
        if stmt["Effect"] != "Allow" or stmt["Sid"] == "Read":
            continue
        if stmt["Resource"] == "*" and "Condition" not in stmt:
            assert set(stmt["Action"]) <= set(UNSCOPABLE), stmt
    levels = access_levels()
    writes = {a for a in _granted(doc) if levels[a] not in ("Read", "List")}
    reads_on_star = set(doc["Statement"][0]["Action"])
    assert not writes & reads_on_star, writes & reads_on_star


def test_passrole_only_to_own_roles_for_ec2_and_roles_born_bounded() -> None:
    doc = policy_document()
    for action in ("iam:PassRole", "iam:CreateRole"):
        stmts = [s for s in doc["Statement"] if s["Effect"] == "Allow" and action in s["Action"]]
        assert stmts
        for s in stmts:
            resources = [s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"]
            assert all(r.startswith("arn:aws:iam::*:role/incident-bot-") for r in resources)
            key = "iam:PassedToService" if action == "iam:PassRole" else "iam:PermissionsBoundary"
            assert any(key in c for c in s["Condition"].values()), s


def test_deny_statements_keep_the_bot_off_its_own_role_and_boundaries() -> None:
    doc = policy_document(cross_account_role_name="ir-responder")
    denies = [s for s in doc["Statement"] if s["Effect"] == "Deny"]
    own = next(s for s in denies if "iam:PutRolePolicy" in s["Action"])
    assert "arn:aws:iam::*:role/ir-responder" in own["Resource"]
    assert "arn:aws:iam::*:role/incident-bot" in own["Resource"]
    never = next(s for s in denies if s["Resource"] == "*")
    assert {"iam:PutRolePermissionsBoundary", "iam:DeleteRolePermissionsBoundary"} <= set(
        never["Action"]
    )
    assert not set(never["Action"]) & _granted(doc)


def test_configured_bucket_and_topic_narrow_the_policy() -> None:
    topic = "arn:aws:sns:us-east-1:123456789012:secops"
    doc = policy_document(evidence_bucket="ir-evidence", contacts_topic_arn=topic)
    put = next(s for s in doc["Statement"] if "s3:PutObject" in s["Action"])
    assert put["Resource"] == "arn:aws:s3:::ir-evidence/incidents/*"
    publish = next(s for s in doc["Statement"] if "sns:Publish" in s["Action"])
    assert publish["Resource"] == topic


def test_ses_sends_only_as_the_configured_sender() -> None:
    unset = policy_document(capability="contain")
    send = next(s for s in unset["Statement"] if "ses:SendEmail" in s["Action"])
    assert send["Resource"] == "arn:aws:ses:*:*:identity/*"
    assert "ses:SendEmail" not in json.dumps(policy_document(capability="triage"))
    doc = policy_document(contacts_ses_sender="Incident Bot <bot@ir.example.com>")
    send = next(s for s in doc["Statement"] if "ses:SendEmail" in s["Action"])
    assert send["Action"] == ["ses:SendEmail"]
    # Either the address or its domain may be the verified identity.
    assert send["Resource"] == [
        "arn:aws:ses:*:*:identity/bot@ir.example.com",
        "arn:aws:ses:*:*:identity/ir.example.com",
    ]


def test_an_unscoped_write_is_refused_by_the_generator(monkeypatch) -> None:
    from containment import policy_scopes

    monkeypatch.delitem(policy_scopes.SCOPES, "iam:UpdateAccessKey")
    with pytest.raises(LookupError, match="iam:UpdateAccessKey"):
        policy_document(capability="contain")


def test_the_deny_all_role_is_born_under_the_permissions_boundary(world, instance, make_ctx):
    import boto3

    results = run_plan(target=instance, ctx=make_ctx(), action_names=["capture", "iam"])
    assert results["iam"].status == "succeeded", results["iam"].error
    role = boto3.client("iam").get_role(RoleName="incident-bot-deny-all")["Role"]
    boundary = role["PermissionsBoundary"]["PermissionsBoundaryArn"]
    assert boundary.endswith(":policy/incident-bot-boundary")


def test_the_bot_writes_no_inline_policy_and_cannot_change_the_revoker() -> None:
    """Inline policies go through incident-bot-revoker only; the bot may invoke it, not
    change it, and is denied every inline-policy write outright."""
    from containment.policy import INLINE_POLICY_WRITES, REVOKER_CHANGES

    for capability in (*CAPABILITIES, "all"):
        doc = policy_document(capability=capability)
        assert not set(INLINE_POLICY_WRITES) & _granted(doc), capability
        denies = [s for s in doc["Statement"] if s["Effect"] == "Deny"]
        inline = next(s for s in denies if s["Sid"] == "DenyInlinePolicyWrites")
        assert inline["Resource"] == "*" and set(inline["Action"]) == set(INLINE_POLICY_WRITES)
        locked = next(s for s in denies if s["Sid"] == "DenyChangingTheRevoker")
        assert "lambda:UpdateFunctionCode" in locked["Action"]
        assert locked["Resource"][0] == "arn:aws:lambda:*:*:function:incident-bot-revoker"
        assert not set(REVOKER_CHANGES) & {"lambda:InvokeFunction"}
        own = next(s for s in denies if s["Sid"] == "DenyChangingOwnIdentity")
        assert "arn:aws:iam::*:role/incident-bot-revoker" in own["Resource"]
    contain = policy_document(capability="contain")
    invoke = [s for s in contain["Statement"] if "lambda:InvokeFunction" in s["Action"]]
    assert invoke == [
        {
            "Sid": "InvokeRevoker",
            "Effect": "Allow",
            "Action": ["lambda:InvokeFunction"],
            "Resource": "arn:aws:lambda:*:*:function:incident-bot-revoker",
        }
    ]


def test_the_revokers_role_writes_inline_policies_but_never_on_the_bots_roles() -> None:
    from containment.policy import INLINE_POLICY_WRITES, revoker_document

    doc = revoker_document(cross_account_role_name="ir-responder")
    assert _granted(doc) == set(revoker.EXECUTION_PERMISSIONS)
    own = next(s for s in doc["Statement"] if s["Sid"] == "DenyChangingOwnIdentity")
    assert set(INLINE_POLICY_WRITES) <= set(own["Action"])
    assert {
        "arn:aws:iam::*:role/incident-bot",
        "arn:aws:iam::*:role/ir-responder",
        "arn:aws:iam::*:role/incident-bot-revoker",
    } <= set(own["Resource"])
