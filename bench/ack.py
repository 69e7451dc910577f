"""Ack latency of `/incident status` over HTTP: the bot vs a bare Bolt app on the same server.

    python -m bench.ack [--requests 2000] [--concurrency 20] [--workers 2] [--rounds 3]
                        [--single 500]

All servers run under the same embedded gunicorn (bot/server.py: gthread, 8 threads per
worker), verify signatures, use a single-workspace token against the fake Slack Web API, and
the bot reads SQLite with 50 open incidents. The floor is a bare Bolt app (slack_bolt's own
WSGI adapter) whose only listener acks `/incident` with an empty body, with the bot's Bolt
settings (process_before_response=True): the pure cost of HTTP + gunicorn + Bolt. The same
bare app with Bolt's defaults (what FIELD-NOTES measured as the reference floor; its ack waits
on Bolt's 10 ms ack poll) is reported as the default floor.

The bot answers `/incident status INC-n` from the database in the ack itself (one prepared
statement, rendered Block Kit). Every request is signed like Slack's; keep-alive
connections, `concurrency` at once. Rounds alternate default floor/floor/bot, so machine
noise hits all three alike; p50 is each one's median round, p99 is pooled over all rounds'
requests (a bad round is not voted away). Each round then sends `--single` requests over one
connection to the floor and the bot, taking turns of 50: Slack's usual load, where the ack's
own cost shows rather than the queueing of 20 connections on 2 cores (`single_conn_ratio`,
pooled p50s). A third server takes those turns too: the same-work floor, bare Bolt whose
listener does the I/O an answer needs, written plainly (the signature recorded in an LMDB
file, two puts in one write transaction as the bot's replay check makes, and the incident's
row read from the same SQLite file with the stdlib's sqlite3), acking with a reply of the
same size. `single_conn_same_work_ratio` (bot / that floor) is what the bot's own code
costs beyond the work; `single_conn_io_share` (that floor / bare Bolt) is what the work costs.

Last line: {"bench": "ack", ..., "single_conn_ratio": x, "ratio": bot p50 / floor p50}.
Targets: p99 < 100 ms, ratio <= 1.5, single_conn_ratio <= 1.3.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._load import bot_command, post_all

REPO_ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-signing-secret"
TOKEN = "xoxb-bench"
OPEN_INCIDENTS = 50
SINGLE_CHUNK = 50  # one-connection requests per turn, floor and bot taking turns


@dataclass
class RunResult:
    name: str
    latencies: list[float]  # seconds
    elapsed: float
    errors: int

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.latencies) * 1000

    @property
    def p99_ms(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.elapsed


def pool(results: list[RunResult]) -> RunResult:
    """Every round's requests as one run (p99 over all of them)."""
    return RunResult(
        results[0].name,
        [x for r in results for x in r.latencies],
        sum(r.elapsed for r in results),
        sum(r.errors for r in results),
    )


# -- the floor: a bare Bolt app ----------------------------------------------------------------


def serve_floor(
    port: int, workers: int, *, process_before_response: bool, same_work: bool = False
) -> None:
    """Run the bare Bolt app under the same gunicorn configuration as the bot."""
    from slack_bolt import App
    from slack_bolt.adapter.wsgi import SlackRequestHandler
    from slack_sdk import WebClient

    from bot.server import GunicornServer, gunicorn_options

    def load() -> Any:
        client = WebClient(token=TOKEN, base_url=os.environ["INCIDENT_BOT_SLACK_API_URL"])
        app = App(
            client=client,
            signing_secret=SECRET,
            process_before_response=process_before_response,
        )
        if same_work:  # opened here, in each worker: LMDB handles never cross a fork
            work = _same_work(os.environ["DATABASE_URL"].removeprefix("sqlite:///"))
            app.command("/incident")(work)
            return SlackRequestHandler(app)

        @app.command("/incident")
        def only_ack(ack: Any) -> None:
            ack()

        return SlackRequestHandler(app)

    GunicornServer(
        load, options=gunicorn_options(host="127.0.0.1", port=port, workers=workers)
    ).run()


