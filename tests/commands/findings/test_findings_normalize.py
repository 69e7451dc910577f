"""normalize() on every shared fixture file, on wrong value types, and on hostile input."""

from __future__ import annotations

import copy
import json
import logging
from datetime import UTC, datetime
from typing import Any

import pytest

from commands.findings.errors import BadFinding, Ignored
from commands.findings.normalize import (
    NormalizedFinding,
    loads,
    normalize,
    normalize_finding,
    severity_band,
)
from tests.commands.findings.guardduty_fixtures import (
    GUARDDUTY_DIR,
    SNS_DIR,
    all_files,
    payloads,
    read_http,
)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# What each payload of each file must become: a dict of expected attributes per finding,
# ("ignored", reason fragment) or ("bad", reason fragment). Payloads are keyed by label.
NOTIFY_SLACK = {
    "id": "sample-id-2",
    "type": "Recon:EC2 PortProbeUnprotectedPort",
    "title": "SAMPLE Unprotected port on EC2 instance i-123123123 is being probed",
    "account_id": "123456789",
    "region": "us-east-1",
    "count": 1234,
    "first_seen": utc("2020-01-02T01:02:03"),
    "last_seen": utc("2020-01-03T01:02:03"),
    "resource_type": None,
    "resource_id": None,
    "updated_at": None,
    "sample": False,
}
PANTHER_ADMIN = {
    "id": "eeb88ab56556eb7771b266670dddee5a",
    "type": "PrivilegeEscalation:IAMUser/AdministrativePermissions",
    "account_id": "123456789012",
    "region": "us-east-1",
    "remote_domain": "cloudformation.amazonaws.com",
    "remote_ip": None,
    "updated_at": utc("2020-02-14T18:12:22.316"),
    "first_seen": utc("2020-02-14T17:59:17"),
    "archived": False,
}
EXPECTED: dict[str, dict[str, Any]] = {
    "automated-response-sample__guardduty_ec2_event.json": {
        "file": [
            {
                "id": "16afba5c5c43e07c9e3e5e2e544e95df",
                "type": "Canary:EC2/Stateless.IntegTest",
                "severity": 5.0,
                "band": "medium",
                "account_id": "123456789012",
                "region": "us-east-1",
                "resource_type": "Instance",
                "instance_id": "i-05746eb48123455e0",
                "resource_id": "i-05746eb48123455e0",
                "public_ips": ("11.111.111.1",),
                "remote_ip": "0.0.0.0",
                "remote_asn": None,  # asn -1 means unknown
                "count": 1,
                "first_seen": utc("2017-10-31T23:16:23"),
                "updated_at": utc("2017-10-31T23:16:23.824"),
                "archived": False,
                "sample": False,
                "tags": {"Name": "ssh-22-open"},
            }
        ]
    },
    "automated-response-sample__guardduty_iam_event.json": {
        "file": [
            {
                "id": "30bf285e52a1e405084ff6ec28e06e17",
                "type": "Recon:IAMUser/MaliciousIPCaller.Custom",
                "resource_type": "AccessKey",
                "access_key_id": "GeneratedFindingAccessKeyId",
                "user_name": "GeneratedFindingUserName",
                "instance_id": "i-99999999",
                "resource_id": "GeneratedFindingAccessKeyId",
                "network_interface_ids": ("eni-bfcffe88",),
                "remote_ip": "198.51.100.0",
                "remote_asn": None,  # asn "-1"
                "archived": True,
                "sample": True,
            }
        ]
    },
    "automated-response-sample__guardduty_s3_event.json": {
        "file": [
            {
                "id": "2cbf285e52a6e74ff96f4cb3cf93296d",
                "type": "PenTest:S3/ParrotLinux",
                "resource_type": "S3Bucket",
                "bucket_names": ("bucketName",),
                "resource_id": "bucketName",
                "archived": True,
                "sample": True,
            }
        ]
    },
    "awsdocs-guardduty__GetFindings-REST-response-syntax.txt": {
        "file": ("bad", "findings[0]: severity must be a number, got 'float'")
    },
    "awsdocs-guardduty__eventbridge-rule-pattern-medium-high.json": {
        "file": ("bad", "detail-type must be a string")
    },
    "awsdocs-guardduty__input-transformer-paths.json": {"file": ("bad", "finding has no id")},
    "custodian__ec2-duty-event.json": {
        "file": [
            {
                "id": "b4b01b60fc24a199139f8f5f490edd81",
                "type": "Backdoor:EC2/C&CActivity.B!DNS",
                "account_id": "883606788610",  # detail wins over the envelope's account
                "instance_id": "i-99999999",
                "remote_domain": "example.com",
                "remote_ip": None,
                "sample": True,
                "updated_at": utc("2017-12-08T15:32:49.865"),
            }
        ]
    },
    "custodian__iam-duty-event.json": {
        "file": [
            {
                "id": "36b01b60fc22bb4edb19d62d9899e953",
                "type": "UnauthorizedAccess:IAMUser/TorIPCaller",
                "access_key_id": "GeneratedFindingAccessKeyId",
                "user_name": "GeneratedFindingUserName",
                "remote_ip": "198.51.100.0",
                "remote_asn": None,
                "sample": True,
            }
        ]
    },
    "guardduty-waf-acl__gd2acl_test_event.json": {
        "file": [
            {
                "id": "02be5693b63eea1d67e6f321c6aee4f3",
                "type": "UnauthorizedAccess:EC2/SSHBruteForce",
                "severity": 2.0,
                "band": "low",
                "account_id": None,
                "region": "us-east-1",
                "instance_id": "i-99999999",
                "public_ips": ("198.51.100.0",),
                "remote_ip": "198.51.100.0",
                "first_seen": utc("2018-05-11T14:56:39.976"),
                "sample": True,
            }
        ]
    },
    "notify-slack__guardduty_finding_high.json": {
        "file": [{**NOTIFY_SLACK, "severity": 9.0, "band": "critical"}]
    },
    "notify-slack__guardduty_finding_medium.json": {
        "file": [{**NOTIFY_SLACK, "severity": 5.0, "band": "medium"}]
    },
    "notify-slack__guardduty_finding_low.json": {
        "file": [{**NOTIFY_SLACK, "severity": 2.0, "band": "low"}]
    },
    "panther__aws_guardduty_critical_sev_findings.yml": {
        "Critical Sev Finding": [
            {
                "id": "8c258d654378414b9bc26f61a93eb816",
                "type": "AttackSequence:IAM/CompromisedCredentials",
                "severity": 9.0,
                "band": "critical",
                "resource_type": "AttackSequence",
                "resource_id": None,
                # "2025-02-25 20:40:06.000000000": space separator, nanoseconds
                "first_seen": utc("2025-02-25T20:40:06"),
                "updated_at": utc("2025-02-25T20:40:06.721"),
                "sample": False,
            }
        ],
        "Critical Sev Finding As Sample Data": [
            {"id": "b174b38d16e34da0a4c66012083bd8f7", "band": "critical", "sample": True}
        ],
    },
    "panther__aws_guardduty_high_sev_findings.yml": {
        "High Sev Finding": [{**PANTHER_ADMIN, "severity": 8.0, "band": "high", "sample": False}],
        "High Sev Finding As Sample Data": [{**PANTHER_ADMIN, "band": "high", "sample": True}],
    },
    "panther__aws_guardduty_med_sev_findings.yml": {
        "Medium Sev Finding": [{**PANTHER_ADMIN, "severity": 5.0, "band": "medium"}],
        "Medium Sev Finding As Sample Data": [{**PANTHER_ADMIN, "sample": True}],
    },
    "panther__aws_guardduty_low_sev_findings.yml": {
        "Low Sev Finding": [{**PANTHER_ADMIN, "severity": 1.0, "band": "low", "sample": False}],
        "Low Sev Finding As Sample Data": [{**PANTHER_ADMIN, "band": "low", "sample": True}],
    },
    "stix-shifter__test_aws_guardduty_json_to_stix.py.txt": {
        "line 18": [
            {
                "id": "123abc456def789ghi123456",
                "type": "UnauthorizedAccess:EC2/RDPBruteForce",
                "severity": 2.0,
                "account_id": "12345678910",
                "instance_id": "i-0bc12345678910",
                "public_ips": ("22.112.112.112",),
                "network_interface_ids": ("eni-025723cd79287c910",),
                "remote_ip": "15.116.116.115",
                "remote_asn": 174,  # "Asn": "174"
                "count": 43,
                "archived": False,  # 'false' as a string
                "sample": False,  # AdditionalInfo.Value "{}"
                "tags": {"Name": "cp4s_proofpoint_development"},
                "updated_at": utc("2023-05-05T13:13:02.364"),
            }
        ],
        "line 130": [
            {
                "id": "0011c11111404002875f3ab698ae5b9b",
                "type": "UnauthorizedAccess:S3/TorIPCaller",
                "band": "high",
                "resource_type": "S3Bucket",
                "remote_ip": "111.11.000.1",
                "sample": True,  # "sample":true inside AdditionalInfo.Value JSON
            }
        ],
        "line 302": [
            {
                "id": "12c12dd12dc12bf1ad12121ef1212cb",
                "type": "Stealth:IAMUser/CloudTrailLoggingDisabled",
                "resource_type": "AccessKey",
                "remote_ip": "222.22.222.22",
            }
        ],
        "line 376": [
            {
                "id": "01fc453c5efe4cfd895a83ee6111111",
                "type": "CredentialAccess:RDS/MaliciousIPCaller.FailedLogin",
                "resource_type": "RDSDBInstance",
                "band": "medium",
                "sample": True,
            }
        ],
        # The test functions build partial findings (no Id) to probe one mapping each.
        **{
            f"line {line}": ("bad", "finding has no id")
            for line in (692, 784, 819, 869, 965, 991, 1024, 1144)
        },
    },
    "stix-shifter__test_aws_guardduty_transmission.py.txt": {
        "line 30": [
            {
                "id": "c2c40bf921b79794d9bd0f4559ec6ace",
                "instance_id": "i-0999999999999999",
                "public_ips": ("12.12.112.112",),
                "remote_ip": "10.11.111.112",
                "count": 21,
                "last_seen": utc("2023-05-14T05:44:35"),
                "tags": {"Name": "cp4s-splunk-enterprise-large-2"},
            }
        ],
        "line 289": ("bad", "Findings[0]: finding has no id"),
        "line 341": ("bad", "Findings[0]: finding has no id"),
    },
    "sumologic__aws-api-call-via-cloudtrail_CreateSampleFindings.json": {
        "file": ("ignored", "'AWS API Call via CloudTrail' is not a finding")
    },
    "awsdocs-guardduty__guardduty-announcements__new-features__parsed-message.json": {
        "file": ("ignored", "announcement 'NEW_FEATURES'")
    },
    "awsdocs-guardduty__guardduty-announcements__new-features__sns-notification.json": {
        "file": ("ignored", "announcement 'NEW_FEATURES'")
    },
    "awsdocs-guardduty__guardduty-announcements__new-findings__parsed-message.json": {
        "file": ("ignored", "announcement 'NEW_FINDINGS'")
    },
    "awsdocs-guardduty__guardduty-announcements__new-findings__sns-notification.json": {
        "file": ("ignored", "announcement 'NEW_FINDINGS'")
    },
    "awsdocs-sns__http-Notification.http": {"body": ("bad", "SNS Message is not JSON")},
    "awsdocs-sns__http-Notification.json": {"file": ("bad", "SNS Message is not JSON")},
    "awsdocs-sns__http-SubscriptionConfirmation.http": {
        "body": ("ignored", "SNS SubscriptionConfirmation")
    },
    "awsdocs-sns__http-SubscriptionConfirmation.json": {
        "file": ("ignored", "SNS SubscriptionConfirmation")
    },
    "awsdocs-sns__http-UnsubscribeConfirmation.http": {
        "body": ("ignored", "SNS UnsubscribeConfirmation")
    },
    "awsdocs-sns__http-UnsubscribeConfirmation.json": {
        "file": ("ignored", "SNS UnsubscribeConfirmation")
    },
    "notify-slack__lambda-sns-record__guardduty_finding.json": {
        "file": [{**NOTIFY_SLACK, "region": "us-gov-east-1", "severity": 9.0, "band": "critical"}]
    },
    "notify-slack__lambda-sns-record__guardduty_malware_s3_object_scan_result.json": {
        "file": ("ignored", "'GuardDuty Malware Protection Object Scan Result' is not a finding")
    },
}


