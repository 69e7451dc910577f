"""parliament with community auditors over every capability's policy: no HIGH or MEDIUM
finding unless deploy/README.md lists it with the reason it cannot be exploited."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from commands.permissions import policy_document
from containment.capabilities import CAPABILITIES
from containment.policy import boundary_document, revoker_document
from tests.deploy.parliament_check import findings

README = Path(__file__).resolve().parents[2] / "deploy" / "README.md"
SECTION = "## Remaining parliament findings"
SERIOUS = ("HIGH", "MEDIUM", "CRITICAL")


def accepted() -> dict[tuple[str, str, str], str]:
    """(capability, issue, type) -> the README's reason, from its findings table."""
    text = README.read_text()
    assert SECTION in text, f"deploy/README.md has no {SECTION!r} section"
    out = {}
    for line in text.split(SECTION, 1)[1].split("\n## ", 1)[0].splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or cells[0] in ("capability", "") or set(cells[0]) <= set("-: "):
            continue
        cap, issue, kind, why = cells
        assert len(why) > 20, f"no real reason given for {cap} {issue} {kind}"
        out[(cap, issue, kind)] = why
    return out


@pytest.mark.parametrize("capability", [*CAPABILITIES, "all"])
def test_no_unexplained_high_or_medium_finding(capability) -> None:
    listed = accepted()
    found = [f for f in findings(policy_document(capability=capability)) if f[0] in SERIOUS]
    unexplained = [f for f in found if (capability, f[1], f[2]) not in listed]
    assert not unexplained, f"{capability}: list these in deploy/README.md or fix: {unexplained}"


def test_every_listed_finding_still_occurs() -> None:
    """A finding that went away leaves the README: the list says what is true."""
    live = {
        (cap, issue, kind)
        for cap in (*CAPABILITIES, "all")
        for sev, issue, kind in findings(policy_document(capability=cap))
        if sev in SERIOUS
    }
    assert set(accepted()) <= live, set(accepted()) - live


def test_triage_has_no_privilege_escalation_or_permissions_management() -> None:
    issues = {f[1] for f in findings(policy_document(capability="triage"))}
    assert not issues & {"PRIVILEGE_ESCALATION", "PERMISSIONS_MANAGEMENT_ACTIONS"}


def test_the_boundary_is_clean() -> None:
    assert [f for f in findings(boundary_document()) if f[0] in SERIOUS] == []


def test_parliament_catches_the_old_unscoped_shape() -> None:
    """The check can fail: a PassRole on "*" beside RunInstances is reported HIGH."""
    bad = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["iam:PassRole", "ec2:RunInstances"],
                "Resource": "*",
            }
        ],
    }
    assert ("HIGH", "PRIVILEGE_ESCALATION", "CreateEC2WithExistingIP") in findings(bad)


def test_readme_table_rows_are_parsed() -> None:
    rows = accepted()
    assert rows and all(re.fullmatch(r"[A-Z_]+", issue) for _, issue, _ in rows)


def test_the_revokers_role_has_only_the_findings_its_fixed_code_answers() -> None:
    """The function's execution role holds the inline-policy writes the bot gave up; only its
    code (which writes nothing but denies) uses them. deploy/README.md says so."""
    found = {f for f in findings(revoker_document()) if f[0] in SERIOUS}
    assert found == {
        ("HIGH", "PRIVILEGE_ESCALATION", "PutUserPolicy"),
        ("MEDIUM", "PERMISSIONS_MANAGEMENT_ACTIONS", "-"),
    }
    assert "## The revoker" in README.read_text()
