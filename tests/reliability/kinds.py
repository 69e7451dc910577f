"""The resources of the newer target kinds, added to a fresh reliability world on demand.

Each kind gets something for every one of its actions to change (a key to deactivate, a
console password, a public Lambda permission, a publicly accessible database, ...), so a
fault can land on a real mutating call. Only the kind under test is built: an RDS instance
and a Lambda function cost more than the rest of the world.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import boto3

from containment.registry import Action
from containment.targets import Target
from tests.containment.lambda_code import zipped_handler
from tests.containment.world import REGION, World

ACCOUNT = "123456789012"  # moto's
EXPOSED_BUCKET = "exposed-data"
FUNCTION = "thumbnailer"
DB = "orders-db"
USER_POLICY = "ci-deploy"
ROLE_POLICY = "app-read"
ALLOW_READ = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}],
    }
)
PUBLIC_READ = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "PublicRead",
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{EXPOSED_BUCKET}/*",
            }
        ],
    }
)
PARTIAL_BLOCK = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": False,
    "BlockPublicPolicy": False,
    "RestrictPublicBuckets": False,
}
# Which kind an action is tested on: its first (the evidence step's first is the instance).
KINDS = ("instance", "access_key", "user", "role", "bucket", "function", "db_instance")


def kind_of(action: Action) -> str:
    return next(k for k in KINDS if k in action.kinds)


def target_for(kind: str, world: World) -> Target:
    ids = {
        "instance": world.instance_id,
        "access_key": world.access_key_id,
        "user": world.user_name,
        "role": world.role_name,
        "bucket": EXPOSED_BUCKET,
        "function": FUNCTION,
        "db_instance": DB,
    }
    principals: tuple[str, ...] = ()
    if kind == "bucket":  # the finding names the user whose key was stolen
        principals = (f"arn:aws:iam::{ACCOUNT}:user/{world.user_name}",)
    return Target(kind=kind, resource_id=ids[kind], region=REGION, principals=principals)


def build_kind(session: boto3.Session, world: World, kind: str) -> None:
    """Add `kind`'s resources to `world` (the instance and access-key worlds have theirs)."""
    world.extra["kind"] = kind
    builder = _BUILDERS.get(kind)
    if builder is not None:
        builder(session, world)


def _user(session: boto3.Session, world: World) -> None:
    iam = session.client("iam", region_name=REGION)
    iam.create_login_profile(UserName=world.user_name, Password="Initial-pw-123!")
    iam.put_user_policy(UserName=world.user_name, PolicyName=USER_POLICY, PolicyDocument=ALLOW_READ)
    second = iam.create_access_key(UserName=world.user_name)  # two keys, both to deactivate
    world.extra["renames"] = {second["AccessKey"]["AccessKeyId"]: "access-key-2"}


def _role(session: boto3.Session, world: World) -> None:
    iam = session.client("iam", region_name=REGION)
    iam.put_role_policy(RoleName=world.role_name, PolicyName=ROLE_POLICY, PolicyDocument=ALLOW_READ)


def _bucket(session: boto3.Session, world: World) -> None:
    s3 = session.client("s3", region_name=REGION)
    s3.create_bucket(Bucket=EXPOSED_BUCKET)
    s3.put_bucket_policy(Bucket=EXPOSED_BUCKET, Policy=PUBLIC_READ)
    s3.put_public_access_block(Bucket=EXPOSED_BUCKET, PublicAccessBlockConfiguration=PARTIAL_BLOCK)