def _same_work(db_path: str) -> Any:
    """The same-work floor's listener: the answer's I/O written plainly (see the docstring)."""
    import sqlite3
    import threading

    import lmdb

    env = lmdb.open(
        f"{db_path}-floor-seen.lmdb", subdir=False, map_size=1 << 30, max_dbs=2, sync=False
    )
    keys, by_time = env.open_db(b"keys"), env.open_db(b"by_time")
    local = threading.local()  # one sqlite3 connection per server thread
    padding = "x" * 560  # the bot's status reply is about this size

    def answer(ack: Any, command: dict[str, Any], request: Any) -> None:
        signature = request.headers["x-slack-signature"][0].encode()
        stamp = int(time.time()).to_bytes(8, "big")
        with env.begin(write=True) as txn:
            if txn.put(signature, stamp, db=keys, overwrite=False):
                txn.put(stamp + signature, b"", db=by_time)
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = sqlite3.connect(db_path, isolation_level=None)
        number = int(command["text"].rsplit("-", 1)[1])
        row = conn.execute(
            "SELECT number, status, severity, title FROM incidents WHERE number = ?", (number,)
        ).fetchone()
        text = f"INC-{row[0]}: {row[1]}, {row[2]}"
        block = {"type": "section", "text": {"type": "mrkdwn", "text": f"{row[3]} {padding}"}}
        ack(text=text, blocks=[block], response_type="ephemeral")

    return answer


# -- set-up ------------------------------------------------------------------------------------


