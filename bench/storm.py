"""Alert storm: 10,000 EventBridge findings pushed to POST /guardduty/events, 20 at a time.

    python -m bench.storm [--findings 10000] [--resources 500] [--repeat-share 0.9]
                          [--concurrency 20] [--workers 1] [--rounds 2]

The bot runs as `incident-bot run --http` (embedded gunicorn, gthread) on SQLite, against
the fake Slack Web API (tests/slack_fake.py) and a moto_server holding the 500 instances
with their tags (the card reads them). Findings are GuardDuty's real EventBridge shape (the
aws-samples EC2 finding in the custodian envelope), 10% distinct (two per instance), the
rest repeats with growing counts, shuffled, so repeats also arrive out of order.

Floor: the same gunicorn configuration serving a WSGI app that only reads the body and
answers 200, sent the same requests over the same 20 keep-alive connections.

Rounds alternate floor / bot; every bot round is a fresh process on an empty database. After
its load the bench waits for Slack to settle (every card posted, then no call for the update
interval plus a margin, or --settle-timeout: the blast-radius sweeper keeps refreshing cards
for a while, through the same pacing) and checks: every finding recorded with its highest count, one
incident per instance, Slack messages per incident, card updates per incident per 10 s,
429s seen. Containment proposals for high findings are switched off
(`approvals.auto_request_min_severity: null`): they are the containment feature's messages,
not intake's. `ratio` is the best bot round / the best floor round; the checks report the
worst of all rounds.

Last line: {"bench": "storm", ..., "ratio": x}. Targets: <= 1 Slack message per incident,
<= 1 card update per incident per 10 s, ratio <= 3.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import os
import random
import re
import sqlite3
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._load import bot_command, post_all
from tests.fixture_paths import FIXTURES as ALL_FIXTURES

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ALL_FIXTURES / "guardduty"
TOKEN = "bench-ingest-token"
CHANNEL = "C0INCIDENT"
UPDATE_INTERVAL = 10.0
SEVERITIES = (4.0, 5.0, 5.5, 6.9, 7.0, 8.0, 8.9)


@dataclass
class Load:
    name: str
    elapsed: float
    statuses: dict[int, int]
    errors: int

    @property
    def per_second(self) -> float:
        return sum(self.statuses.values()) / self.elapsed


# -- the floor ----------------------------------------------------------------------------------


def serve_floor(port: int, workers: int) -> None:
    """The same gunicorn, serving an app that reads the body and answers 200."""
    from bot.server import GunicornServer, gunicorn_options

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        environ["wsgi.input"].read(length)
        body = b'{"ok":true}'
        start_response(
            "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        )
        return [body]

    GunicornServer(
        lambda: app, options=gunicorn_options(host="127.0.0.1", port=port, workers=workers)
    ).run()


# -- the storm ------------------------------------------------------------------------------------


def make_storm(
    *, findings: int, instances: list[str], repeat_share: float, seed: int = 20
) -> tuple[list[bytes], dict[str, int], dict[str, str]]:
    """(bodies, highest count per finding id, instance per finding id)."""
    rng = random.Random(seed)
    envelope = json.loads((FIXTURES / "custodian__ec2-duty-event.json").read_text())
    detail = json.loads(
        (FIXTURES / "automated-response-sample__guardduty_ec2_event.json").read_text()
    )
    distinct = max(len(instances), round(findings * (1 - repeat_share)))
    ids = [f"storm{n:05d}" for n in range(distinct)]
    instance_of = {fid: instances[n % len(instances)] for n, fid in enumerate(ids)}
    severity_of = {fid: rng.choice(SEVERITIES) for fid in ids}
    sends = list(ids) + [rng.choice(ids) for _ in range(findings - distinct)]
    rng.shuffle(sends)
    counts: dict[str, int] = defaultdict(int)
    bodies = []
    base = time.time() - 3600
    for fid in sends:
        counts[fid] += 1
        n = counts[fid]
        d = copy.deepcopy(detail)
        d.update(
            id=fid,
            arn=d["arn"].rsplit("/", 1)[0] + "/" + fid,
            severity=severity_of[fid],
            updatedAt=_iso(base + n * 60),
        )
        d["resource"]["instanceDetails"]["instanceId"] = instance_of[fid]
        d["service"]["count"] = n
        d["service"]["eventLastSeen"] = _iso(base + n * 60)
        event = {**envelope, "detail": d, "id": f"evt-{len(bodies)}", "time": _iso(base + n * 60)}
        bodies.append(json.dumps(event).encode())
    return bodies, dict(counts), instance_of


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + ".000Z"


def run_load(name: str, port: int, path: str, bodies: list[bytes], concurrency: int) -> Load:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    result = post_all(
        port=port,
        path=path,
        requests=[(body, headers) for body in bodies],
        concurrency=concurrency,
    )
    return Load(name, result.elapsed, result.statuses, result.errors)


# -- set-up ------------------------------------------------------------------------------------


def tagged_instances(moto_url: str, count: int) -> list[str]:
    import boto3

    ec2 = boto3.client(
        "ec2",
        region_name="us-east-1",
        endpoint_url=moto_url,
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    )
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    ids: list[str] = []
    while len(ids) < count:
        n = min(100, count - len(ids))
        batch = ec2.run_instances(ImageId=image, MinCount=n, MaxCount=n, InstanceType="t3.micro")
        ids += [i["InstanceId"] for i in batch["Instances"]]
    for n, instance_id in enumerate(ids):
        ec2.create_tags(
            Resources=[instance_id],
            Tags=[
                {"Key": "Name", "Value": f"storm-web-{n}"},
                {"Key": "DataClassification", "Value": ("Internal", "PII")[n % 2]},
                {"Key": "Criticality", "Value": ("low", "high")[n % 2]},
                {"Key": "Owner", "Value": f"team-{n % 7}"},
            ],
        )
    return ids


def wait_settled(
    slack: Any, db_path: Path, *, quiet: float, timeout: float, first_call: int = 0
) -> float:
    """Seconds until every incident has its card and Slack saw no call for `quiet` s."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        with sqlite3.connect(db_path) as conn:
            missing = conn.execute(
                "SELECT count(*) FROM incidents WHERE card_ts IS NULL"
            ).fetchone()[0]
        calls = slack.calls[first_call:]
        last = max((c.at for c in calls), default=0.0)
        if missing == 0 and time.time() - last >= quiet:
            return time.monotonic() - t0
        time.sleep(0.5)
    return time.monotonic() - t0