def test_every_fixture_file_has_expectations() -> None:
    assert {p.name for p in all_files()} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_file(name: str) -> None:
    path = GUARDDUTY_DIR / name if (GUARDDUTY_DIR / name).exists() else SNS_DIR / name
    found = dict(payloads(path))
    assert set(found) == set(EXPECTED[name]), "payload labels differ"
    for label, expected in EXPECTED[name].items():
        payload = found[label]
        if isinstance(expected, tuple):
            kind, fragment = expected
            error = BadFinding if kind == "bad" else Ignored
            with pytest.raises(error) as caught:
                normalize(payload)
            assert fragment in str(caught.value)
            assert "\n" not in str(caught.value)
            continue
        findings = normalize(payload)
        assert len(findings) == len(expected)
        for finding, attrs in zip(findings, expected, strict=True):
            assert isinstance(finding, NormalizedFinding)
            for attr, value in attrs.items():
                assert getattr(finding, attr) == value, f"{label}: {attr}"
            assert finding.band == severity_band(finding.severity)
            for moment in (finding.first_seen, finding.last_seen, finding.updated_at):
                assert moment is None or moment.utcoffset().total_seconds() == 0


def test_http_requests_match_their_json_bodies() -> None:
    for http in SNS_DIR.glob("*.http"):
        request_line, headers, body = read_http(http)
        twin = json.loads(http.with_suffix(".json").read_text())
        assert request_line.startswith("POST ")
        assert json.loads(body) == twin
        assert headers["x-amz-sns-message-type"] == twin["Type"]