def floor_argv(port: int, workers: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bench.ack",
        "--serve-floor",
        str(port),
        "--workers",
        str(workers),
        *extra,
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def seed_database(db_url: str) -> None:
    from bot.clock import SystemClock
    from commands.incidents import open_incident
    from storage.db import Database
    from storage.migrate import upgrade

    upgrade(db_url)
    database = Database(db_url, clock=SystemClock())
    with database.session() as session:
        for n in range(OPEN_INCIDENTS):
            severity = ("low", "medium", "high", "critical")[n % 4]
            open_incident(
                session=session,
                title=f"Finding {n} on i-{n:017x}",
                created_by="U0BENCH",
                severity=severity,
                channel_id="C0INCIDENT",
            )
    database.dispose()


def start_server(argv: list[str], env: dict[str, str], port: int, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        argv, cwd=REPO_ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited {proc.returncode}:\n{log.read_text()}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/healthz")
            conn.getresponse().read()
            conn.close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"server on port {port} did not start:\n{log.read_text()}")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


# -- load ----------------------------------------------------------------------------------------


_BATCHES = itertools.count()


def signed_requests(count: int) -> list[tuple[bytes, dict[str, str]]]:
    from tests.slack_signing import signed_headers, slash_command_body

    batch = next(_BATCHES)
    rng = random.Random(7 + batch)
    out = []
    for n in range(count):
        # Each request its own trigger_id, as from Slack (the bot refuses an exact repeat of a
        # signed request as a replay, reads included): batches signed in the same second
        # would otherwise repeat each other's requests.
        body = slash_command_body(
            "/incident",
            f"status INC-{rng.randint(1, OPEN_INCIDENTS)}",
            channel_id="C0INCIDENT",
            trigger_id=f"{batch}.{n}.{rng.randrange(10**12)}.bench",
        )
        out.append((body.encode(), signed_headers(SECRET, body)))
    return out


def run_load(
    name: str,
    port: int,
    requests: list[tuple[bytes, dict[str, str]]],
    concurrency: int,
    *,
    expect: bytes | None,
) -> RunResult:
    result = post_all(
        port=port,
        path="/slack/events",
        requests=requests,
        concurrency=concurrency,
        accept=lambda status, data: status == 200 and (expect is None or expect in data),
        timeout=30,
    )
    return RunResult(name, result.latencies, result.elapsed, result.errors)


# -- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ack", description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--single", type=int, default=500, help="one-connection requests")
    parser.add_argument("--serve-floor", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--strict", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--same-work", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_floor:
        serve_floor(
            args.serve_floor,
            args.workers,
            process_before_response=args.strict,
            same_work=args.same_work,
        )
        return 0

    sys.path.insert(0, str(REPO_ROOT))
    from tests.slack_fake import FakeSlack

    with tempfile.TemporaryDirectory() as tmp, FakeSlack() as slack:
        slack.add_channel("C0INCIDENT", name="incidents")
        slack.add_user("W111", name="primary-owner")
        db_url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        seed_database(db_url)
        config = Path(tmp) / "incident-bot.yml"
        config.write_text("slack:\n  incident_channel: C0INCIDENT\n")
        env = {
            **os.environ,
            "SLACK_BOT_TOKEN": TOKEN,
            "SLACK_SIGNING_SECRET": SECRET,
            "INCIDENT_BOT_SLACK_API_URL": slack.base_url,
            "DATABASE_URL": db_url,
            "INCIDENT_BOT_CONFIG": str(config),
            "PYTHONPATH": str(REPO_ROOT),
        }
        env.pop("SLACK_APP_TOKEN", None)
        ports = {name: free_port() for name in ("bot", "default", "floor", "same")}
        servers = {
            "bot": bot_command(port=ports["bot"], workers=args.workers),
            # bare Bolt with Bolt's defaults, and with the bot's process_before_response=True
            "default": floor_argv(ports["default"], args.workers),
            "floor": [*floor_argv(ports["floor"], args.workers), "--strict"],
            # the same-work floor: one connection only
            "same": [*floor_argv(ports["same"], args.workers), "--strict", "--same-work"],
        }
        procs = {}
        runs: dict[str, list[RunResult]] = {name: [] for name in ("default", "floor", "bot")}
        single: dict[str, list[RunResult]] = {"floor": [], "same": [], "bot": []}
        try:
            for name, argv_ in servers.items():
                procs[name] = start_server(argv_, env, ports[name], Path(tmp) / f"{name}.log")
            warm = signed_requests(200)
            for name in servers:
                run_load(f"warm-{name}", ports[name], warm, args.concurrency, expect=None)
            for _ in range(args.rounds):
                for name in ("default", "floor", "bot"):
                    load = signed_requests(args.requests)
                    expect = b"INC-" if name == "bot" else None
                    runs[name].append(
                        run_load(name, ports[name], load, args.concurrency, expect=expect)
                    )
                loads = {name: signed_requests(args.single) for name in single}
                for chunk in range(0, args.single, SINGLE_CHUNK):
                    # Short turns, each server first in turn: a slow spell of the machine
                    # lands on every server rather than on one server's whole batch.
                    turn = chunk // SINGLE_CHUNK % len(single)
                    names = list(single)
                    for name in names[turn:] + names[:turn]:
                        part = loads[name][chunk : chunk + SINGLE_CHUNK]
                        expect = None if name == "floor" else b"INC-"
                        single[name].append(
                            run_load(f"{name}-1", ports[name], part, 1, expect=expect)
                        )
        finally:
            for proc in procs.values():
                stop_server(proc)

    best = {name: sorted(rs, key=lambda r: r.p50_ms)[len(rs) // 2] for name, rs in runs.items()}
    pooled = {name: pool(rs) for name, rs in runs.items()}
    one = {name: pool(rs) for name, rs in single.items()}
    for r in (*runs["default"], *runs["floor"], *runs["bot"], *one.values()):
        print(
            f"{r.name:7s} n={len(r.latencies)} errors={r.errors} p50={r.p50_ms:.1f}ms "
            f"p99={r.p99_ms:.1f}ms rps={r.rps:.0f}"
        )
    errors = sum(r.errors for rs in (*runs.values(), *single.values()) for r in rs)
    bot, floor, default = best["bot"], best["floor"], best["default"]
    result = {
        "bench": "ack",
        "requests": args.requests,
        "concurrency": args.concurrency,
        "workers": args.workers,
        "rounds": args.rounds,
        "open_incidents": OPEN_INCIDENTS,
        "p50_ms": round(bot.p50_ms, 2),
        "p99_ms": round(pooled["bot"].p99_ms, 2),  # pooled over every round's requests
        "rps": round(bot.rps, 1),
        # floor: the bare Bolt app with the bot's Bolt settings (process_before_response=True)
        "floor_p50_ms": round(floor.p50_ms, 2),
        "floor_p99_ms": round(pooled["floor"].p99_ms, 2),
        "floor_rps": round(floor.rps, 1),
        # default floor: the same bare app with Bolt's defaults (FIELD-NOTES' reference floor)
        "default_floor_p50_ms": round(default.p50_ms, 2),
        "default_floor_p99_ms": round(pooled["default"].p99_ms, 2),
        "default_floor_rps": round(default.rps, 1),
        "ratio_vs_default_floor": round(bot.p50_ms / default.p50_ms, 3),
        # one connection, pooled over the rounds
        "single_conn_requests": args.single * args.rounds,
        "single_conn_p50_ms": round(one["bot"].p50_ms, 3),
        "single_conn_p99_ms": round(one["bot"].p99_ms, 3),
        "single_conn_floor_p50_ms": round(one["floor"].p50_ms, 3),
        "single_conn_floor_p99_ms": round(one["floor"].p99_ms, 3),
        "single_conn_p99_ratio": round(one["bot"].p99_ms / one["floor"].p99_ms, 3),
        "single_conn_ratio": round(one["bot"].p50_ms / one["floor"].p50_ms, 3),
        # the same-work floor (one connection): the answer's I/O written plainly
        "single_conn_same_work_p50_ms": round(one["same"].p50_ms, 3),
        "single_conn_same_work_ratio": round(one["bot"].p50_ms / one["same"].p50_ms, 3),
        "single_conn_io_share": round(one["same"].p50_ms / one["floor"].p50_ms, 3),
        "errors": errors,
        "ratio": round(bot.p50_ms / floor.p50_ms, 3),
    }
    print(json.dumps(result))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