# -- one round of the bot -------------------------------------------------------------------------


def bot_round(
    *,
    number: int,
    args: argparse.Namespace,
    tmp: Path,
    env: dict[str, str],
    slack: Any,
    bodies: list[bytes],
    counts: dict[str, int],
    instance_of: dict[str, str],
) -> dict[str, Any]:
    """A fresh bot (new process, empty database) takes the storm; what it did, checked."""
    from bench._proxy import free_port
    from bench.ack import start_server, stop_server

    db_path = tmp / f"storm-{number}.db"
    port = free_port()
    command = bot_command(port=port, workers=args.workers)
    log_path = tmp / f"bot-{number}.log"
    first_call = len(slack.calls)
    proc = start_server(command, {**env, "DATABASE_URL": f"sqlite:///{db_path}"}, port, log_path)
    try:
        load = run_load("bot", port, "/guardduty/events", bodies, args.concurrency)
        print(
            f"bot round {number}: {load.elapsed:.2f}s statuses={load.statuses} "
            f"errors={load.errors}",
            flush=True,
        )
        settle = wait_settled(
            slack,
            db_path,
            quiet=UPDATE_INTERVAL + 3,
            timeout=args.settle_timeout,
            first_call=first_call,
        )
    finally:
        stop_server(proc)
    log_lines = log_path.read_text().splitlines() if log_path.exists() else []
    errors_logged = [line for line in log_lines if " ERROR " in line]
    notes = [line for line in log_lines if "guardduty writer" in line or "guardduty cards" in line]
    with sqlite3.connect(db_path) as conn:
        recorded = dict(conn.execute("SELECT finding_id, count FROM findings").fetchall())
        incidents = conn.execute("SELECT id, card_ts, resource_id FROM incidents").fetchall()
    calls = list(slack.calls)[first_call:]

    posts = [c for c in calls if c.method == "chat.postMessage" and c.ok]
    messages_per_incident: dict[str, int] = defaultdict(int)
    for call in posts:
        root = call.args.get("thread_ts") or call.response.get("ts")
        messages_per_incident[root] += 1
    updates: dict[str, list[float]] = defaultdict(list)
    for call in calls:
        if call.method == "chat.update" and call.ok:
            updates[call.args.get("ts")].append(call.at)
    max_in_window = 0
    min_gap = None
    for times in updates.values():
        times.sort()
        for i, start in enumerate(times):
            in_window = sum(1 for t in times[i:] if t - start < UPDATE_INTERVAL)
            max_in_window = max(max_in_window, in_window)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        if gaps:
            min_gap = min(gaps) if min_gap is None else min(min_gap, min(gaps))
    # The publisher logs its own totals; other features (e.g. the blast-radius sweeper)
    # refresh cards too, and their chat.update calls are in card_updates as well.
    intake_updates = next(
        (int(m.group(1)) for line in notes if (m := re.search(r"(\d+) updated", line))), None
    )
    return {
        "load": load,
        "notes": notes,
        "errors": errors_logged,
        "http_errors": load.errors + sum(n for st, n in load.statuses.items() if st != 200),
        "recorded": len(recorded),
        "dropped": sum(1 for fid, n in counts.items() if recorded.get(fid) != n),
        "incidents_opened": len(incidents),
        "resources_without_incident": len(set(instance_of.values()))
        - len({resource for _, _, resource in incidents}),
        "cards_posted": len({card_ts for _, card_ts, _ in incidents if card_ts}),
        "slack_messages": len(posts),
        "max_messages_per_incident": max(messages_per_incident.values(), default=0),
        "card_updates": sum(len(t) for t in updates.values()),
        "intake_card_updates": intake_updates,
        "max_updates_per_incident_per_10s": max_in_window,
        "min_seconds_between_updates": round(min_gap, 2) if min_gap is not None else None,
        "slack_429": sum(1 for c in calls if c.status == 429),
        "slack_calls": len(calls),
        "settle_seconds": round(settle, 1),
    }


