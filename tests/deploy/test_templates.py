"""Every CloudFormation template in deploy/ passes cfn-lint (AWS's own template linter)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
TEMPLATES = sorted(p for p in DEPLOY.glob("*.yml"))


def test_there_are_templates() -> None:
    assert any(p.name == "guardduty-events.yml" for p in TEMPLATES)


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_template_passes_cfn_lint(template: Path) -> None:
    cfn_lint = Path(sys.executable).with_name("cfn-lint")
    r = subprocess.run([str(cfn_lint), str(template)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr


def test_guardduty_rule_filters_on_detail_type() -> None:
    """CloudTrail events about GuardDuty share its source; only findings may reach the bot."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    # CloudFormation short-form tags (!Ref, !Sub, !GetAtt) as plain values.
    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    doc = yaml.load((DEPLOY / "guardduty-events.yml").read_text(), Loader=Loader)
    pattern = doc["Resources"]["FindingsRule"]["Properties"]["EventPattern"]
    assert pattern == {"source": ["aws.guardduty"], "detail-type": ["GuardDuty Finding"]}
