"""Before anyone approves, the card names the other instances a role-session revoke reaches."""

from __future__ import annotations

import boto3

from tests.bot import test_containment_flow as flow
from tests.containment.world import AMI

env = flow.env  # moto EC2/IAM world, fake Slack, signed requests into the app


def run_with_profile(profile: str) -> str:
    ec2 = boto3.client("ec2", region_name="us-east-1")
    run = ec2.run_instances(
        ImageId=AMI,
        MinCount=1,
        MaxCount=1,
        InstanceType="t3.micro",
        IamInstanceProfile={"Name": profile},
    )
    return str(run["Instances"][0]["InstanceId"])


def test_card_names_instances_sharing_the_role(env: flow.Env) -> None:
    iam = boto3.client("iam", region_name="us-east-1")
    same_profile = run_with_profile("app-profile")
    # Another profile carrying the same role: its instance is hit by the deny too.
    iam.create_instance_profile(InstanceProfileName="batch-profile")
    iam.add_role_to_instance_profile(InstanceProfileName="batch-profile", RoleName="app-role")
    other_profile = run_with_profile("batch-profile")
    stopped = run_with_profile("app-profile")
    terminated = run_with_profile("app-profile")
    ec2 = boto3.client("ec2", region_name="us-east-1")
    ec2.stop_instances(InstanceIds=[stopped])
    ec2.terminate_instances(InstanceIds=[terminated])

    bot = env.start()
    _, card = flow.contain(bot, f"{env.world.instance_id} beaconing")
    text = flow.blocks_text(card)
    sharers = sorted([same_profile, other_profile, stopped])
    # Blast radius and the plan's PutRolePolicy call both name them; the dead one is not.
    assert "role app-role is shared: other instances using it lose their current" in text
    assert text.count(", ".join(sharers)) >= 2, text
    assert "ALSO HITS 3 other instance(s) using role app-role" in text
    assert terminated not in text


def test_unshared_role_has_no_warning(env: flow.Env) -> None:
    bot = env.start()
    _, card = flow.contain(bot, f"{env.world.instance_id} beaconing")
    text = flow.blocks_text(card)
    assert "is shared" not in text and "ALSO HITS" not in text
    assert "instance profile app-profile (app-role)" in text
