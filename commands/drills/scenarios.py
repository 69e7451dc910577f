"""Drill scenarios: which GuardDuty finding arrives, and what the responders should end with.

The findings are EventBridge events in GuardDuty's real shape (camelCase `detail`), filled in
with the sandbox's real resource ids so the whole pipeline runs on them.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from commands.drills.sandbox import Sandbox


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    target_kind: str  # instance | access_key
    finding: Callable[[Sandbox, dt.datetime], dict[str, Any]]


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _envelope(sb: Sandbox, now: dt.datetime, detail: dict[str, Any]) -> dict[str, Any]:
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "GuardDuty Finding",
        "source": "aws.guardduty",
        "account": sb.account_id,
        "time": _iso(now),
        "region": sb.region,
        "resources": [],
        "detail": detail,
    }


def _instance_resource(sb: Sandbox) -> dict[str, Any]:
    return {
        "resourceType": "Instance",
        "instanceDetails": {
            "instanceId": sb.instance_id,
            "instanceType": "t3.medium",
            "instanceState": "running",
            "availabilityZone": f"{sb.region}a",
            "iamInstanceProfile": {
                "arn": f"arn:aws:iam::{sb.account_id}:instance-profile/{sb.instance_profile_name}",
                "id": "AIPA00000000DRILL",
            },
            "networkInterfaces": [
                {
                    "networkInterfaceId": eni,
                    "subnetId": sb.subnet_id,
                    "vpcId": sb.vpc_id,
                    "privateIpAddress": f"10.20.1.{10 + i}",
                    "publicIp": "203.0.113.10" if i == 0 else None,
                    "securityGroups": [{"groupId": sb.web_group_id, "groupName": "checkout-web"}],
                }
                for i, eni in enumerate(sb.eni_ids)
            ],
            "tags": [{"key": k, "value": v} for k, v in sb.tags.items()],
        },
    }


def _detail(
    sb: Sandbox,
    now: dt.datetime,
    *,
    type_: str,
    severity: float,
    title: str,
    description: str,
    resource: dict[str, Any],
    action: dict[str, Any],
    resource_role: str = "ACTOR",
) -> dict[str, Any]:
    first = now - dt.timedelta(minutes=7)
    return {
        "schemaVersion": "2.0",
        "accountId": sb.account_id,
        "region": sb.region,
        "partition": "aws",
        "id": uuid.uuid4().hex,
        "arn": f"arn:aws:guardduty:{sb.region}:{sb.account_id}:detector/drill/finding/x",
        "type": type_,
        "resource": resource,
        "service": {
            "serviceName": "guardduty",
            "detectorId": "drilldetector",
            "action": action,
            "resourceRole": resource_role,
            "additionalInfo": {"value": '{"drill":true}', "type": "default"},
            "eventFirstSeen": _iso(first),
            "eventLastSeen": _iso(now),
            "archived": False,
            "count": 3,
        },
        "severity": severity,
        "createdAt": _iso(first),
        "updatedAt": _iso(now),
        "title": title,
        "description": description,
    }


def ec2_c2(sb: Sandbox, now: dt.datetime) -> dict[str, Any]:
    domain = "beacon.c2-drill.invalid"
    return _envelope(
        sb,
        now,
        _detail(
            sb,
            now,
            type_="Backdoor:EC2/C&CActivity.B!DNS",
            severity=8,
            title=(
                f"Command and Control server domain name queried by EC2 instance {sb.instance_id}."
            ),
            description=(
                f"EC2 instance {sb.instance_id} is querying a domain name associated with a "
                "known Command & Control server."
            ),
            resource=_instance_resource(sb),
            action={
                "actionType": "DNS_REQUEST",
                "dnsRequestAction": {"domain": domain, "protocol": "UDP", "blocked": False},
            },
        ),
    )


def ssh_brute_force(sb: Sandbox, now: dt.datetime) -> dict[str, Any]:
    return _envelope(
        sb,
        now,
        _detail(
            sb,
            now,
            type_="UnauthorizedAccess:EC2/SSHBruteForce",
            severity=8,
            title=f"{sb.instance_id} is performing SSH brute force attacks against 198.51.100.7.",
            description=(
                f"{sb.instance_id} is performing SSH brute force attacks against 198.51.100.7; "
                "the instance is likely compromised."
            ),
            resource=_instance_resource(sb),
            action={
                "actionType": "NETWORK_CONNECTION",
                "networkConnectionAction": {
                    "connectionDirection": "OUTBOUND",
                    "remoteIpDetails": {
                        "ipAddressV4": "198.51.100.7",
                        "organization": {"asn": "-1", "asnOrg": "Drill", "isp": "Drill"},
                        "country": {"countryName": "Drillland"},
                    },
                    "remotePortDetails": {"port": 22, "portName": "SSH"},
                    "localPortDetails": {"port": 50123, "portName": "Unknown"},
                    "protocol": "TCP",
                    "blocked": False,
                },
            },
        ),
    )


def iam_exfil(sb: Sandbox, now: dt.datetime) -> dict[str, Any]:
    return _envelope(
        sb,
        now,
        _detail(
            sb,
            now,
            type_="UnauthorizedAccess:IAMUser/MaliciousIPCaller.Custom",
            severity=8,
            title=f"API ListBuckets was invoked from an IP address on a custom threat list "
            f"using the access key of {sb.user_name}.",
            description=(
                f"Credentials of IAM user {sb.user_name} ({sb.access_key_id}) are being used from "
                "198.51.100.23, an address on a threat list: likely exfiltrated."
            ),
            resource={
                "resourceType": "AccessKey",
                "accessKeyDetails": {
                    "accessKeyId": sb.access_key_id,
                    "principalId": "AIDA00000000DRILL",
                    "userName": sb.user_name,
                    "userType": "IAMUser",
                },
            },
            action={
                "actionType": "AWS_API_CALL",
                "awsApiCallAction": {
                    "api": "ListBuckets",
                    "serviceName": "s3.amazonaws.com",
                    "callerType": "Remote IP",
                    "remoteIpDetails": {
                        "ipAddressV4": "198.51.100.23",
                        "organization": {"asn": -1, "asnOrg": "Drill"},
                    },
                },
            },
        ),
    )


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "ec2-c2", "EC2 instance talking to a command-and-control server", "instance", ec2_c2
        ),
        Scenario("ssh-brute-force", "EC2 instance brute-forcing SSH", "instance", ssh_brute_force),
        Scenario("iam-exfil", "IAM access key used from a malicious IP", "access_key", iam_exfil),
    )
}
