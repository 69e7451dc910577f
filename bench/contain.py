"""Benchmark: a full EC2 instance containment through the approval flow, against moto_server
with a jittered latency per AWS call.

    python -m bench.contain [--rounds N] [--delay-ms 50] [--jitter 0.4]

moto_server runs as a subprocess behind bench._proxy.DelayProxy (its own process, so it
does not compete for the GIL with the code measured), which holds every request for
delay x uniform(1 - jitter, 1 + jitter) (concurrently for concurrent requests), standing in
for the distance to AWS. Each round resets moto, builds the test world directly against moto
(no delay: an instance with a root and two data volumes and two ENIs, in an ASG, behind an
instance target group, an IP target group and a classic ELB, with an instance profile),
records an approved containment request for it, then times the production execution path:
`commands.approvals.execute` as `ContainmentService.run` calls it (the atomic approval claim,
a DB write and a timeline event per step start and finish, the progress callback feeding the
card updater, which chat.updates the approval card on the fake Slack with Slack's manners
at SLACK_LATENCY_S per call, and the settling of the outcome).

The floor is the critical path: the longest chain of AWS calls that each need an earlier
one (its output, or the order the containment procedure demands), each weighted with the
latency its calls actually had in that round (the proxy's log: jitter and moto_server's own
time included). The call graph is written out below from what each call needs, not from how
the executor schedules it; the bench prints the longest chain. Round 1 is the cold run (the
process's first containment: service models load, clients are created) and is reported as
`cold_ratio` (target <= 2); `ratio` is the median of the later rounds' ratios (target <= 1.5).
No GC tuning: the collector runs as it does in the bot.
Last line: {"bench": "contain", ..., "cold_ratio": x, "ratio": median warm ratio}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

DEFAULT_DELAY_MS = 50
DEFAULT_JITTER = 0.4
SLACK_LATENCY_S = 0.2
APPROVER = "U0APPROVER"


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

    def critical_path(self, weight: Callable[[str], float] = lambda _: 1.0) -> list[str]:
        """The heaviest chain of dependent calls (by count, unless `weight` says otherwise)."""
        best: dict[str, tuple[float, list[str]]] = {}
        for name, deps in self.deps.items():  # insertion order is a topological order
            cost, chain = max((best[d] for d in deps), key=lambda b: b[0], default=(0.0, []))
            best[name] = (cost + weight(name), [*chain, name])
        return max(best.values(), key=lambda b: b[0])[1]


def operation(call: str) -> str:
    """The key a graph call and the proxy's log share: "ec2:DescribeInstanceAttribute(x)"
    -> "DescribeInstanceAttribute"; "s3:PUT manifest (...)" -> "PUT manifest"."""
    service, rest = call.split(":", 1)
    if service == "s3":
        return " ".join(rest.split(" ")[:2])
    return rest.split("(", 1)[0]


def proxied(op: str) -> str:
    """The proxy's name of a call as `operation` keys it (S3's REST calls by what they
    touch: the bucket, the manifest or an object)."""
    method, _, path = op.partition(" ")
    if not path.startswith("/"):
        return op
    parts = [p for p in path.split("/") if p]
    what = "bucket" if len(parts) <= 1 else "manifest" if parts[-1] == "manifest.json" else "object"
    return f"{method} {what}"


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
    attached = g.add("iam:GetInstanceProfile(attached)", assoc)
    capture += [assoc, attached]
    roles = (facts.get("iam") or {}).get("roles", [])
    if roles:  # who else the role's session cut-off reaches (named in the plan)
        capture.append(g.add("ec2:DescribeInstances(live instances, their profiles)", assoc))
        for role in roles:
            capture.append(g.add(f"iam:ListInstanceProfilesForRole({role})", attached))
    asg_member = g.add("autoscaling:DescribeAutoScalingInstances")
    capture += [asg_member, g.add("autoscaling:DescribeAutoScalingGroups", asg_member)]
    tgs = g.add("elasticloadbalancing:DescribeTargetGroups")
    capture.append(tgs)
    for t in facts["target_groups"]:
        capture.append(
            g.add(f"elasticloadbalancing:DescribeTargetHealth({t['name']})", tgs, describe)
        )
    for role in roles:
        capture.append(g.add(f"iam:GetRolePolicy({role})"))

    # Evidence: the bucket's Object Lock settings decide how the object is written; the
    # incident's manifest is rewritten conditionally on the version read (its ETag), and
    # lists the new object, so its write waits for both.
    lock = g.add("s3:GET bucket (Object Lock configuration)", capture)
    put = g.add("s3:PUT object (evidence)", lock)
    read = g.add("s3:GET manifest", capture)
    g.add("s3:PUT manifest (If-Match its ETag)", put, read)
    protect = [
        g.add(f"ec2:ModifyInstanceAttribute({what})", capture)
        for what in (
            "DisableApiTermination",
            "InstanceInitiatedShutdownBehavior",
            "BlockDeviceMappings",
        )
    ]
    # Exactly once: a lost CreateSnapshots answer must not make a second set of snapshots,
    # so the incident's own snapshots are looked for first (containment/idempotency.py).
    guard = g.add("ec2:DescribeSnapshots(this incident's, before creating)", capture, protect)
    snapshot = g.add("ec2:CreateSnapshots", guard)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.contain")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--delay-ms", type=float, default=DEFAULT_DELAY_MS)
    parser.add_argument("--jitter", type=float, default=DEFAULT_JITTER)
    parser.add_argument("--trace", action="store_true", help="print each round's AWS calls")
    args = parser.parse_args(argv)
    delay = args.delay_ms / 1000

    import tempfile
    from pathlib import Path

    from bench._proxy import MotoServer, ProxyProcess
    from tests.slack_fake import FakeSlack, SlackManners

    tmp = Path(tempfile.mkdtemp(prefix="bench-contain-"))
    with (
        MotoServer() as moto,
        ProxyProcess(moto.url, delay=delay, jitter=args.jitter) as proxy,
        FakeSlack() as slack,
    ):
        _setup_env(proxy.url)
        # Imported after the environment is set: the bot's shared session reads it.
        from sqlalchemy import select

        from bot.approvals.cards import CardUpdater
        from bot.approvals.service import ContainmentService
        from bot.clock import SystemClock
        from bot.runtime import Options, make_runtime
        from bot.settings import AppConfig, EnvSettings, Settings
        from commands.approvals import decide, execute, request_containment
        from commands.approvals.plans import parse_target
        from commands.incidents import open_incident
        from containment.context import ActionContext
        from containment.revoker.local import in_process_revoker
        from storage.migrate import upgrade
        from storage.models import ActionStep
        from tests.containment.world import BUCKET, build_world

        channel = "C0INCIDENT"
        slack.add_channel(channel, name="incidents")
        url = f"sqlite:///{tmp / 'contain.db'}"
        upgrade(url)
        settings = Settings(
            env=EnvSettings.model_validate(
                {
                    "database_url": url,
                    "slack_bot_token": "xoxb-bench",
                    "slack_api_url": slack.base_url,
                }
            ),
            config=AppConfig.model_validate(
                {
                    "slack": {"incident_channel": channel},
                    "approvals": {"approvers": [APPROVER]},
                    "containment": {"evidence_bucket": BUCKET},
                }
            ),
        )
        # incident-bot-revoker's code in this process (moto runs no Lambda code): its
        # PutRolePolicy calls reach the proxy as before; a deployed bot adds the Invoke.
        runtime = make_runtime(
            settings,
            clock=SystemClock(),
            options=Options(client_hooks=(in_process_revoker(SystemClock().now),)),
        )
        service = ContainmentService(runtime)
        database = runtime.database
        slack.realistic(SlackManners(latency=SLACK_LATENCY_S))

        direct = _Direct(moto.url)
        times: list[float] = []
        floors: list[float] = []
        counts: list[int] = []
        card_updates: list[int] = []
        graph: CallGraph | None = None
        path: list[str] = []
        for round_no in range(1, args.rounds + 1):
            moto.reset()
            world = build_world(direct)  # type: ignore[arg-type]
            settings.config.containment.evidence_kms_key_id = world.kms_key_id
            target = parse_target(world.instance_id, region="us-east-1")
            with database.session() as session:  # what /incident contain records
                incident = open_incident(
                    session=session, title=f"bench {round_no}", created_by="U0RESPONDER"
                )
                plan = service.engine.plan(
                    target=target,
                    ctx=ActionContext(incident_key=incident.key, now=runtime.now),
                )
                request = request_containment(
                    session=session,
                    incident=incident,
                    target=target,
                    plan=plan,
                    requested_by="U0RESPONDER",
                    reason="bench",
                    expire_after=dt.timedelta(minutes=30),
                ).request
                card = slack.handle_api(
                    "chat.postMessage", {"channel": channel, "text": "card"}, {"authorization": "x"}
                )[1]
                request.card_channel, request.card_ts = channel, card["ts"]
                request_id = request.id
            with database.session() as session:  # the approver's click
                decide(
                    session=session,
                    request_id=request_id,
                    actor=APPROVER,
                    approve=True,
                    approvers=[APPROVER],
                )
            proxy.reset_log()
            slack.reset_calls()
            # ContainmentService.run, up to the outcome (its notices after it are not timed).
            updater = CardUpdater(lambda rid=request_id: service.refresh_card(rid))
            start = time.perf_counter()
            outcome = execute(
                database=database,
                request_id=request_id,
                engine=service.engine_for(request_id),
                context_factory=service.context_for,
                progress=lambda _id, u=updater: u.poke(),
                now=runtime.now,
            )
            elapsed = time.perf_counter() - start
            updater.close()
            if outcome is None or outcome.status != "succeeded":
                print(f"round {round_no}: {outcome}", file=sys.stderr)
                return 1
            calls = proxy.calls
            if args.trace:
                t0 = min(c.start for c in calls)
                for c in sorted(calls, key=lambda c: c.start):
                    print(
                        f"  {(c.start - t0) * 1000:6.0f} {(c.end - t0) * 1000:6.0f}  {c.operation}"
                    )
            with database.read_session() as session:
                capture = session.scalars(
                    select(ActionStep).where(
                        ActionStep.request_id == request_id, ActionStep.action == "capture"
                    )
                ).one()
                facts = capture.result["evidence"]
            graph = containment_graph(facts, deny_profile_exists=facts["deny_profile"] is not None)
            took: dict[str, list[float]] = {}
            for c in calls:
                took.setdefault(proxied(c.operation), []).append(c.end - c.start)

            def weight(call: str, took: dict[str, list[float]] = took) -> float:
                seen = took.get(operation(call))
                return statistics.mean(seen) if seen else delay

            path = graph.critical_path(weight)
            floor = sum(weight(c) for c in path)
            times.append(elapsed)
            floors.append(floor)
            counts.append(len(calls))
            card_updates.append(len(slack.calls_for("chat.update")))
            print(
                f"round {round_no}: {elapsed * 1000:7.1f} ms, floor {floor * 1000:6.1f} ms "
                f"({elapsed / floor:.2f}x), {len(calls)} AWS calls, "
                f"{card_updates[-1]} card updates"
                + ("  (cold: loads service models, creates clients)" if round_no == 1 else "")
            )
        runtime.database.dispose()
        slack_latency_ms = slack.slack_latency_ms()

    assert graph is not None
    warm_ratios = [t / f for t, f in zip(times[1:], floors[1:], strict=True)] or [
        times[0] / floors[0]
    ]
    cold_ratio = times[0] / floors[0]
    minimum = len(graph.deps)
    print()
    print(
        f"floor = critical path of {len(path)} dependent calls, weighted with their actual "
        f"latencies ({args.delay_ms:g} ms +/- {args.jitter:.0%}, plus moto_server's time)"
    )
    print("critical path (each call needs the one before it):")
    for i, call in enumerate(path, 1):
        print(f"  {i}. {call}")
    print(f"AWS calls made: {counts[-1]} (minimum for this instance: {minimum})")
    print(
        f"containment: warm median {statistics.median(times[1:] or times) * 1000:.1f} ms, "
        f"ratio median {statistics.median(warm_ratios):.3f} (best {min(warm_ratios):.3f}); "
        f"cold {times[0] * 1000:.1f} ms: {cold_ratio:.3f}"
    )
    print(
        json.dumps(
            {
                "bench": "contain",
                "delay_ms": args.delay_ms,
                "jitter": args.jitter,
                "slack_latency_ms": slack_latency_ms,
                "critical_path_calls": len(path),
                "floor_ms": round(statistics.median(floors[1:] or floors) * 1000, 1),
                "median_ms": round(statistics.median(times[1:] or times) * 1000, 1),
                "best_ms": round(min(times[1:] or times) * 1000, 1),
                "cold_ms": round(times[0] * 1000, 1),
                "cold_floor_ms": round(floors[0] * 1000, 1),
                "aws_calls": counts[-1],
                "min_aws_calls": minimum,
                "card_updates": card_updates[-1],
                "rounds": len(times),
                "ratio_best": round(min(warm_ratios), 3),
                "cold_ratio": round(cold_ratio, 3),
                "ratio": round(statistics.median(warm_ratios), 3),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
