"""Property tests: whatever arrives, normalize() returns findings or raises one of its signals."""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commands.findings.errors import BadFinding, Ignored
from commands.findings.normalize import NormalizedFinding, normalize, normalize_finding
from tests.commands.findings.guardduty_fixtures import GUARDDUTY_DIR

EC2_DETAIL = json.loads(
    (GUARDDUTY_DIR / "automated-response-sample__guardduty_ec2_event.json").read_text()
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
finding_keys = st.sampled_from(
    [
        "id",
        "type",
        "severity",
        "Severity",
        "detail",
        "detail-type",
        "source",
        "Findings",
        "Records",
        "Sns",
        "Type",
        "TopicArn",
        "Message",
        "resource",
        "service",
        "updatedAt",
        "count",
        "archived",
        "additionalInfo",
        "sample",
        "value",
        "region",
        "accountId",
    ]
)
shaped_values = st.recursive(
    json_values,
    lambda children: (
        st.dictionaries(finding_keys, children, max_size=6) | st.lists(children, max_size=3)
    ),
    max_leaves=25,
)


def leaf_paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a key or list item inside value."""
    paths: list[tuple[Any, ...]] = []
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, child in items:
        paths.append((*prefix, key))
        if isinstance(child, dict | list) and child:
            paths.extend(leaf_paths(child, (*prefix, key)))
    return paths


EC2_PATHS = leaf_paths(EC2_DETAIL)


def outcome(payload: Any) -> list[NormalizedFinding] | Exception:
    try:
        return normalize(payload)
    except (BadFinding, Ignored) as signal:
        return signal


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(shaped_values)
def test_arbitrary_json_never_escapes_the_signals(payload: Any) -> None:
    result = outcome(payload)
    if isinstance(result, Exception):
        assert str(result) and "\n" not in str(result)
    else:
        assert all(isinstance(f, NormalizedFinding) for f in result)


@settings(max_examples=300)
@given(st.sampled_from(EC2_PATHS), json_values)
def test_any_field_of_a_real_finding_may_be_anything(path: tuple[Any, ...], value: Any) -> None:
    detail = copy.deepcopy(EC2_DETAIL)
    node = detail
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    result = outcome(detail)
    if not isinstance(result, Exception):
        (finding,) = result
        assert 0.0 <= finding.severity <= 10.0
        assert finding.count >= 0
        assert finding.id and finding.type


@given(st.floats(min_value=0, max_value=10), st.booleans())
def test_band_follows_the_documented_thresholds(severity: float, as_string: bool) -> None:
    raw: Any = repr(severity) if as_string else severity
    finding = normalize_finding({**EC2_DETAIL, "severity": raw})
    assert finding.severity == severity
    expected = (
        "critical"
        if severity >= 9
        else "high"
        if severity >= 7
        else "medium"
        if severity >= 4
        else "low"
    )
    assert finding.band == expected


@given(st.integers(min_value=0, max_value=4_102_444_800))
def test_epoch_seconds_and_milliseconds_agree(seconds: int) -> None:
    as_seconds = normalize_finding({**EC2_DETAIL, "updatedAt": seconds}).updated_at
    as_ms = normalize_finding({**EC2_DETAIL, "updatedAt": seconds * 1000}).updated_at
    iso = normalize_finding({**EC2_DETAIL, "updatedAt": as_seconds.isoformat()}).updated_at
    if seconds * 1000 >= 1e11:  # below that, a millisecond count reads as seconds
        assert as_seconds == as_ms
    assert as_seconds == iso
    assert as_seconds.timestamp() == seconds