def test_detail_raw_is_the_unfolded_finding() -> None:
    path = GUARDDUTY_DIR / "stix-shifter__test_aws_guardduty_transmission.py.txt"
    response = dict(payloads(path))["line 30"]
    (finding,) = normalize(response)
    assert finding.raw is response["Findings"][0]
    assert finding.raw["Resource"]["InstanceDetails"]["InstanceId"] == "i-0999999999999999"


# --- shapes built from the real fixtures -------------------------------------------------

EC2_DETAIL = json.loads(
    (GUARDDUTY_DIR / "automated-response-sample__guardduty_ec2_event.json").read_text()
)
CUSTODIAN_EVENT = json.loads((GUARDDUTY_DIR / "custodian__ec2-duty-event.json").read_text())


def sns_http(message: dict[str, Any]) -> dict[str, Any]:
    envelope = json.loads((SNS_DIR / "awsdocs-sns__http-Notification.json").read_text())
    envelope["Message"] = json.dumps(message)
    return envelope


def sns_lambda(*messages: dict[str, Any]) -> dict[str, Any]:
    event = json.loads(
        (SNS_DIR / "notify-slack__lambda-sns-record__guardduty_finding.json").read_text()
    )
    template = event["Records"][0]
    event["Records"] = []
    for message in messages:
        record = copy.deepcopy(template)
        record["Sns"]["Message"] = json.dumps(message)
        record["Sns"]["Subject"] = None  # Lambda records may carry a null subject
        event["Records"].append(record)
    return event


