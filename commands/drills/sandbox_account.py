"""`/incident drill`: rehearse a scenario against a sandbox account's real resources.

The scenario's finding is built from the sandbox resources named in `drills:` and fed
through the real intake, marked as a drill. Where GuardDuty is enabled, a sample finding
of the same type is also requested with CreateSampleFindings, so the EventBridge delivery
path is exercised too (it arrives labelled SAMPLE and proposes no containment).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from commands.drills.sandbox import Sandbox
from commands.drills.scenarios import SCENARIOS, Scenario
from commands.errors import UserError
from containment.capabilities import Permissions

DRILL_MARK = '{"drill":true}'
# What /incident drill needs in the sandbox account beyond the containment actions'
# (GetCallerIdentity needs no permission).
PERMISSIONS = Permissions(
    "drills",
    "contain",
    ("guardduty:ListDetectors", "guardduty:CreateSampleFindings", "ec2:DescribeInstances"),
)


def pick_scenario(name: str | None) -> Scenario:
    name = (name or "ec2-c2").strip().lower()
    scenario = SCENARIOS.get(name)
    if scenario is None:
        raise UserError(
            f"There is no drill {{name!r}}: choose one of {', '.join(SCENARIOS)}.", name=name
        )
    return scenario


@dataclass(frozen=True)
class DrillTarget:
    sandbox: Sandbox
    scenario: Scenario


def sandbox_from_account(
    *, scenario: Scenario, config: Any, ec2: Any, sts: Any, region: str
) -> Sandbox:
    """Describe the configured sandbox resources into what the scenario finding names."""
    drills = config.drills
    account_id = sts.get_caller_identity()["Account"]
    if scenario.target_kind == "access_key":
        if not (drills.access_key_id and drills.user_name):
            raise UserError(
                "Set drills.access_key_id and drills.user_name to a sandbox IAM user's key in "
                "incident-bot.yml, or run `incident-bot drill --scenario iam-exfil` offline."
            )
        return Sandbox(
            region=region,
            account_id=account_id,
            vpc_id="",
            subnet_id="",
            web_group_id="",
            instance_id="",
            volume_ids=[],
            eni_ids=[],
            asg_name="",
            target_group_arn="",
            instance_profile_name="",
            role_name="",
            user_name=drills.user_name,
            access_key_id=drills.access_key_id,
            tags={},
        )
    if scenario.target_kind not in ("instance", "access_key"):
        raise UserError(
            f"The {scenario.name} drill runs offline only: "
            f"`incident-bot drill --scenario {scenario.name}`."
        )
    if not drills.instance_id:
        raise UserError(
            "Set drills.instance_id to a sandbox instance in incident-bot.yml, or run "
            f"`incident-bot drill --scenario {scenario.name}` offline."
        )
    try:
        reservations = ec2.describe_instances(InstanceIds=[drills.instance_id])["Reservations"]
    except ClientError as exc:
        raise UserError(
            "The sandbox instance {instance_id} can't be read in {region} "
            "({code}): check drills.instance_id and drills.region.",
            instance_id=drills.instance_id,
            region=region,
            code=exc.response["Error"]["Code"],
        ) from None
    inst = reservations[0]["Instances"][0]
    enis = inst.get("NetworkInterfaces", [])
    groups = [g["GroupId"] for n in enis for g in n.get("Groups", [])]
    profile_arn = (inst.get("IamInstanceProfile") or {}).get("Arn", "")
    volumes = [m["Ebs"]["VolumeId"] for m in inst.get("BlockDeviceMappings", [])]
    eni_ids = [n["NetworkInterfaceId"] for n in enis]
    tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
    # A sandbox account has one drill host: it stands in for the web and the batch host.
    return Sandbox(
        region=region,
        account_id=account_id,
        vpc_id=inst.get("VpcId", ""),
        subnet_id=inst.get("SubnetId", ""),
        web_group_id=groups[0] if groups else "",
        instance_id=drills.instance_id,
        volume_ids=volumes,
        eni_ids=eni_ids,
        asg_name="",
        target_group_arn="",
        instance_profile_name=profile_arn.rsplit("/", 1)[-1],
        role_name="",
        user_name="",
        access_key_id="",
        tags=tags,
        batch_instance_id=drills.instance_id,
        batch_volume_ids=volumes,
        batch_eni_ids=eni_ids,
        batch_group_id=groups[0] if groups else "",
        batch_tags=tags,
    )


def request_sample_finding(*, guardduty: Any, finding_type: str) -> str:
    """Ask GuardDuty for a sample of the scenario's finding type; say what happened."""
    try:
        detectors = guardduty.list_detectors().get("DetectorIds", [])
        if not detectors:
            return "GuardDuty is not enabled here: no sample finding requested."
        guardduty.create_sample_findings(DetectorId=detectors[0], FindingTypes=[finding_type])
    except (ClientError, BotoCoreError) as exc:
        code = exc.response["Error"]["Code"] if isinstance(exc, ClientError) else type(exc).__name__
        return f"GuardDuty sample finding not requested ({code})."
    return f"GuardDuty sample finding {finding_type} requested on detector {detectors[0]}."


def drill_event(*, scenario: Scenario, sandbox: Sandbox, now: dt.datetime) -> dict[str, Any]:
    event = scenario.finding(sandbox, now)
    event["detail"]["title"] = f"[DRILL] {event['detail']['title']}"
    return event