# -- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.storm", description=__doc__)
    parser.add_argument("--findings", type=int, default=10_000)
    parser.add_argument("--resources", type=int, default=500)
    parser.add_argument("--repeat-share", type=float, default=0.9)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--settle-timeout", type=float, default=60.0)
    parser.add_argument("--serve-floor", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_floor:
        serve_floor(args.serve_floor, args.workers)
        return 0

    sys.path.insert(0, str(REPO_ROOT))
    from bench._proxy import MotoServer, free_port
    from bench.ack import start_server, stop_server
    from tests.slack_fake import FakeSlack

    with tempfile.TemporaryDirectory() as tmp_dir, FakeSlack() as slack, MotoServer() as moto:
        tmp = Path(tmp_dir)
        slack.add_channel(CHANNEL, name="incidents")
        print(f"creating {args.resources} tagged instances in moto_server...", flush=True)
        instances = tagged_instances(moto.url, args.resources)
        bodies, counts, instance_of = make_storm(
            findings=args.findings, instances=instances, repeat_share=args.repeat_share
        )
        config = tmp / "incident-bot.yml"
        config.write_text(
            "slack:\n  incident_channel: C0INCIDENT\n"
            "guardduty:\n  min_severity: 4.0\n  poll_interval_seconds: 0\n"
            "approvals:\n  auto_request_min_severity: null\n"
        )
        env = {
            **os.environ,
            "SLACK_BOT_TOKEN": "xoxb-bench",
            "SLACK_SIGNING_SECRET": "bench-signing-secret",
            "INCIDENT_BOT_SLACK_API_URL": slack.base_url,
            "INCIDENT_BOT_INGEST_TOKEN": TOKEN,
            "INCIDENT_BOT_CONFIG": str(config),
            "AWS_ENDPOINT_URL": moto.url,
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
            "PYTHONPATH": str(REPO_ROOT),
        }
        env.pop("SLACK_APP_TOKEN", None)
        floor_port = free_port()
        floor_command = [
            sys.executable,
            "-m",
            "bench.storm",
            "--serve-floor",
            str(floor_port),
            "--workers",
            str(args.workers),
        ]
        floor_proc = start_server(floor_command, env, floor_port, tmp / "floor.log")
        floors: list[Load] = []
        rounds: list[dict[str, Any]] = []
        try:
            # Floor and bot rounds alternate, so a slow spell of the machine hits both.
            for number in range(1, args.rounds + 1):
                floors.append(
                    run_load("floor", floor_port, "/guardduty/events", bodies, args.concurrency)
                )
                print(f"floor round {number}: {floors[-1].elapsed:.2f}s", flush=True)
                rounds.append(
                    bot_round(
                        number=number,
                        args=args,
                        tmp=tmp,
                        env=env,
                        slack=slack,
                        bodies=bodies,
                        counts=counts,
                        instance_of=instance_of,
                    )
                )
        finally:
            stop_server(floor_proc)

    floor = min(floors, key=lambda f: f.elapsed)
    best = min(rounds, key=lambda r: r["load"].elapsed)
    bot: Load = best["load"]
    worst = {
        key: max(r[key] or 0 for r in rounds)
        for key in (
            "http_errors",
            "dropped",
            "resources_without_incident",
            "max_messages_per_incident",
            "max_updates_per_incident_per_10s",
            "slack_429",
        )
    }
    result = {
        "bench": "storm",
        "findings": len(bodies),
        "distinct_findings": len(counts),
        "resources": len(set(instance_of.values())),
        "concurrency": args.concurrency,
        "workers": args.workers,
        "rounds": args.rounds,
        "bot_seconds": round(bot.elapsed, 3),
        "floor_seconds": round(floor.elapsed, 3),
        "bot_rounds_seconds": [round(r["load"].elapsed, 3) for r in rounds],
        "floor_rounds_seconds": [round(f.elapsed, 3) for f in floors],
        "findings_per_s": round(bot.per_second, 1),
        "floor_per_s": round(floor.per_second, 1),
        "http_200": bot.statuses.get(200, 0),
        "recorded": best["recorded"],
        "incidents_opened": best["incidents_opened"],
        "cards_posted": best["cards_posted"],
        "slack_messages": best["slack_messages"],
        "card_updates": best["card_updates"],
        "intake_card_updates": best["intake_card_updates"],
        "min_seconds_between_updates": best["min_seconds_between_updates"],
        "slack_calls": best["slack_calls"],
        "settle_seconds": best["settle_seconds"],
        # The checks: the worst of every round.
        **worst,
        "errors_logged": sum(len(r["errors"]) for r in rounds),
        "ratio": round(bot.elapsed / floor.elapsed, 3),
    }
    for line in best["notes"]:
        print(f"bot: {line}")
    for line in [e for r in rounds for e in r["errors"]][:5]:
        print(f"bot error: {line}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
