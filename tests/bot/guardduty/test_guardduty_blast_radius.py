"""A finding for a bucket or a database opens an incident whose card shows its blast radius:
the finding over real HTTP, moto for AWS, the card and the `/incident impact` answer recorded by
the fake Slack."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import boto3
from sqlalchemy import select

from bot.investigation_work import ImpactSweeper
from storage.models import Incident
from tests.bot.guardduty.conftest import GuardDutyBot
from tests.bot.guardduty.test_guardduty_route import event, section_texts
from tests.commands.findings.guardduty_fixtures import load_json

Start = Callable[..., GuardDutyBot]
BUCKET = "payments-exports"


def s3_finding(bucket: str) -> dict[str, Any]:
    """The automated-response S3 sample, naming a bucket that exists (the sample's is not a
    valid bucket name), current and severe enough to post."""
    detail = copy.deepcopy(load_json("automated-response-sample__guardduty_s3_event.json"))
    details = detail["resource"]["s3BucketDetails"][0]
    details.update(name=bucket, arn=f"arn:aws:s3:::{bucket}")
    detail["severity"] = 8
    detail["service"]["archived"] = False
    return detail


def rds_finding(db: str) -> dict[str, Any]:
    """The same sample turned into an RDS finding (GuardDuty RDS Protection's resource)."""
    detail = s3_finding("unused-bucket")
    detail["id"] = "rds-finding-1"
    detail["type"] = "CredentialAccess:RDS/AnomalousBehavior.SuccessfulLogin"
    detail["resource"] = {
        "resourceType": "RDSDBInstance",
        "rdsDbInstanceDetails": {
            "dbInstanceIdentifier": db,
            "engine": "postgres",
            "engineVersion": "15.4",
            "dbClusterIdentifier": None,
            "dbInstanceArn": f"arn:aws:rds:us-east-1:123456789012:db:{db}",
            "tags": [],
        },
    }
    return detail


def exposed_bucket() -> None:
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_tagging(
        Bucket=BUCKET,
        Tagging={
            "TagSet": [
                {"Key": "DataClassification", "Value": "PII"},
                {"Key": "Owner", "Value": "payments"},
            ]
        },
    )
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{BUCKET}/*",
            }
        ],
    }
    s3.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(policy))
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})


def test_a_bucket_finding_card_shows_the_buckets_blast_radius(guardduty_bot: Start) -> None:
    exposed_bucket()
    gd = guardduty_bot()
    response = gd.post(event(s3_finding(BUCKET)))
    assert response.status_code == 200, response.text
    assert response.json()["opened"] == ["INC-1"]
    gd.settle()
    with gd.bot.session() as session:
        incident = session.scalars(select(Incident)).one()
        assert (incident.resource_id, incident.resource_type) == (BUCKET, "S3Bucket")
        channel, ts = incident.channel_id, incident.card_ts
    # The intake sweeper's pass (stopped in this harness so it runs exactly once, here).
    assert ImpactSweeper(gd.bot.runtime, every=60).sweep() == ["INC-1"]
    gd.settle()
    card = section_texts(gd.bot.slack.channels[channel].messages[ts]["blocks"])
    assert "\nBlast radius\n" in card  # the bold title of the rich text section
    assert "data classification: PII, owner: payments" in card
    assert "bucket policy PUBLIC; Block Public Access not set on the bucket" in card
    assert "S3 bucket in us-east-1, versioning Enabled, Object Lock off" in card
    # No "only instances and access keys" excuse any more.
    assert "only EC2 instances" not in card


def test_impact_command_on_a_database_finding(guardduty_bot: Start) -> None:
    rds = boto3.client("rds", region_name="us-east-1")
    rds.create_db_instance(
        DBInstanceIdentifier="orders-db",
        Engine="postgres",
        DBInstanceClass="db.m5.large",
        AllocatedStorage=20,
        MasterUsername="admin",
        MasterUserPassword="password123",
        PubliclyAccessible=True,
        StorageEncrypted=False,
        Tags=[{"Key": "Criticality", "Value": "tier-1"}],
    )
    gd = guardduty_bot()
    assert gd.post(event(rds_finding("orders-db"))).json()["opened"] == ["INC-1"]
    gd.settle()
    response = gd.bot.command(
        "impact INC-1",
        user_id="U0RESPONDER",
        channel_id="C0INCIDENT",
        response_url=gd.bot.slack.response_url("impact"),
    )
    assert response.status_code == 200, response.text
    answer = gd.bot.slack.wait_for(
        "response_url",
        lambda c: c.path.endswith("/impact") and "Blast radius of INC-1" in json.dumps(c.args),
        timeout=20,
    )
    text = section_texts(answer.args["blocks"])
    assert "criticality: tier-1" in text
    assert "RDS postgres" in text and "not in a cluster" in text
    assert "publicly accessible: yes, encrypted: no, multi-AZ: no" in text
    gd.bot.idle()
    gd.settle()
    with gd.bot.session() as session:
        incident = session.scalars(select(Incident)).one()
        channel, ts = incident.channel_id, incident.card_ts
    card = section_texts(gd.bot.slack.channels[channel].messages[ts]["blocks"])
    assert "publicly accessible: yes, encrypted: no, multi-AZ: no" in card