def pascal(value: Any) -> Any:
    """camelCase keys to PascalCase, as boto3 returns them (leaving `AWS::...` keys alone)."""
    if isinstance(value, dict):
        return {
            (k[0].upper() + k[1:] if k[:1].islower() else k): pascal(v) for k, v in value.items()
        }
    if isinstance(value, list):
        return [pascal(v) for v in value]
    return value


def essence(finding: NormalizedFinding) -> tuple[Any, ...]:
    """Every field except raw."""
    return tuple(getattr(finding, f) for f in NormalizedFinding.__slots__ if f != "raw")


def test_all_shapes_give_the_same_finding() -> None:
    event = {**CUSTODIAN_EVENT, "detail": EC2_DETAIL}
    (reference,) = normalize(event)
    shapes = {
        "eventbridge": event,
        "bare camel": EC2_DETAIL,
        "bare pascal": pascal(EC2_DETAIL),
        "get_findings": {"Findings": [pascal(EC2_DETAIL)], "ResponseMetadata": {}},
        "sns http": sns_http(event),
        "sns lambda": sns_lambda(event),
    }
    for label, shape in shapes.items():
        (finding,) = normalize(shape)
        assert essence(finding) == essence(reference), label


def test_sns_http_body_keeps_signing_cert_url_casing_apart() -> None:
    body = sns_http(CUSTODIAN_EVENT)
    assert "SigningCertURL" in body
    assert normalize(body)[0].id == "b4b01b60fc24a199139f8f5f490edd81"


