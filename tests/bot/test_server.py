"""`incident-bot run --http` for real: gunicorn in a subprocess, signed requests over HTTP,
the fake Slack, and SIGTERM with work in flight."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, text

from tests.bot.conftest import SECRET, TOKEN, write_config
from tests.slack_fake import FakeSlack
from tests.slack_signing import REPO_ROOT, SlackSender, signed_headers, slash_command_body


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Served:
    proc: subprocess.Popen
    url: str
    sender: SlackSender
    db_url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text()

    def count(self, sql: str) -> int:
        engine = create_engine(self.db_url)
        try:
            with engine.connect() as conn:
                return int(conn.execute(text(sql)).scalar_one())
        finally:
            engine.dispose()


def start_bot(tmp_path: Path, slack: FakeSlack, *extra_env: tuple[str, str]) -> Served:
    port = free_port()
    db_url = f"sqlite:///{tmp_path / 'served.db'}"
    env = {
        **os.environ,
        "SLACK_BOT_TOKEN": TOKEN,
        "SLACK_SIGNING_SECRET": SECRET,
        "INCIDENT_BOT_SLACK_API_URL": slack.base_url,
        "DATABASE_URL": db_url,
        "INCIDENT_BOT_CONFIG": str(write_config(tmp_path / "served.yml", {})),
        **dict(extra_env),
    }
    env.pop("SLACK_APP_TOKEN", None)
    log = tmp_path / "served.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bot.cli",
            "run",
            "--http",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60  # gunicorn boot on a loaded 2-core CI machine
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"bot exited {proc.returncode}:\n{log.read_text()}")
        try:
            if requests.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except requests.RequestException:  # not listening yet, or the worker still booting
            pass
        time.sleep(0.1)
    else:
        proc.kill()
        raise AssertionError(f"bot never became healthy:\n{log.read_text()}")
    return Served(proc, url, SlackSender(f"{url}/slack/events", SECRET), db_url, log)


@pytest.fixture
def served(tmp_path: Path, fake_slack: FakeSlack) -> Iterator[Served]:
    bot = start_bot(tmp_path, fake_slack)
    yield bot
    if bot.proc.poll() is None:
        bot.proc.kill()
        bot.proc.wait(10)


def test_http_mode_on_gunicorn_serves_signed_commands_and_health(served, fake_slack):
    assert "gthread" in served.output() or "Booting worker" in served.output()
    health = requests.get(f"{served.url}/healthz", timeout=5)
    assert health.json() == {"ok": True, "database": "ok"}

    response = served.sender.command(
        "open Crypto miner on web-3", response_url=fake_slack.response_url("served")
    )
    assert response.status_code == 200
    card = fake_slack.wait_for("chat.postMessage", lambda c: "blocks" in c.args, timeout=10)
    assert card.args["channel"] == "C0INCIDENT"
    fake_slack.wait_for("response_url", timeout=10)
    assert served.count("SELECT count(*) FROM incidents WHERE card_ts IS NOT NULL") == 1

    status = served.sender.command("status INC-1")
    assert status.json()["text"].startswith("INC-1: open, medium")


def test_http_mode_refuses_bad_signatures(served, fake_slack):
    body = slash_command_body(text="open nope")
    stale = signed_headers(SECRET, body, timestamp=int(time.time()) - 600)
    for headers in (
        {"Content-Type": "application/x-www-form-urlencoded"},
        signed_headers("wrong", body),
        stale,
    ):
        response = requests.post(served.sender.url, data=body, headers=headers, timeout=5)
        assert response.status_code == 401
    assert served.count("SELECT count(*) FROM incidents") == 0


def test_sigterm_finishes_in_flight_work_then_exits(served, fake_slack):
    fake_slack.delay("chat.postMessage", 1.5)  # the card post is slow: still running at SIGTERM
    response = served.sender.command(
        "open Slow Slack during deploy", response_url=fake_slack.response_url("slow")
    )
    assert response.status_code == 200
    # The job has started: the incident row is committed, the card post waits on slow Slack.
    deadline = time.monotonic() + 10
    while served.count("SELECT count(*) FROM incidents") == 0:
        assert time.monotonic() < deadline, served.output()
        time.sleep(0.02)
    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(timeout=30) == 0, served.output()
    # The open finished before the worker exited: card posted and recorded, user told.
    assert served.count("SELECT count(*) FROM incidents WHERE card_ts IS NOT NULL") == 1
    assert fake_slack.calls_for("response_url")
    assert served.count("SELECT count(*) FROM timeline_events WHERE kind = 'bot.interrupted'") == 0


def test_run_without_signing_secret_in_http_mode_exits_2(tmp_path, fake_slack):
    env = {
        **os.environ,
        "SLACK_BOT_TOKEN": TOKEN,
        "INCIDENT_BOT_SLACK_API_URL": fake_slack.base_url,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
        "INCIDENT_BOT_CONFIG": str(write_config(tmp_path / "x.yml", {})),
        "SLACK_APP_TOKEN": "xapp-1-test",
    }
    env.pop("SLACK_SIGNING_SECRET", None)
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "run", "--http", "--port", str(free_port())],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "SLACK_SIGNING_SECRET" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_chunked_body_is_read_not_taken_as_empty(served, fake_slack):
    body = slash_command_body(text="open Chunked miner", response_url=fake_slack.response_url("c"))
    headers = signed_headers(SECRET, body)
    halves = iter([body[:40].encode(), body[40:].encode()])  # a generator: requests chunks it
    response = requests.post(served.sender.url, data=halves, headers=headers, timeout=10)
    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    assert response.status_code == 200, response.text
    fake_slack.wait_for("response_url", timeout=10)
    assert served.count("SELECT count(*) FROM incidents") == 1


def test_idle_half_open_clients_cannot_starve_the_server(served, fake_slack):
    """120 clients that send part of a request and stop (more than the worker's 24 threads)
    while signed commands and /healthz keep being answered within a second each."""
    host, port = served.url.removeprefix("http://").split(":")
    idle: list[socket.socket] = []
    try:
        for n in range(120):
            sock = socket.create_connection((host, int(port)), timeout=5)
            if n % 2:  # the head, then half the announced body
                sock.sendall(
                    b"POST /slack/events HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
                    + b"a" * 50
                )
            else:  # half a head
                sock.sendall(b"POST /guardduty/events HTTP/1.1\r\nHost: x\r\nContent-Le")
            idle.append(sock)
        time.sleep(0.5)  # let the worker take them all in
        for _ in range(10):
            started = time.monotonic()
            assert requests.get(f"{served.url}/healthz", timeout=1).status_code == 200
            status = served.sender.post(slash_command_body(text="list"), timeout=1)
            assert status.status_code == 200, status.text
            assert time.monotonic() - started < 1.0
        # They are still open: nothing above was answered by waiting them out.
        idle[0].setblocking(False)
        with pytest.raises(BlockingIOError):
            idle[0].recv(1)
    finally:
        for sock in idle:
            sock.close()


def test_a_client_waiting_for_100_continue_gets_it_before_sending_the_body(served):
    """curl and other clients hold a body back until the server says 100 Continue."""
    body = slash_command_body(text="list").encode()
    headers = signed_headers(SECRET, body)
    host, port = served.url.removeprefix("http://").split(":")
    head = (
        "POST /slack/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\nExpect: 100-continue\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        + f"Content-Length: {len(body)}\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=1) as sock:
        sock.sendall(head.encode())
        assert sock.recv(64).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
