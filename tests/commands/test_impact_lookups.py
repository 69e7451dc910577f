"""Blast radius of buckets, functions, databases, clusters, users and roles, against moto.

Every lookup runs `estimate_impact` the way intake and `/incident impact` do: the incident's
resource id and resource type in, the real boto3 calls against moto, the estimate out.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from moto import mock_aws

from commands.impact import estimate_impact, refresh_impact, resolve, summary_lines
from commands.impact_lookups.functions import public_statements
from commands.incidents import get_incident, open_incident
from containment.context import ActionContext
from tests.clock import TEST_CLOCK

TAG_KEYS = {
    "name": "Name",
    "data_classification": "DataClassification",
    "criticality": "Criticality",
    "owner": "Owner",
}
AMI = "ami-12c6146b"
REGION = "us-east-1"
ACCOUNT = "123456789012"


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        yield


def deny(*operations: str) -> Any:
    """A client hook that answers AccessDenied to these operations ("s3.GetBucketPolicyStatus")."""

    def hook(client: Any) -> None:
        service = client.meta.service_model.service_name

        def refuse(model: Any, **_: Any) -> None:
            if f"{service}.{model.name}" in operations:
                raise ClientError(
                    {"Error": {"Code": "AccessDenied", "Message": "not authorized"}}, model.name
                )

        client.meta.events.register("before-call.*.*", refuse)

    return hook


def estimate(resource_id: str, resource_type: str | None, *, hooks: Any = ()) -> dict[str, Any]:
    ctx = ActionContext(now=TEST_CLOCK.now, incident_key="INC-1", client_hooks=tuple(hooks))
    return estimate_impact(
        ctx=ctx,
        resource_id=resource_id,
        resource_type=resource_type,
        region=REGION,
        tag_keys=TAG_KEYS,
    )


def tags(**kv: str) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in kv.items()]


# -- what the incident names -------------------------------------------------------------------


def test_the_id_shape_then_the_stored_type_then_an_arn_say_what_to_examine() -> None:
    # A Container finding keyed on its host instance is examined as that instance.
    assert resolve("i-0123456789abcdef0", "Container") == (
        "instance",
        "i-0123456789abcdef0",
        None,
        None,
    )
    assert resolve("logs", "S3Bucket") == ("bucket", "logs", None, None)
    assert resolve("logs", "IAMRole") == ("role", "logs", None, None)
    assert resolve("orders-sg", "RDSLimitlessDB") == ("db_shard_group", "orders-sg", None, None)
    assert resolve("prod", "EKSCluster") == ("eks_cluster", "prod", None, None)
    arn = "arn:aws:lambda:eu-west-1:210987654321:function:resize"
    assert resolve(arn, "Lambda") == ("function", "resize", "eu-west-1", "210987654321")
    assert resolve("bucket:logs", None) == ("bucket", "logs", None, None)
    assert resolve("3f2a9c", "Container") == ("container", "3f2a9c", None, None)
    assert resolve("vol-1", "EBSVolume") == (None, "vol-1", None, None)


def test_resources_without_a_lookup_say_so(aws: None) -> None:
    container = estimate("3f2a9c81d6e0", "Container")
    assert "no AWS API describes a container by its id" in container["notes"][0]
    assert container["resource"] == {
        "id": "3f2a9c81d6e0",
        "kind": "container",
        "type": "Container",
        "region": REGION,
    }
    unknown = estimate("vol-0abc", "EBSVolume")
    assert unknown["notes"][0] == "vol-0abc: no blast-radius lookup for EBSVolume resources"


# -- S3 ----------------------------------------------------------------------------------------


def test_bucket_exposure_versioning_lock_and_encryption(aws: None) -> None:
    s3 = boto3.client("s3", REGION)
    s3.create_bucket(
        Bucket="payments-exports", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"}
    )
    s3.put_bucket_tagging(
        Bucket="payments-exports",
        Tagging={"TagSet": tags(DataClassification="PII", Owner="payments", Team="x")},
    )
    s3.put_public_access_block(
        Bucket="payments-exports",
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": False,
            "RestrictPublicBuckets": False,
        },
    )
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": "arn:aws:s3:::payments-exports/*",
            }
        ],
    }
    s3.put_bucket_policy(Bucket="payments-exports", Policy=json.dumps(policy))
    s3.put_bucket_versioning(
        Bucket="payments-exports", VersioningConfiguration={"Status": "Enabled"}
    )
    s3.put_bucket_encryption(
        Bucket="payments-exports",
        ServerSideEncryptionConfiguration={
            "Rules": [
                {
                    "ApplyServerSideEncryptionByDefault": {
                        "SSEAlgorithm": "aws:kms",
                        "KMSMasterKeyID": "alias/exports",
                    }
                }
            ]
        },
    )
    impact = estimate("payments-exports", "S3Bucket")
    assert impact["tags"] == {"data_classification": "PII", "owner": "payments"}
    bucket = impact["bucket"]
    # Read where the bucket lives, not in the finding's region.
    assert bucket["region"] == "eu-west-1"
    assert bucket["policy"] == "public"
    assert bucket["public_access_block"] == {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": False,
        "RestrictPublicBuckets": False,
    }
    assert bucket["versioning"] == "Enabled"
    assert bucket["object_lock"] == {"enabled": False}
    assert bucket["encryption"]["algorithm"] == "aws:kms"
    assert impact["notes"] == []
    lines = summary_lines(impact)
    assert lines[0] == "data classification: PII, owner: payments"
    assert (
        "bucket policy PUBLIC; Block Public Access off: BlockPublicPolicy, RestrictPublicBuckets"
        in lines
    )
    assert (
        "S3 bucket in eu-west-1, versioning Enabled, Object Lock off, "
        "default encryption aws:kms (alias/exports)"
    ) in lines


def test_a_bare_bucket_and_a_locked_one(aws: None) -> None:
    s3 = boto3.client("s3", REGION)
    s3.create_bucket(Bucket="scratch-bucket")
    s3.create_bucket(Bucket="evidence-locked", ObjectLockEnabledForBucket=True)
    s3.put_object_lock_configuration(
        Bucket="evidence-locked",
        ObjectLockConfiguration={
            "ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": 30}},
        },
    )
    bare = estimate("scratch-bucket", "S3Bucket")
    assert bare["bucket"]["policy"] == "none"
    assert bare["bucket"]["public_access_block"] is None
    assert bare["bucket"]["versioning"] == "Off"
    assert bare["tags"] == {}
    lines = summary_lines(bare)
    assert "no classification tags on the resource" in lines
    assert "no bucket policy; Block Public Access not set on the bucket" in lines
    locked = estimate("evidence-locked", "S3Bucket")
    assert locked["bucket"]["object_lock"] == {"enabled": True, "mode": "COMPLIANCE", "days": 30}
    assert any("Object Lock on (COMPLIANCE, 30 days)" in line for line in summary_lines(locked))


def test_a_denied_read_is_a_note_and_the_others_still_run(aws: None) -> None:
    s3 = boto3.client("s3", REGION)
    s3.create_bucket(Bucket="payments-exports")
    s3.put_bucket_versioning(
        Bucket="payments-exports", VersioningConfiguration={"Status": "Suspended"}
    )
    impact = estimate(
        "payments-exports",
        "S3Bucket",
        hooks=[deny("s3.GetBucketPolicyStatus", "s3.GetBucketTagging")],
    )
    assert impact["notes"] == [
        "S3 bucket payments-exports tags: access denied (AccessDenied); "
        "grant the read permission to see it",
        "S3 bucket payments-exports policy status: access denied (AccessDenied); "
        "grant the read permission to see it",
    ]
    assert "policy" not in impact["bucket"] and "tags" not in impact
    assert impact["bucket"]["versioning"] == "Suspended"
    # Unread is not "no": the summary says nothing about the policy rather than "none".
    assert not any("bucket policy" in line for line in summary_lines(impact))


def test_a_missing_bucket_is_a_note(aws: None) -> None:
    impact = estimate("gone-bucket", "S3Bucket")
    assert impact["notes"] == [
        "S3 bucket gone-bucket not found (deleted, or in another account or region)"
    ]
    assert "bucket" not in impact


# -- Lambda ------------------------------------------------------------------------------------


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("handler.py", "def handle(event, context):\n    return 1\n")
    return buf.getvalue()


@pytest.fixture
def function(aws: None) -> dict[str, str]:
    role = boto3.client("iam").create_role(RoleName="resize-exec", AssumeRolePolicyDocument="{}")
    ec2 = boto3.client("ec2", REGION)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="fn", Description="fn", VpcId=vpc)["GroupId"]
    lam = boto3.client("lambda", REGION)
    arn = lam.create_function(
        FunctionName="resize",
        Runtime="python3.12",
        Role=role["Role"]["Arn"],
        Handler="handler.handle",
        Code={"ZipFile": _zip()},
        Tags={"Owner": "media", "Criticality": "high"},
        VpcConfig={"SubnetIds": [subnet], "SecurityGroupIds": [group]},
    )["FunctionArn"]
    return {"arn": arn, "subnet": subnet, "group": group}


def test_function_role_vpc_and_public_exposure(function: dict[str, str]) -> None:
    lam = boto3.client("lambda", REGION)
    lam.add_permission(
        FunctionName="resize",
        StatementId="anyone",
        Action="lambda:InvokeFunction",
        Principal="*",
    )
    lam.add_permission(
        FunctionName="resize",
        StatementId="uploads",
        Action="lambda:InvokeFunction",
        Principal="s3.amazonaws.com",
        SourceArn="arn:aws:s3:::uploads",
    )
    lam.create_function_url_config(FunctionName="resize", AuthType="NONE")
    impact = estimate("resize", "Lambda")
    assert impact["tags"] == {"criticality": "high", "owner": "media"}
    fn = impact["function"]
    assert fn["runtime"] == "python3.12"
    assert fn["role"] == f"arn:aws:iam::{ACCOUNT}:role/resize-exec"
    assert fn["vpc"]["subnets"] == [function["subnet"]]
    assert fn["vpc"]["security_groups"] == [function["group"]]
    assert fn["public_statements"] == ["anyone"]  # the S3-only statement is not public
    assert fn["url_auth"] == "NONE"
    assert fn["last_modified"]
    lines = summary_lines(impact)
    assert any(line.startswith("Lambda python3.12, execution role resize-exec") for line in lines)
    assert "function URL PUBLIC (auth NONE); resource policy allows anyone: anyone" in lines
    assert any(line.startswith("in VPC ") and function["group"] in line for line in lines)


def test_a_function_named_by_arn_without_url_or_policy(function: dict[str, str]) -> None:
    impact = estimate(function["arn"], "Lambda")
    assert impact["resource"]["kind"] == "function"
    assert impact["function"]["public_statements"] == []
    assert impact["function"]["url_auth"] is None
    assert "no function URL; no public resource-policy statements" in summary_lines(impact)


def test_a_function_that_cannot_be_read_is_a_note(function: dict[str, str]) -> None:
    impact = estimate("resize", "Lambda", hooks=[deny("lambda.GetFunction")])
    assert "function" not in impact
    assert impact["notes"] == [
        "Lambda function resize: access denied (AccessDenied); grant the read permission to see it"
    ]
    missing = estimate("thumbnail", "Lambda")
    assert missing["notes"] == [
        "Lambda function thumbnail not found (deleted, or in another account or region)"
    ]


def test_public_statements_ignore_conditions_that_tie_them_to_a_source() -> None:
    policy = {
        "Statement": [
            {"Sid": "a", "Effect": "Allow", "Principal": {"AWS": "*"}},
            {
                "Sid": "org",
                "Effect": "Allow",
                "Principal": "*",
                "Condition": {"StringEquals": {"aws:PrincipalOrgID": "o-1"}},
            },
            {
                "Sid": "url",
                "Effect": "Allow",
                "Principal": "*",
                "Condition": {"StringEquals": {"lambda:FunctionUrlAuthType": "NONE"}},
            },
            {"Sid": "deny", "Effect": "Deny", "Principal": "*"},
            {"Effect": "Allow", "Principal": {"AWS": ["arn:aws:iam::1:root", "*"]}},
        ]
    }
    assert public_statements(json.dumps(policy)) == ["a", "url", "statement 5"]


# -- RDS ---------------------------------------------------------------------------------------


def test_db_instance_exposure_and_its_cluster(aws: None) -> None:
    rds = boto3.client("rds", REGION)
    ec2 = boto3.client("ec2", REGION)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    group = ec2.create_security_group(GroupName="db", Description="db", VpcId=vpc)["GroupId"]
    rds.create_db_instance(
        DBInstanceIdentifier="orders-db",
        Engine="postgres",
        DBInstanceClass="db.m5.large",
        AllocatedStorage=20,
        MasterUsername="admin",
        MasterUserPassword="password123",
        PubliclyAccessible=True,
        StorageEncrypted=True,
        MultiAZ=True,
        VpcSecurityGroupIds=[group],
        Tags=tags(DataClassification="PCI", Owner="orders"),
    )
    impact = estimate("orders-db", "RDSDBInstance")
    assert impact["tags"] == {"data_classification": "PCI", "owner": "orders"}
    db = impact["database"]
    assert db["engine"] == "postgres"
    assert db["publicly_accessible"] is True and db["encrypted"] is True and db["multi_az"]
    assert db["security_groups"] == [group]
    assert db["cluster"] is None
    lines = summary_lines(impact)
    assert "publicly accessible: yes, encrypted: yes, multi-AZ: yes" in lines
    assert any("not in a cluster" in line for line in lines)

    rds.create_db_cluster(
        DBClusterIdentifier="shop",
        Engine="aurora-postgresql",
        MasterUsername="admin",
        MasterUserPassword="password123",
    )
    for name in ("shop-1", "shop-2"):
        rds.create_db_instance(
            DBInstanceIdentifier=name,
            DBClusterIdentifier="shop",
            Engine="aurora-postgresql",
            DBInstanceClass="db.r5.large",
        )
    member = estimate("shop-2", "RDSDBInstance")
    assert member["database"]["cluster"]["id"] == "shop"
    assert sorted(member["database"]["cluster"]["members"]) == ["shop-1", "shop-2"]
    assert any("cluster shop (2 members)" in line for line in summary_lines(member))


def test_limitless_shard_group_by_id_or_by_its_cluster(aws: None) -> None:
    rds = boto3.client("rds", REGION)
    rds.create_db_cluster(
        DBClusterIdentifier="ledger",
        Engine="aurora-postgresql",
        EngineVersion="16.4-limitless",
        ClusterScalabilityType="limitless",
        MasterUsername="admin",
        MasterUserPassword="password123",
    )
    rds.create_db_shard_group(
        DBShardGroupIdentifier="ledger-shards",
        DBClusterIdentifier="ledger",
        MaxACU=768,
        PubliclyAccessible=False,
    )
    by_id = estimate("ledger-shards", "RDSLimitlessDB")
    shard = by_id["shard_group"]
    assert shard["id"] == "ledger-shards" and shard["max_acu"] == 768
    assert shard["publicly_accessible"] is False
    assert shard["cluster"]["id"] == "ledger"
    # GuardDuty names the cluster when the finding carries no shard group.
    by_cluster = estimate("ledger", "RDSLimitlessDB")
    assert by_cluster["shard_group"]["id"] == "ledger-shards"
    lines = summary_lines(by_id)
    assert any(line.startswith("Aurora Limitless shard group ledger-shards") for line in lines)
    assert "publicly accessible: no" in lines
    missing = estimate("nothing-here", "RDSLimitlessDB")
    assert missing["notes"] == [
        "Aurora Limitless shard group nothing-here not found "
        "(deleted, or in another account or region)"
    ]


# -- EKS and ECS -------------------------------------------------------------------------------


def test_eks_cluster_endpoint_and_node_groups(aws: None) -> None:
    role = boto3.client("iam").create_role(RoleName="eks", AssumeRolePolicyDocument="{}")
    ec2 = boto3.client("ec2", REGION)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    eks = boto3.client("eks", REGION)
    eks.create_cluster(
        name="prod",
        version="1.29",
        roleArn=role["Role"]["Arn"],
        resourcesVpcConfig={
            "subnetIds": [subnet],
            "endpointPublicAccess": True,
            "publicAccessCidrs": ["0.0.0.0/0"],
        },
        tags={"Owner": "platform", "Criticality": "high"},
    )
    for name in ("system", "workers"):
        eks.create_nodegroup(
            clusterName="prod", nodegroupName=name, subnets=[subnet], nodeRole=role["Role"]["Arn"]
        )
    impact = estimate("prod", "EKSCluster")
    assert impact["tags"] == {"criticality": "high", "owner": "platform"}
    cluster = impact["eks_cluster"]
    assert cluster["version"] == "1.29" and cluster["endpoint_public"] is True
    assert cluster["public_cidrs"] == ["0.0.0.0/0"]
    assert cluster["nodegroup_count"] == 2 and cluster["nodegroups"] == ["system", "workers"]
    lines = summary_lines(impact)
    assert "EKS 1.29 (ACTIVE), API endpoint PUBLIC (open to 0.0.0.0/0)" in lines
    assert "2 node groups: system, workers" in lines


def test_ecs_cluster_tags_and_status(aws: None) -> None:
    ecs = boto3.client("ecs", REGION)
    ecs.create_cluster(clusterName="web", tags=[{"key": "Owner", "value": "storefront"}])
    impact = estimate("web", "ECSCluster")
    assert impact["tags"] == {"owner": "storefront"}
    assert impact["ecs_cluster"]["status"] == "ACTIVE"
    assert impact["ecs_cluster"]["running_tasks"] == 0
    missing = estimate("gone", "ECSCluster")
    assert missing["notes"] == [
        "ECS cluster gone not found (deleted, or in another account or region)"
    ]
    assert estimate("prod", "EKSCluster")["notes"] == [
        "EKS cluster prod not found (deleted, or in another account or region)"
    ]


def stub(service: str, method: str, response: dict[str, Any], params: dict[str, Any]) -> Any:
    """A client hook that answers one call of `service` from a Stubber (moto lacks the answer)."""

    def hook(client: Any) -> None:
        if client.meta.service_model.service_name != service:
            return
        stubber = Stubber(client)
        stubber.add_response(method, response, params)
        stubber.activate()

    return hook


def test_ecs_cluster_counts_services_and_tasks() -> None:
    # moto leaves activeServicesCount at 0; this is DescribeClusters' documented answer.
    arn = f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/web"
    answer = {
        "clusters": [
            {
                "clusterArn": arn,
                "clusterName": "web",
                "status": "ACTIVE",
                "registeredContainerInstancesCount": 4,
                "runningTasksCount": 12,
                "pendingTasksCount": 1,
                "activeServicesCount": 3,
                "statistics": [],
                "tags": [{"key": "Criticality", "value": "high"}],
                "settings": [{"name": "containerInsights", "value": "enabled"}],
                "capacityProviders": ["FARGATE"],
                "defaultCapacityProviderStrategy": [],
            }
        ],
        "failures": [],
    }
    hooks = [stub("ecs", "describe_clusters", answer, {"clusters": ["web"], "include": ["TAGS"]})]
    with mock_aws():  # the account id (STS) and Organizations still come from moto
        impact = estimate("web", "ECSCluster", hooks=hooks)
    assert impact["tags"] == {"criticality": "high"}
    assert impact["ecs_cluster"] == {
        "status": "ACTIVE",
        "active_services": 3,
        "running_tasks": 12,
        "pending_tasks": 1,
        "container_instances": 4,
    }
    assert (
        "ECS cluster ACTIVE: 3 active services, 12 running tasks (1 pending), 4 container instances"
    ) in summary_lines(impact)


# -- IAM ---------------------------------------------------------------------------------------


def test_iam_user_policies_groups_and_keys(aws: None) -> None:
    iam = boto3.client("iam")
    iam.create_user(UserName="deploy-bot", Tags=tags(Owner="platform"))
    iam.create_group(GroupName="deployers")
    iam.add_user_to_group(GroupName="deployers", UserName="deploy-bot")
    policy = iam.create_policy(
        PolicyName="deploy",
        PolicyDocument='{"Version":"2012-10-17",'
        '"Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}',
    )
    iam.attach_user_policy(UserName="deploy-bot", PolicyArn=policy["Policy"]["Arn"])
    old = iam.create_access_key(UserName="deploy-bot")["AccessKey"]["AccessKeyId"]
    iam.create_access_key(UserName="deploy-bot")
    iam.update_access_key(UserName="deploy-bot", AccessKeyId=old, Status="Inactive")
    impact = estimate("deploy-bot", "IAMUser")
    assert impact["user"] == "deploy-bot" and impact["tags"] == {"owner": "platform"}
    assert impact["attached_policies"] == ["deploy"] and impact["groups"] == ["deployers"]
    assert sorted(k["status"] for k in impact["access_keys"]) == ["Active", "Inactive"]
    lines = summary_lines(impact)
    assert "IAM user deploy-bot (deploy)" in lines
    assert "groups: deployers" in lines and "2 access keys (1 active)" in lines


def test_iam_role_and_the_instances_that_carry_it(aws: None) -> None:
    iam = boto3.client("iam")
    iam.create_role(
        RoleName="app", AssumeRolePolicyDocument="{}", Tags=tags(DataClassification="PII")
    )
    readonly = iam.create_policy(
        PolicyName="AppReadOnly",
        PolicyDocument='{"Version":"2012-10-17",'
        '"Statement":[{"Effect":"Allow","Action":"s3:Get*","Resource":"*"}]}',
    )
    iam.attach_role_policy(RoleName="app", PolicyArn=readonly["Policy"]["Arn"])
    profile = iam.create_instance_profile(InstanceProfileName="app-profile")["InstanceProfile"]
    iam.add_role_to_instance_profile(InstanceProfileName="app-profile", RoleName="app")
    iam.create_instance_profile(InstanceProfileName="other-profile")
    ec2 = boto3.client("ec2", REGION)

    def run(profile_arn: str | None, **kv: str) -> str:
        extra: dict[str, Any] = {}
        if profile_arn:
            extra["IamInstanceProfile"] = {"Arn": profile_arn}
        if kv:
            extra["TagSpecifications"] = [{"ResourceType": "instance", "Tags": tags(**kv)}]
        return ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=1, **extra)["Instances"][0][
            "InstanceId"
        ]

    plain = run(profile["Arn"])
    tagged = run(profile["Arn"], Name="api-1", DataClassification="PII")
    run(None, Name="unrelated")
    impact = estimate(f"arn:aws:iam::{ACCOUNT}:role/app", "IAMRole")
    assert impact["role"] == "app" and impact["tags"] == {"data_classification": "PII"}
    assert impact["attached_policies"] == ["AppReadOnly"]
    assert impact["instance_profiles"] == ["app-profile"]
    used = impact["role_instances"]
    assert used["count"] == 2 and used["region"] == REGION
    # The tagged instance sorts first.
    assert [i["id"] for i in used["instances"]] == [tagged, plain]
    assert used["instances"][0]["tags"] == {"name": "api-1", "data_classification": "PII"}
    lines = summary_lines(impact)
    assert "IAM role app (AppReadOnly)" in lines
    assert (
        f"instance profiles: app-profile, used by 2 EC2 instances in {REGION} (api-1, {plain})"
        in lines
    )
    assert estimate("ghost", "IAMRole")["notes"] == [
        "IAM role ghost not found (deleted, or in another account or region)"
    ]


# -- through the incident ----------------------------------------------------------------------


def test_refresh_reads_the_incidents_resource_type(database: Any, aws: None) -> None:
    boto3.client("s3", REGION).create_bucket(Bucket="web")
    iam = boto3.client("iam")
    iam.create_role(RoleName="web", AssumeRolePolicyDocument="{}")
    with database.session() as s:
        # A bucket and a role may share a name: the stored type decides.
        open_incident(
            session=s, title="b", created_by="U1", resource_id="web", resource_type="S3Bucket"
        )
        open_incident(
            session=s, title="r", created_by="U1", resource_id="web", resource_type="IAMRole"
        )
    ctx = ActionContext(now=TEST_CLOCK.now, incident_key="INC-1")
    bucket = refresh_impact(
        db=database, incident_key="INC-1", ctx=ctx, tag_keys=TAG_KEYS, actor="U1"
    )
    role = refresh_impact(db=database, incident_key="INC-2", ctx=ctx, tag_keys=TAG_KEYS, actor="U1")
    assert bucket["resource"]["kind"] == "bucket" and bucket["bucket"]["policy"] == "none"
    assert role["resource"]["kind"] == "role" and role["instance_profiles"] == []
    with database.read_session() as s:
        assert get_incident(session=s, key="INC-1").facts["impact"]["bucket"]["versioning"] == "Off"