def test_lambda_records_skip_ignored_events_but_keep_findings() -> None:
    name = "notify-slack__lambda-sns-record__guardduty_malware_s3_object_scan_result.json"
    record = json.loads((SNS_DIR / name).read_text())["Records"][0]
    malware = json.loads(record["Sns"]["Message"])
    findings = normalize(sns_lambda(malware, CUSTODIAN_EVENT))
    assert [f.id for f in findings] == ["b4b01b60fc24a199139f8f5f490edd81"]


def test_one_bad_finding_spoils_the_whole_response() -> None:
    bad = {**EC2_DETAIL, "severity": "high"}
    with pytest.raises(BadFinding, match=r"findings\[1\]: severity must be a number"):
        normalize({"findings": [EC2_DETAIL, bad]})


def test_get_findings_with_no_findings_is_empty() -> None:
    assert normalize({"Findings": [], "ResponseMetadata": {"HTTPStatusCode": 200}}) == []


def test_ignored_detail_types_log_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    event = {**CUSTODIAN_EVENT, "detail-type": "GuardDuty Runtime Protection Health"}
    with (
        caplog.at_level(logging.DEBUG, logger="commands.findings.normalize"),
        pytest.raises(Ignored),
    ):
        normalize(event)
    assert "GuardDuty Runtime Protection Health" in caplog.text


def test_events_from_other_sources_are_ignored() -> None:
    with pytest.raises(Ignored, match=r"aws\.macie"):
        normalize({**CUSTODIAN_EVENT, "source": "aws.macie"})
    # Security Hub's imported findings are read (test_findings_asff.py); its other events not.
    with pytest.raises(Ignored, match="Security Hub Findings - Imported"):
        normalize({**CUSTODIAN_EVENT, "source": "aws.securityhub"})


# --- wrong value types ---------------------------------------------------------------------


def with_detail(**changes: Any) -> dict[str, Any]:
    detail = copy.deepcopy(EC2_DETAIL)
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        node = detail
        for key in parents:
            node = node[key]
        node[leaf] = value
    return detail


@pytest.mark.parametrize(
    ("raw", "expected"), [(8, 8.0), (7.5, 7.5), ("8.9", 8.9), (" 4 ", 4.0), ("10", 10.0)]
)
def test_numeric_severities_are_accepted(raw: Any, expected: float) -> None:
    assert normalize_finding(with_detail(severity=raw)).severity == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("HIGH", "severity must be a number, got 'HIGH'"),
        (True, "severity must be a number"),
        (None, "finding has no severity"),
        ("NaN", "severity must be a finite number"),
        ([5], "severity must be a number, got list"),
        (11, "severity must be between 0 and 10"),
        (-1, "severity must be between 0 and 10"),
    ],
)
def test_bad_severities_are_rejected(raw: Any, reason: str) -> None:
    with pytest.raises(BadFinding, match=reason):
        normalize_finding(with_detail(severity=raw))


@pytest.mark.parametrize(
    ("severity", "band"),
    [
        (1, "low"),
        (3.9, "low"),
        (4, "medium"),
        (6.9, "medium"),
        (7.0, "high"),
        (8.9, "high"),
        (9, "critical"),
        (10, "critical"),
    ],
)
def test_bands(severity: float, band: str) -> None:
    assert normalize_finding(with_detail(severity=severity)).band == band


ASN_PATH = "service__action__networkConnectionAction__remoteIpDetails__organization__asn"


