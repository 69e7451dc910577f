"""The deployment templates say what deploy/README.md promises: the bot's role is built from
the generated capability policies (never hand-copied), secrets live in Secrets Manager, the
evidence bucket is immutable, encrypted and TLS-only, and other accounts trust the bot only
with an external id. cfn-lint runs over all of them in test_templates.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from commands.permissions import policy_document, render_block
from containment.capabilities import CAPABILITIES
from containment.policy import (
    BOT_ROLE_NAME,
    DEFAULT_RESPONDER_ROLE,
    boundary_document,
    revoker_document,
)
from containment.policy_cfn import (
    HANDLER,
    INLINE_CODE_LIMIT,
    MANAGED_POLICY_LIMIT,
    REVOKER_TEMPLATES,
    TEMPLATES,
    current_block,
    policy_size,
)
from containment.policy_scopes import BOUNDARY_NAME
from tests.deploy.cfn_yaml import load

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def resources(name: str, kind: str) -> dict[str, dict[str, Any]]:
    doc = load(DEPLOY / name)
    return {k: v for k, v in doc["Resources"].items() if v["Type"] == kind}


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_generated_block_is_what_the_policy_generator_renders(name: str) -> None:
    # Regenerate with: python -m commands.permissions deploy/
    assert current_block((DEPLOY / name).read_text()) == render_block(name)


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_role_gets_exactly_the_generated_policies_and_the_boundary_exists(name: str) -> None:
    role, capabilities = TEMPLATES[name]
    policies = resources(name, "AWS::IAM::ManagedPolicy")
    by_name = {p["Properties"]["ManagedPolicyName"]: p for p in policies.values()}
    assert by_name[BOUNDARY_NAME]["Properties"]["PolicyDocument"] == boundary_document()
    for capability in CAPABILITIES:
        parts = [
            p
            for n, p in sorted(by_name.items())
            if n == f"incident-bot-{capability}" or n.startswith(f"incident-bot-{capability}-")
        ]
        if capability not in capabilities:
            assert not parts, capability
            continue
        statements = [s for p in parts for s in p["Properties"]["PolicyDocument"]["Statement"]]
        assert statements == policy_document(capability=capability)["Statement"], capability
        for part in parts:
            assert part["Properties"]["Roles"] == [{"Ref": role}]
            assert policy_size(part["Properties"]["PolicyDocument"]) <= MANAGED_POLICY_LIMIT
            assert part.get("Condition") == capabilities[capability]


def test_the_bot_runs_as_the_role_the_policies_protect_with_secrets_from_secrets_manager() -> None:
    doc = load(DEPLOY / "bot.yml")
    res = doc["Resources"]
    assert res["TaskRole"]["Properties"]["RoleName"] == BOT_ROLE_NAME
    task = res["TaskDefinition"]["Properties"]
    assert task["TaskRoleArn"] == {"Fn::GetAtt": ["TaskRole", "Arn"]}
    assert task["RequiresCompatibilities"] == ["FARGATE"]
    (container,) = task["ContainerDefinitions"]
    secrets = {s["Name"]: s["ValueFrom"] for s in container["Secrets"]}
    assert set(secrets) == {
        "SLACK_BOT_TOKEN",
        "SLACK_SIGNING_SECRET",
        "SLACK_APP_TOKEN",
        "INCIDENT_BOT_INGEST_TOKEN",
    }
    assert secrets["INCIDENT_BOT_INGEST_TOKEN"] == {"Ref": "IngestTokenSecret"}
    for value in secrets.values():
        ref = value.get("Ref") or value["Fn::Sub"].split("}")[0].lstrip("${")
        assert res[ref]["Type"] == "AWS::SecretsManager::Secret"
    plain = {e["Name"] for e in container["Environment"]}
    assert not plain & set(secrets), "a secret also passed in plain text"
    for name in ("SlackBotToken", "SlackSigningSecret", "SlackAppToken"):
        assert doc["Parameters"][name]["NoEcho"] is True
    # One writer to the SQLite file: the service never runs two tasks.
    service = res["Service"]["Properties"]
    assert service["DesiredCount"] == 1
    assert service["DeploymentConfiguration"]["MaximumPercent"] == 100


EVIDENCE_PROPERTIES = (
    "ObjectLockEnabled",
    "ObjectLockConfiguration",
    "VersioningConfiguration",
    "BucketEncryption",
    "PublicAccessBlockConfiguration",
    "LifecycleConfiguration",
)


@pytest.mark.parametrize("name", ["evidence-bucket.yml", "forensic-account.yml"])
def test_evidence_bucket_is_locked_versioned_kms_encrypted_tls_only_with_a_lifecycle(
    name: str,
) -> None:
    res = load(DEPLOY / name)["Resources"]
    bucket = res["EvidenceBucket"]
    props = bucket["Properties"]
    assert props["ObjectLockEnabled"] is True
    assert props["ObjectLockConfiguration"]["ObjectLockEnabled"] == "Enabled"
    assert props["ObjectLockConfiguration"]["Rule"]["DefaultRetention"]["Mode"] == {
        "Ref": "RetentionMode"
    }
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    (sse,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert sse["ServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "aws:kms",
        "KMSMasterKeyID": {"Fn::GetAtt": ["EvidenceKey", "Arn"]},
    }
    assert res["EvidenceKey"]["Properties"]["EnableKeyRotation"] is True
    assert all(props["PublicAccessBlockConfiguration"].values())
    assert props["LifecycleConfiguration"]["Rules"][0]["Status"] == "Enabled"
    assert bucket["DeletionPolicy"] == "Retain"
    statements = res["EvidenceBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    no_tls = next(s for s in statements if s["Sid"] == "DenyNonTls")
    assert no_tls["Effect"] == "Deny" and no_tls["Action"] == "s3:*"
    assert no_tls["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_forensic_account_bucket_is_the_same_as_the_evidence_bucket() -> None:
    """Two copies of one bucket definition: they must not drift apart."""
    mine = load(DEPLOY / "evidence-bucket.yml")["Resources"]
    theirs = load(DEPLOY / "forensic-account.yml")["Resources"]
    for prop in EVIDENCE_PROPERTIES:
        assert (
            mine["EvidenceBucket"]["Properties"][prop]
            == theirs["EvidenceBucket"]["Properties"][prop]
        )
    assert mine["EvidenceBucketPolicy"] == theirs["EvidenceBucketPolicy"]


@pytest.mark.parametrize(
    ("name", "role"),
    [("member-account-role.yml", "ResponderRole"), ("forensic-account.yml", "ForensicRole")],
)
def test_other_accounts_trust_only_the_bot_role_and_only_with_the_external_id(
    name: str, role: str
) -> None:
    props = load(DEPLOY / name)["Resources"][role]["Properties"]
    # The name the bot's policy may assume and its Deny statements protect.
    assert props["RoleName"] == DEFAULT_RESPONDER_ROLE
    (statement,) = props["AssumeRolePolicyDocument"]["Statement"]
    assert statement["Principal"] == {
        "AWS": {"Fn::Sub": f"arn:${{AWS::Partition}}:iam::${{BotAccountId}}:role/{BOT_ROLE_NAME}"}
    }
    assert statement["Condition"] == {"StringEquals": {"sts:ExternalId": {"Ref": "ExternalId"}}}


def test_socket_mode_without_an_app_token_is_refused_before_anything_is_created() -> None:
    rule = load(DEPLOY / "bot.yml")["Rules"]["SocketModeNeedsAppToken"]
    assert rule["RuleCondition"] == {"Fn::Equals": [{"Ref": "CertificateArn"}, ""]}
    (assertion,) = rule["Assertions"]
    assert assertion["Assert"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "SlackAppToken"}, ""]}]}


@pytest.mark.parametrize("name", REVOKER_TEMPLATES)
def test_the_revoker_in_the_template_runs_the_repos_code_under_its_own_role(name: str) -> None:
    res = load(DEPLOY / name)["Resources"]
    function = res["RevokerFunction"]["Properties"]
    code = HANDLER.read_text()
    assert function["Code"]["ZipFile"] == code  # containment/revoker/handler.py, verbatim
    assert len(code) <= INLINE_CODE_LIMIT
    assert function["FunctionName"] == "incident-bot-revoker"
    assert function["Handler"] == "index.lambda_handler"  # ZipFile code is saved as index.py
    assert function["Role"] == {"Fn::GetAtt": ["RevokerRole", "Arn"]}
    role = res["RevokerRole"]["Properties"]
    assert role["RoleName"] == "incident-bot-revoker"
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "lambda.amazonaws.com"}
    policy = res["RevokerPolicy"]["Properties"]
    assert policy["Roles"] == [{"Ref": "RevokerRole"}]
    assert policy["PolicyDocument"] == revoker_document()
    protected = function["Environment"]["Variables"]["PROTECTED_ROLES"].split()
    assert {BOT_ROLE_NAME, DEFAULT_RESPONDER_ROLE, "incident-bot-revoker"} <= set(protected)


def test_the_forensic_account_has_no_revoker() -> None:
    """The bot contains nothing there (no contain capability): nothing writes policies."""
    assert "RevokerFunction" not in load(DEPLOY / "forensic-account.yml")["Resources"]
