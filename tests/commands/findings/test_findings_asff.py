"""Security Hub findings (ASFF, EventBridge "Security Hub Findings - Imported") normalized
like GuardDuty's."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from commands.findings.errors import BadFinding, Ignored
from commands.findings.normalize import normalize
from tests.fixture_paths import FIXTURES

GD_ID = "32b7017d2019dfe922abc1234567890a"


def imported() -> dict[str, Any]:
    path = FIXTURES / "securityhub" / "asff-imported-guardduty-inspector.json"
    return json.loads(path.read_text())


def test_imported_findings_normalize() -> None:
    gd, inspector = normalize(imported())
    assert gd.id == GD_ID  # GuardDuty's own id: the same row as its direct delivery
    assert gd.type == "Backdoor:EC2-C&CActivity.B!DNS"
    assert (gd.severity, gd.band) == (8.0, "high")
    assert gd.resource_kind == "Instance" and gd.resource_id == "i-0abcd1234ef567890"
    assert gd.count == 3 and gd.origin == "securityhub" and not gd.sample
    assert gd.tags == {"Name": "checkout-web-1"}
    assert gd.first_seen is not None and gd.first_seen.isoformat().startswith("2026-11-27T11:40")
    assert gd.account_id == "123456789012" and gd.region == "us-east-1"
    assert gd.raw["ProductArn"] == "arn:aws:securityhub:us-east-1::product/aws/guardduty"
    assert inspector.id.startswith("arn:aws:inspector2:")
    assert (inspector.severity, inspector.band) == (9.0, "critical")
    assert inspector.resource_id == "i-0fedcba9876543210"


def test_other_security_hub_events_are_ignored() -> None:
    event = imported()
    event["detail-type"] = "Security Hub Findings - Custom Action"
    with pytest.raises(Ignored):
        normalize(event)


@pytest.mark.parametrize(
    ("path", "value", "reason"),
    [
        (("Id",), None, "no Id"),
        (("Severity",), {}, "Severity.Label"),
        (("Resources",), "i-1", "Resources must be a list"),
        (("Types",), [], "no Types"),
    ],
)
def test_malformed_asff_is_refused_whole(path: tuple[str, ...], value: Any, reason: str) -> None:
    event = copy.deepcopy(imported())
    target = event["detail"]["findings"][1]
    target[path[0]] = value
    if path == ("Types",):
        target.pop("GeneratorId")
    with pytest.raises(BadFinding, match=reason):
        normalize(event)
