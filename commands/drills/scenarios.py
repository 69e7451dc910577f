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
    target_kind: str  # instance | access_key | role | bucket | function
    finding: Callable[[Sandbox, dt.datetime], dict[str, Any]]
    # Personal data is at stake: the drill rehearses the regulator clock. Otherwise it checks
    # that no clock started (the subject carries no PII tag and nobody declared any).
    personal_data: bool = True
    # The host the finding names (instance scenarios): the PII web host unless said otherwise.
    host: str = "web"


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


def host_of(sb: Sandbox, host: str) -> tuple[str, list[str], list[str], str, dict[str, str]]:
    """(instance, volumes, interfaces, security group, tags) of the web or the batch host."""
    if host == "batch":
        return (
            sb.batch_instance_id,
            sb.batch_volume_ids,
            sb.batch_eni_ids,
            sb.batch_group_id,
            sb.batch_tags,
        )
    return sb.instance_id, sb.volume_ids, sb.eni_ids, sb.web_group_id, sb.tags


def _instance_resource(sb: Sandbox, host: str = "web") -> dict[str, Any]:
    instance_id, _, eni_ids, group_id, tags = host_of(sb, host)
    profile = (
        {
            "arn": f"arn:aws:iam::{sb.account_id}:instance-profile/{sb.instance_profile_name}",
            "id": "AIPA00000000DRILL",
        }
        if host == "web"
        else None
    )
    return {
        "resourceType": "Instance",
        "instanceDetails": {
            "instanceId": instance_id,
            "instanceType": "t3.medium" if host == "web" else "c6i.large",
            "instanceState": "running",
            "availabilityZone": f"{sb.region}a",
            **({"iamInstanceProfile": profile} if profile else {}),
            "networkInterfaces": [
                {
                    "networkInterfaceId": eni,
                    "subnetId": sb.subnet_id,
                    "vpcId": sb.vpc_id,
                    "privateIpAddress": f"10.20.1.{10 + i}",
                    "publicIp": "203.0.113.10" if i == 0 else None,
                    "securityGroups": [{"groupId": group_id, "groupName": tags.get("Name", "")}],
                }
                for i, eni in enumerate(eni_ids)
            ],
            "tags": [{"key": k, "value": v} for k, v in tags.items()],
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
    host = sb.batch_instance_id
    return _envelope(
        sb,
        now,
        _detail(
            sb,
            now,
            type_="UnauthorizedAccess:EC2/SSHBruteForce",
            severity=8,
            title=f"{host} is performing SSH brute force attacks against 198.51.100.7.",
            description=(
                f"{host} is performing SSH brute force attacks against 198.51.100.7; "
                "the instance is likely compromised."
            ),
            resource=_instance_resource(sb, "batch"),
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


def _remote_caller(api: str, service: str, ip: str) -> dict[str, Any]:
    return {
        "actionType": "AWS_API_CALL",
        "awsApiCallAction": {
            "api": api,
            "serviceName": service,
            "callerType": "Remote IP",
            "remoteIpDetails": {
                "ipAddressV4": ip,
                "organization": {"asn": -1, "asnOrg": "Drill"},
            },
        },
    }


def role_outside(sb: Sandbox, now: dt.datetime) -> dict[str, Any]:
    """Temporary credentials of the application role, used from an address outside AWS."""
    return _envelope(
        sb,
        now,
        _detail(
            sb,
            now,
            type_="UnauthorizedAccess:IAMUser/InstanceCredentialExfiltration.OutsideAWS",
            severity=8,
            title=(
                f"Credentials for the role {sb.app_role_name} were used from an external IP "
                "address."
            ),
            description=(
                f"Temporary credentials of {sb.app_role_name} were used from 198.51.100.44, "
                "outside AWS: they were likely exfiltrated."
            ),
            resource={
                "resourceType": "AccessKey",
                "accessKeyDetails": {
                    "accessKeyId": "ASIA00000000DRILL",
                    "principalId": f"AROA00000000DRILL:{sb.app_role_name}-session",
                    "userName": sb.app_role_name,
                    "userType": "AssumedRole",
                },
            },
            action=_remote_caller("ListObjects", "s3.amazonaws.com", "198.51.100.44"),
        ),
    )


def s3_public(sb: Sandbox, now: dt.datetime) -> dict[str, Any]:
    """A bucket made readable by anyone, and an unknown caller reading it."""
    return _envelope(
        sb,
        now,
        _detail(
            sb,
            now,
            type_="Policy:S3/BucketAnonymousAccessGranted",
            severity=8,
            title=f"Amazon S3 bucket {sb.bucket_name} allows anonymous access.",
            description=(
                f"The bucket policy of {sb.bucket_name} was changed by {sb.user_name} to let "
                "anyone on the internet read its objects."
            ),
            resource={
                "resourceType": "S3Bucket",
                "accessKeyDetails": {
                    "accessKeyId": sb.access_key_id,
                    "principalId": "AIDA00000000DRILL",
                    "userName": sb.user_name,
                    "userType": "IAMUser",
                },
                "s3BucketDetails": [
                    {
                        "arn": f"arn:aws:s3:::{sb.bucket_name}",
                        "name": sb.bucket_name,
                        "type": "Destination",
                        "publicAccess": {"effectivePermission": "PUBLIC"},
                    }
                ],
            },
            action=_remote_caller("PutBucketPolicy", "s3.amazonaws.com", "198.51.100.61"),
        ),
    )


def lambda_c2(sb: Sandbox, now: dt.datetime) -> dict[str, Any]:
    """A function (invocable by anyone through its URL) talking to a command-and-control host."""
    arn = f"arn:aws:lambda:{sb.region}:{sb.account_id}:function:{sb.function_name}"
    return _envelope(
        sb,
        now,
        _detail(
            sb,
            now,
            type_="Backdoor:Lambda/C&CActivity.B",
            severity=8,
            title=f"Lambda function {sb.function_name} is querying a command and control server.",
            description=(
                f"Lambda function {sb.function_name} connected to 198.51.100.99, a known command "
                "and control server."
            ),
            resource={
                "resourceType": "Lambda",
                "lambdaDetails": {
                    "functionArn": arn,
                    "functionName": sb.function_name,
                    "functionVersion": "$LATEST",
                    "role": f"arn:aws:iam::{sb.account_id}:role/{sb.app_role_name}",
                },
            },
            action={
                "actionType": "NETWORK_CONNECTION",
                "networkConnectionAction": {
                    "connectionDirection": "OUTBOUND",
                    "remoteIpDetails": {"ipAddressV4": "198.51.100.99"},
                    "remotePortDetails": {"port": 443, "portName": "HTTPS"},
                    "protocol": "TCP",
                    "blocked": False,
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
        Scenario(
            "ssh-brute-force",
            "A batch host (no personal data) brute-forcing SSH",
            "instance",
            ssh_brute_force,
            personal_data=False,
            host="batch",
        ),
        Scenario("iam-exfil", "IAM access key used from a malicious IP", "access_key", iam_exfil),
        Scenario(
            "iam-role-outside",
            "An application role's temporary credentials used from outside AWS",
            "role",
            role_outside,
            personal_data=False,
        ),
        Scenario(
            "s3-public",
            "An export bucket with customer orders made readable by anyone",
            "bucket",
            s3_public,
        ),
        Scenario(
            "lambda-c2",
            "A public Lambda function talking to a command-and-control server",
            "function",
            lambda_c2,
            personal_data=False,
        ),
    )
}