def _function(session: boto3.Session, world: World) -> None:
    fn = session.client("lambda", region_name=REGION)
    role = f"arn:aws:iam::{ACCOUNT}:role/{world.role_name}"
    fn.create_function(
        FunctionName=FUNCTION,
        Runtime="python3.11",
        Role=role,
        Handler="handler.handle",
        Code={"ZipFile": zipped_handler()},
    )
    fn.put_function_concurrency(FunctionName=FUNCTION, ReservedConcurrentExecutions=5)
    for sid in ("public", "public-url"):  # two statements to remove: a retry may skip one
        extra: dict[str, Any] = {}
        action = "lambda:InvokeFunction"
        if sid == "public-url":
            action, extra = "lambda:InvokeFunctionUrl", {"FunctionUrlAuthType": "NONE"}
        fn.add_permission(
            FunctionName=FUNCTION, StatementId=sid, Action=action, Principal="*", **extra
        )
    fn.add_permission(  # narrowed to one source: kept
        FunctionName=FUNCTION,
        StatementId="from-uploads",
        Action="lambda:InvokeFunction",
        Principal="s3.amazonaws.com",
        SourceArn="arn:aws:s3:::uploads",
    )


def _db(session: boto3.Session, world: World) -> None:
    ec2 = session.client("ec2", region_name=REGION)
    rds = session.client("rds", region_name=REGION)
    sg = ec2.create_security_group(GroupName="db", Description="db", VpcId=world.vpc_id)
    rds.create_db_subnet_group(
        DBSubnetGroupName="db-subnets",
        DBSubnetGroupDescription="db",
        SubnetIds=world.extra["subnets"],
    )
    rds.create_db_instance(
        DBInstanceIdentifier=DB,
        DBInstanceClass="db.t3.micro",
        Engine="postgres",
        AllocatedStorage=20,
        MasterUsername="admin1",
        MasterUserPassword="Sup3r-secret-pw",
        DBSubnetGroupName="db-subnets",
        VpcSecurityGroupIds=[sg["GroupId"]],
        PubliclyAccessible=True,
    )
    world.extra["db_sg"] = sg["GroupId"]


_BUILDERS = {
    "user": _user,
    "role": _role,
    "bucket": _bucket,
    "function": _function,
    "db_instance": _db,
}


def kind_state(session: boto3.Session, world: World) -> dict[str, Any]:
    """What the kind's actions change, for the kind the world was built for."""
    kind = world.extra.get("kind")
    iam = session.client("iam", region_name=REGION)
    if kind == "user":
        login = True
        try:
            iam.get_login_profile(UserName=world.user_name)
        except iam.exceptions.NoSuchEntityException:
            login = False
        return {"login_profile": login}
    if kind == "bucket":
        s3 = session.client("s3", region_name=REGION)
        policy = json.loads(s3.get_bucket_policy(Bucket=EXPOSED_BUCKET)["Policy"])
        block = s3.get_public_access_block(Bucket=EXPOSED_BUCKET)
        return {
            "bucket_policy": sorted(json.dumps(s, sort_keys=True) for s in policy["Statement"]),
            "public_access_block": sorted(block["PublicAccessBlockConfiguration"].items()),
        }
    if kind == "function":
        fn = session.client("lambda", region_name=REGION)
        policy = json.loads(fn.get_policy(FunctionName=FUNCTION)["Policy"])
        return {
            "function_concurrency": fn.get_function_concurrency(FunctionName=FUNCTION).get(
                "ReservedConcurrentExecutions"
            ),
            "function_policy": sorted(s["Sid"] for s in policy["Statement"]),
        }
    if kind == "db_instance":
        rds = session.client("rds", region_name=REGION)
        db = rds.describe_db_instances(DBInstanceIdentifier=DB)["DBInstances"][0]
        # Manual ones: moto's automated snapshot is named by the wall clock.
        snaps = rds.describe_db_snapshots(DBInstanceIdentifier=DB, SnapshotType="manual")[
            "DBSnapshots"
        ]
        ids = [g["VpcSecurityGroupId"] for g in db["VpcSecurityGroups"]]
        groups = session.client("ec2", region_name=REGION).describe_security_groups(GroupIds=ids)
        return {
            "db_snapshots": Counter(
                (s["DBSnapshotIdentifier"], s.get("SnapshotType", "")) for s in snaps
            ),
            "db_security_groups": sorted(g["GroupName"] for g in groups["SecurityGroups"]),
            "db_publicly_accessible": db["PubliclyAccessible"],
        }
    return {}
