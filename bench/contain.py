"""Benchmark: a full EC2 instance containment against moto_server with 50 ms per AWS call.

    python -m bench.contain [--rounds N] [--delay-ms 50]

moto_server runs as a subprocess behind bench._proxy.DelayProxy (its own process, so it
does not compete for the GIL with the code measured), which holds every request for the
delay (concurrently for concurrent requests), standing in for the distance to AWS.
Each round resets moto, builds the test world directly against moto (no delay: an instance
with a root and two data volumes and two ENIs, in an ASG, behind an instance target group,
an IP target group and a classic ELB, with an instance profile), then times `run_plan`.

The floor is the critical path: the longest chain of AWS calls that each need an earlier
one (its output, or the order the containment procedure demands), times the delay. The call
graph is written out below from what each call needs, not from how the executor schedules
it; the bench prints the longest chain. Round 1 also pays for loading botocore's service
models and creating clients; then gc.freeze() (as the bot should do once started); the
figure is the median of the later (warm) rounds, as in a running bot (the best warm round
is printed too: other load on the machine only adds time).
Last line: {"bench": "contain", ..., "ratio": median / floor}.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Iterable
from typing import Any

DEFAULT_DELAY_MS = 50


class CallGraph:
    """Calls a containment needs, each with the calls that must finish before it starts."""

    def __init__(self) -> None:
        self.deps: dict[str, tuple[str, ...]] = {}

    def add(self, name: str, *after: str | Iterable[str]) -> str:
        flat: list[str] = []
        for item in after:
            flat.extend([item] if isinstance(item, str) else list(item))
        assert name not in self.deps, name
        assert all(d in self.deps for d in flat), (name, flat)
        self.deps[name] = tuple(flat)
        return name

    def critical_path(self) -> list[str]:
        best: dict[str, list[str]] = {}
        for name, deps in self.deps.items():  # insertion order is a topological order
            longest = max((best[d] for d in deps), key=len, default=[])
            best[name] = [*longest, name]
        return max(best.values(), key=len)


def containment_graph(facts: dict[str, Any], *, deny_profile_exists: bool) -> CallGraph:
    """The calls containing this instance needs, with what each must wait for.

    Capture is a barrier (the procedure's rule: record everything before changing anything).
    ASG standby and LB deregistration precede isolation (else the group replaces an instance
    failing health checks); every ENI takes the all-open hop before the isolation group;
    the sessions cut-off is written after the profile swap; tags say Isolated and name the
    snapshots, so they come last.
    """
    g = CallGraph()
    describe = g.add("ec2:DescribeInstances")
    capture = [
        describe,
        g.add("ec2:DescribeInstanceAttribute(disableApiTermination)"),
        g.add("ec2:DescribeInstanceAttribute(instanceInitiatedShutdownBehavior)"),
        g.add("ec2:GetConsoleOutput"),
        g.add("ec2:GetConsoleScreenshot"),
        g.add("iam:GetInstanceProfile(deny-all)"),
        g.add("elasticloadbalancing:DescribeLoadBalancers(classic)"),
        g.add("ec2:DescribeSecurityGroups(isolation, transit)", describe),
    ]
    assoc = g.add("ec2:DescribeIamInstanceProfileAssociations")
    capture += [assoc, g.add("iam:GetInstanceProfile(attached)", assoc)]
    asg_member = g.add("autoscaling:DescribeAutoScalingInstances")
    capture += [asg_member, g.add("autoscaling:DescribeAutoScalingGroups", asg_member)]
    tgs = g.add("elasticloadbalancing:DescribeTargetGroups")
    capture.append(tgs)
    for t in facts["target_groups"]:
        capture.append(
            g.add(f"elasticloadbalancing:DescribeTargetHealth({t['name']})", tgs, describe)
        )
    roles = (facts.get("iam") or {}).get("roles", [])
    for role in roles:
        capture.append(g.add(f"iam:GetRolePolicy({role})"))

    g.add("s3:PutObject(evidence)", capture)
    protect = [
        g.add(f"ec2:ModifyInstanceAttribute({what})", capture)
        for what in (
            "DisableApiTermination",
            "InstanceInitiatedShutdownBehavior",
            "BlockDeviceMappings",
        )
    ]
    snapshot = g.add("ec2:CreateSnapshots", capture, protect)
    before_isolation = [g.add("autoscaling:EnterStandby", capture, protect)]
    for t in facts["target_groups"]:
        before_isolation.append(
            g.add(f"elasticloadbalancing:DeregisterTargets({t['name']})", capture, protect)
        )
    for lb in facts["classic_elbs"]:
        before_isolation.append(
            g.add(
                f"elasticloadbalancing:DeregisterInstancesFromLoadBalancer({lb['name']})",
                capture,
                protect,
            )
        )

    iso_new = g.add("ec2:CreateSecurityGroup(isolation)", capture)
    iso_ready = [iso_new, g.add("ec2:RevokeSecurityGroupEgress(isolation)", iso_new)]
    transit_new = g.add("ec2:CreateSecurityGroup(transit)", capture)
    transit_ready = [
        transit_new,
        g.add("ec2:AuthorizeSecurityGroupIngress(transit)", transit_new),
        g.add("ec2:AuthorizeSecurityGroupEgress(transit ::/0)", transit_new),
    ]
    isolated = []
    for eni in facts["enis"]:
        hop = g.add(
            f"ec2:ModifyNetworkInterfaceAttribute({eni['id']} -> transit)",
            transit_ready,
            before_isolation,
            protect,
        )
        isolated.append(
            g.add(f"ec2:ModifyNetworkInterfaceAttribute({eni['id']} -> isolation)", hop, iso_ready)
        )
    g.add("ec2:DeleteSecurityGroup(transit)", isolated)

    if deny_profile_exists:
        profile_ready: list[str] = []
    else:
        role = g.add("iam:CreateRole(deny-all)", capture, protect)
        profile = g.add("iam:CreateInstanceProfile(deny-all)", capture, protect)
        profile_ready = [
            g.add("iam:PutRolePolicy(deny-all)", role),
            g.add("iam:AddRoleToInstanceProfile(deny-all)", role, profile),
        ]
    swap = g.add("ec2:ReplaceIamInstanceProfileAssociation", capture, protect, profile_ready)
    for role in roles:
        g.add(f"iam:PutRolePolicy({role}: revoke sessions before now)", swap)

    g.add("ec2:CreateTags(instance, volumes, snapshots, isolation group)", isolated, snapshot)
    return g


def _setup_env(proxy_url: str) -> None:
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": proxy_url,  # the containment's clients go through the proxy
        }
    )
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        os.environ.pop(name, None)


class _Direct:
    """Just enough of a boto3 session for the world builder, aimed straight at moto."""

    def __init__(self, url: str) -> None:
        import boto3

        self.url = url
        self.session = boto3.Session(region_name="us-east-1")

    def client(self, service: str, region_name: str | None = None) -> Any:
        return self.session.client(service, region_name=region_name, endpoint_url=self.url)


def _chain_ms(proxy_url: str, instance_id: str, length: int) -> float:
    """Wall time of `length` calls made one after the other through the proxy: the critical
    path's length at this emulator's own speed (each call waits for the previous one)."""
    import boto3

    ec2 = boto3.client("ec2", region_name="us-east-1", endpoint_url=proxy_url)
    ec2.describe_instances(InstanceIds=[instance_id])  # connection and model warm-up
    start = time.perf_counter()
    for _ in range(length):
        ec2.describe_instances(InstanceIds=[instance_id])
    return (time.perf_counter() - start) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.contain")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--delay-ms", type=float, default=DEFAULT_DELAY_MS)
    args = parser.parse_args(argv)
    delay = args.delay_ms / 1000

    from bench._proxy import MotoServer, ProxyProcess

    with MotoServer() as moto, ProxyProcess(moto.url, delay=delay) as proxy:
        _setup_env(proxy.url)
        # Imported after the environment is set: the bot's shared session reads it.
        from bot.clock import SystemClock
        from containment.context import ActionContext
        from containment.executor import run_plan
        from containment.revoker.local import in_process_revoker
        from containment.targets import Target
        from tests.containment.world import build_world

        direct = _Direct(moto.url)
        times: list[float] = []
        counts: list[int] = []
        graph: CallGraph | None = None
        last_calls = []
        chains: list[float] = []
        for round_no in range(1, args.rounds + 1):
            moto.reset()
            world = build_world(direct)  # type: ignore[arg-type]
            target = Target(kind="instance", resource_id=world.instance_id, region="us-east-1")
            ctx = ActionContext(
                incident_key=f"INC-{round_no}",
                finding_id="bench-finding",
                evidence_bucket=world.bucket,
                evidence_kms_key_id=world.kms_key_id,
                now=SystemClock().now,
                # incident-bot-revoker's code in this process (moto runs no Lambda code): its
                # PutRolePolicy calls reach the proxy as before; a deployed bot adds the Invoke.
                client_hooks=(in_process_revoker(SystemClock().now),),
            )
            proxy.reset_log()
            gc.collect()  # this round's garbage only, not the previous rounds'
            start = time.perf_counter()
            results = run_plan(target=target, ctx=ctx, max_workers=16)
            elapsed = time.perf_counter() - start
            calls = proxy.calls
            failed = {n: r.error for n, r in results.items() if r.status != "succeeded"}
            if failed:
                print(f"round {round_no}: steps did not succeed: {failed}", file=sys.stderr)
                return 1
            times.append(elapsed)
            if round_no == 1:
                # What a long-running bot does once loaded: move botocore's large, permanent
                # model objects out of the collector's reach. Without it a full collection
                # scanning them stalls every thread for 100-400 ms at random moments.
                gc.freeze()
            counts.append(len(calls))
            last_calls = calls
            facts = results["capture"].evidence
            graph = containment_graph(facts, deny_profile_exists=facts["deny_profile"] is not None)
            chains.append(_chain_ms(proxy.url, world.instance_id, len(graph.critical_path())))
            print(
                f"round {round_no}: {elapsed * 1000:7.1f} ms, {len(calls)} AWS calls"
                + ("  (cold: loads service models, creates clients)" if round_no == 1 else "")
            )

    assert graph is not None
    chain_ms = statistics.median(chains[1:] or chains)
    path = graph.critical_path()
    floor = len(path) * delay
    warm = times[1:] or times
    measured = statistics.median(warm)
    minimum = len(graph.deps)
    print()
    print(f"floor = critical path {len(path)} calls x {args.delay_ms:g} ms = {floor * 1000:.0f} ms")
    print("critical path (each call needs the one before it):")
    for i, call in enumerate(path, 1):
        print(f"  {i}. {call}")
    print(f"AWS calls made: {counts[-1]} (minimum for this instance: {minimum})")
    t0 = min(c.start for c in last_calls)
    waves: dict[int, int] = {}
    for c in last_calls:
        waves[int((c.start - t0) / delay)] = waves.get(int((c.start - t0) / delay), 0) + 1
    print(
        "calls started per delay window (last round):",
        " ".join(f"{k}:{v}" for k, v in sorted(waves.items())),
    )
    print(
        f"containment: median {measured * 1000:.1f} ms over {len(warm)} warm rounds, best "
        f"{min(warm) * 1000:.1f} ms (cold {times[0] * 1000:.1f} ms); the ratio uses the median"
    )
    print(
        f"same chain measured: {chain_ms:.0f} ms for {len(path)} dependent DescribeInstances "
        "through the proxy (the delay plus moto_server's own time per call)"
    )
    print(
        json.dumps(
            {
                "bench": "contain",
                "delay_ms": args.delay_ms,
                "critical_path_calls": len(path),
                "floor_ms": round(floor * 1000, 1),
                "median_ms": round(measured * 1000, 1),
                "best_ms": round(min(warm) * 1000, 1),
                "cold_ms": round(times[0] * 1000, 1),
                "aws_calls": counts[-1],
                "min_aws_calls": minimum,
                "rounds": len(times),
                "floor_measured_ms": round(chain_ms, 1),
                "ratio_vs_measured_floor": round(measured * 1000 / chain_ms, 3),
                "ratio_best": round(min(warm) / floor, 3),
                "ratio": round(measured / floor, 3),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