@pytest.mark.parametrize(
    ("raw", "expected"), [("-1", None), (-1, None), (None, None), ("16509", 16509), (174, 174)]
)
def test_asn_forms(raw: Any, expected: int | None) -> None:
    assert normalize_finding(with_detail(**{ASN_PATH: raw})).remote_asn == expected


def test_non_numeric_asn_is_rejected() -> None:
    with pytest.raises(BadFinding, match="asn must be a number"):
        normalize_finding(with_detail(**{ASN_PATH: "AS16509"}))


@pytest.mark.parametrize(
    "raw",
    [
        "2017-10-31T23:16:23.824Z",
        "2017-10-31T23:16:23.824+00:00",
        "2017-10-31 23:16:23.824",
        "2017-11-01T01:16:23.824+02:00",
        1509491783.824,
        1509491783824,
        "1509491783.824",
    ],
)
def test_time_forms(raw: Any) -> None:
    finding = normalize_finding(with_detail(updatedAt=raw))
    assert finding.updated_at == datetime(2017, 10, 31, 23, 16, 23, 824000, tzinfo=UTC)


@pytest.mark.parametrize("raw", ["yesterday", "2017-13-45T00:00:00Z", True, -5, {"t": 1}, 1e300])
def test_bad_times_are_rejected(raw: Any) -> None:
    with pytest.raises(BadFinding, match="updatedAt"):
        normalize_finding(with_detail(updatedAt=raw))


def test_nulls_read_as_absent() -> None:
    detail = with_detail(resource=None, title=None, updatedAt=None)
    detail["service"] = {
        **detail["service"],
        "action": None,
        "additionalInfo": None,
        "count": None,
        "archived": None,
    }
    finding = normalize_finding(detail)
    assert (finding.resource_type, finding.instance_id, finding.remote_ip) == (None, None, None)
    assert finding.title == finding.type
    assert (finding.count, finding.archived, finding.sample, finding.updated_at) == (
        1,
        False,
        False,
        None,
    )


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"resource": "i-123"}, "resource must be an object"),
        ({"resource__instanceDetails__networkInterfaces": {}}, "networkInterfaces must be a list"),
        ({"service__count": "many"}, "count must be a number"),
        ({"service__count": 1.5}, "count must be a whole number"),
        ({"service__count": -3}, "count must not be negative"),
        ({"service__archived": "maybe"}, "archived must be true or false"),
        ({"id": ""}, "finding has no id"),
        ({"id": 42}, "id must be a string"),
        ({"type": None}, "finding has no type"),
    ],
)
def test_wrong_types_are_rejected(changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(BadFinding, match=reason):
        normalize_finding(with_detail(**changes))


def test_archived_and_counts_as_strings() -> None:
    finding = normalize_finding(with_detail(service__archived="TRUE", service__count="7"))
    assert (finding.archived, finding.count) == (True, 7)


def test_sample_in_additional_info_value_forms() -> None:
    value_form = with_detail(
        service__additionalInfo={"value": '{"sample":true}', "type": "default"}
    )
    not_sample = with_detail(service__additionalInfo={"value": '{"sample":false}'})
    broken = with_detail(service__additionalInfo={"value": '{"sample":tru'})
    assert normalize_finding(value_form).sample is True
    assert normalize_finding(not_sample).sample is False
    assert normalize_finding(broken).sample is False


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "malformed JSON"),
        (b"\xff\xfe", "malformed JSON"),
        (b"[" * 100_000, "malformed JSON"),
    ],
)
def test_loads_reasons(body: bytes, reason: str) -> None:
    with pytest.raises(BadFinding, match=reason):
        loads(body)


@pytest.mark.parametrize("payload", [[], "finding", 3, None, {"Records": "x"}, {"detail": []}])
def test_payloads_that_are_not_objects(payload: Any) -> None:
    with pytest.raises(BadFinding):
        normalize(payload)


def test_sns_wrapped_too_deeply_is_rejected() -> None:
    payload: dict[str, Any] = CUSTODIAN_EVENT
    for _ in range(6):
        payload = sns_http(payload)
    with pytest.raises(BadFinding, match="wrapped too deeply"):
        normalize(payload)
