"""POST /slack/events at the edge: garbage, forged and replayed requests over real HTTP."""

from __future__ import annotations

import logging
import socket
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import lmdb
import pytest
import requests
from sqlalchemy import event, func, select

from storage.models import Cursor, Incident, TimelineEvent
from tests.bot.conftest import SECRET, BotUnderTest
from tests.slack_signing import JSON, event_callback_body, signed_headers, slash_command_body


def count(bot: BotUnderTest, model: type) -> int:
    with bot.session() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def raw_post(url: str, head: list[tuple[str, str]], body: bytes) -> tuple[int, bytes]:
    """A request with exactly these header lines (requests cannot repeat a header)."""
    parts = urlsplit(url)
    lines = [f"POST {parts.path} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in head]
    lines.append(f"Content-Length: {len(body)}")
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.partition(b"\r\n\r\n")[2]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("{", JSON),
        ("payload=%7Bgarbage", "application/x-www-form-urlencoded"),
        ("[1, 2]", JSON),
    ],
)
def test_unsigned_garbage_is_refused_with_401(
    bot: BotUnderTest, body: str, content_type: str
) -> None:
    response = requests.post(
        bot.sender.url, data=body, headers={"Content-Type": content_type}, timeout=5
    )
    assert response.status_code == 401
    assert "Traceback" not in response.text
    assert count(bot, Incident) == 0


def test_malformed_timestamps_are_refused_with_401(bot: BotUnderTest) -> None:
    body = slash_command_body(text="open nope")
    good = signed_headers(SECRET, body)
    abc = {**good, "X-Slack-Request-Timestamp": "abc"}
    assert requests.post(bot.sender.url, data=body, headers=abc, timeout=5).status_code == 401
    ts = good["X-Slack-Request-Timestamp"]
    twice = [
        ("Content-Type", good["Content-Type"]),
        ("X-Slack-Request-Timestamp", ts),
        ("X-Slack-Request-Timestamp", ts),
        ("X-Slack-Signature", good["X-Slack-Signature"]),
    ]
    status, answer = raw_post(bot.sender.url, twice, body.encode())
    assert status == 401, answer
    assert count(bot, Incident) == 0


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("{", JSON),
        ("[1, 2]", JSON),
        ("payload=%7Bgarbage", "application/x-www-form-urlencoded"),
        ("payload=%5B1%2C2%5D", "application/x-www-form-urlencoded"),
    ],
)
def test_signed_garbage_is_a_400_not_a_500(bot: BotUnderTest, body: str, content_type: str) -> None:
    response = bot.sender.post(body, content_type=content_type)
    assert response.status_code == 400, response.text
    assert response.json() == {"ok": False, "error": "bad_request"}


def test_a_replayed_open_opens_one_incident(bot: BotUnderTest) -> None:
    body = slash_command_body(text="open Replayed miner", response_url=bot.slack.response_url("r"))
    headers = signed_headers(SECRET, body)
    first = requests.post(bot.sender.url, data=body, headers=headers, timeout=5)
    assert first.status_code == 200
    bot.idle()
    again = requests.post(bot.sender.url, data=body, headers=headers, timeout=5)
    assert again.status_code == 200  # acknowledged, so the sender stops; nothing is done
    bot.idle()
    assert count(bot, Incident) == 1
    assert len(bot.slack.calls_for("response_url")) == 1


def test_a_replayed_note_is_recorded_once(bot: BotUnderTest) -> None:
    assert bot.command("open Disk full").status_code == 200
    bot.idle()
    body = slash_command_body(text="note INC-1 saw it twice?")
    headers = signed_headers(SECRET, body)
    for _ in range(3):
        assert requests.post(bot.sender.url, data=body, headers=headers, timeout=5).ok
    bot.idle()
    with bot.session() as session:
        notes = session.scalars(
            select(TimelineEvent.summary).where(TimelineEvent.summary.contains("saw it twice"))
        ).all()
    assert len(notes) == 1, notes


def signature_rows(bot: BotUnderTest) -> int:
    from bot import http

    return len(bot.runtime.database.seen_requests().keys(http.REPLAY_PREFIX))


def replayed(bot: BotUnderTest, text: str, times: int = 2) -> list[requests.Response]:
    """The same signed `/incident <text>` request sent `times` times, as a replayer would."""
    body = slash_command_body(text=text, response_url=bot.slack.response_url("replay"))
    headers = signed_headers(SECRET, body)
    answers = []
    for _ in range(times):
        answers.append(requests.post(bot.sender.url, data=body, headers=headers, timeout=5))
        bot.idle()
    return answers


def test_an_answer_in_the_ack_says_once_that_it_is_json(bot: BotUnderTest) -> None:
    """Bolt names its header `content-type`; the edge once added its own `Content-Type:
    text/plain` beside it, and Slack would have had two types to choose from."""
    import http.client

    assert bot.command("open Typed answer").status_code == 200
    bot.idle()
    body = slash_command_body(text="status INC-1")
    url = urlsplit(bot.sender.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=5)
    try:
        conn.request("POST", url.path, body=body, headers=signed_headers(SECRET, body))
        response = conn.getresponse()
        answer = response.read()
    finally:
        conn.close()
    types = [v for k, v in response.getheaders() if k.lower() == "content-type"]
    assert types == ["application/json;charset=utf-8"]
    assert b"INC-1" in answer


def test_a_replayed_read_is_recognised_and_answers_nothing(bot: BotUnderTest) -> None:
    """A read changes nothing, but its answer is the incident as it stands now: a captured
    signed `/incident status` replayed inside Slack's five minutes gets an empty 200, not
    the current status, and its follow-ups (a long timeline's upload) run once."""
    from storage.timeline import append_event

    assert bot.command("open Replayed read").status_code == 200
    bot.idle()
    rows = signature_rows(bot)
    first, again = replayed(bot, "status INC-1")
    assert first.json()["text"] == "INC-1: open, medium"
    assert again.status_code == 200 and again.content == b""
    assert signature_rows(bot) == rows + 1
    with bot.runtime.database.session() as session:
        incident = session.scalars(select(Incident)).one()
        for n in range(25):
            append_event(
                session=session, incident=incident, actor="W111", kind="note", summary=f"{n}"
            )
    first, *again = replayed(bot, "timeline INC-1", times=3)
    assert "latest 20 of" in first.text
    assert all(a.status_code == 200 and a.content == b"" for a in again)
    assert len(bot.slack.calls_for("files.completeUploadExternal")) == 1


def test_a_signed_request_is_remembered_beside_the_database_not_in_it(
    bot: BotUnderTest,
) -> None:
    """The replay check writes to the `-seen.lmdb` file beside a SQLite database: a write to
    the database itself would cost every other connection its page cache on each ack."""
    from bot import http
    from storage.db import sqlite_file

    signed_at = time.time()  # Slack signs on the wall clock; the window is checked on it
    assert bot.command("open Signature row").status_code == 200
    bot.idle()
    seen = bot.runtime.database.seen_requests().keys(http.REPLAY_PREFIX)
    assert len(seen) == 1
    assert int(signed_at) <= next(iter(seen.values())) <= time.time()
    path = sqlite_file(bot.runtime.database.engine.url)
    assert path is not None and Path(f"{path}-seen.lmdb").is_file()
    with bot.session() as session:
        names = session.scalars(select(Cursor.name)).all()
    assert not [n for n in names if n.startswith(("seen:", http.REPLAY_PREFIX))], names


def test_a_replay_is_recognised_by_another_process(bot_factory) -> None:
    """Two app instances on one database (two replicas): the second refuses the first's."""
    one = bot_factory()
    two = bot_factory()
    body = slash_command_body(text="open Across replicas", response_url=one.slack.response_url("x"))
    headers = signed_headers(SECRET, body)
    assert requests.post(one.sender.url, data=body, headers=headers, timeout=5).ok
    one.idle()
    assert requests.post(two.sender.url, data=body, headers=headers, timeout=5).ok
    two.idle()
    assert count(one, Incident) == 1


def test_a_failed_signature_never_logs_the_body(
    bot: BotUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    body = slash_command_body(
        text="open leak", response_url="https://hooks.slack.com/commands/T1/secret-hook"
    )
    caplog.set_level(logging.DEBUG)
    forged = signed_headers("not-the-secret", body)
    response = requests.post(bot.sender.url, data=body, headers=forged, timeout=5)
    assert response.status_code == 401
    time.sleep(0.05)
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "secret-hook" not in logged
    assert "verification_token" not in logged
    assert "invalid X-Slack-Signature" in logged


@contextmanager
def writes_fail(bot: BotUnderTest, message: str = "database or disk is full") -> Iterator[None]:
    """Every INSERT/UPDATE/DELETE fails as SQLite does on a full disk (reads still work)."""
    engine = bot.runtime.database._engine

    def refuse(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
            raise sqlite3.OperationalError(message)

    event.listen(engine, "before_cursor_execute", refuse)
    try:
        yield
    finally:
        event.remove(engine, "before_cursor_execute", refuse)


def test_a_failed_write_is_not_said_to_be_recorded_and_shows_no_sql(bot: BotUnderTest) -> None:
    assert bot.command("open Disk full").status_code == 200
    bot.idle()
    with writes_fail(bot):
        response = bot.command(
            "note INC-1 the disk is full", response_url=bot.slack.response_url("n")
        )
        assert response.status_code == 200, response.text
        bot.idle()
        answer = bot.slack.wait_for("response_url", lambda c: c.path == "/response/n")
    text = answer.args["text"]
    assert "failed: the database did not accept the change" in text, text
    assert "It could not be recorded on INC-1's timeline either." in text
    assert "recorded on INC-1's timeline." not in text.replace("could not be recorded", "")
    for leak in ("INSERT", "OperationalError", "sqlalchemy", "[SQL"):
        assert leak not in text, text


def test_healthz_is_503_while_writes_fail(bot: BotUnderTest) -> None:
    healthz = f"{bot.url}/healthz"
    assert requests.get(healthz, timeout=5).json() == {"ok": True, "database": "ok"}
    with writes_fail(bot):
        response = requests.get(healthz, timeout=5)
    assert response.status_code == 503
    assert response.json() == {"ok": False, "database": "not writable"}
    assert requests.get(healthz, timeout=5).status_code == 200


def test_healthz_is_503_while_another_process_holds_the_write_lock(bot: BotUnderTest) -> None:
    holder = sqlite3.connect(bot.runtime.database.url.removeprefix("sqlite:///"))
    try:
        holder.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        response = requests.get(f"{bot.url}/healthz", timeout=10)
        assert response.status_code == 503
        assert time.monotonic() - started < 5  # not the 30 s busy timeout of requests
    finally:
        holder.rollback()
        holder.close()
    assert requests.get(f"{bot.url}/healthz", timeout=5).status_code == 200


def test_slack_retries_of_an_event_already_received_are_acknowledged_once(
    bot: BotUnderTest,
) -> None:
    """Slack re-delivers an event (re-signed, X-Slack-Retry-Num) it thinks failed."""
    home = {"type": "app_home_opened", "user": "W111", "channel": "D0HOME", "tab": "home"}
    body = event_callback_body(home, event_id="Ev0RETRIED")
    assert bot.sender.post(body, content_type=JSON).status_code == 200
    bot.slack.wait_for("views.publish")
    bot.idle()
    for retry in ("1", "2"):
        again = bot.sender.post(
            body,
            content_type=JSON,
            headers={"X-Slack-Retry-Num": retry, "X-Slack-Retry-Reason": "http_timeout"},
        )
        assert again.status_code == 200
    bot.idle()
    assert len(bot.slack.calls_for("views.publish")) == 1
    # Another event is still handled.
    assert bot.sender.event(home).status_code == 200
    bot.idle()
    assert len(bot.slack.calls_for("views.publish")) == 2


def test_signatures_past_the_window_are_pruned_off_the_ack_path(bot: BotUnderTest) -> None:
    """Every _UPKEEP_EVERY-th signature hands the upkeep to the background pool; at most
    once a minute that deletes the keys past the window. A replay inside it is still refused."""
    import datetime as dt

    from bot import http

    runtime = bot.runtime
    now = runtime.clock.now()
    old = now - dt.timedelta(seconds=5 * http.SIGNATURE_WINDOW)
    assert http.remember(runtime, http.REPLAY_PREFIX + "v0=old", old)
    assert http.remember(runtime, http.REPLAY_PREFIX + "v0=new", now)
    assert not http.remember(runtime, http.REPLAY_PREFIX + "v0=new", now)  # a replay
    http._ReplayState.inserts = 0  # the next insert hands over the upkeep...
    http._ReplayState.pruned_at = int(now.timestamp()) - 30  # ...which pruned 30 s ago
    assert http.remember(runtime, http.REPLAY_PREFIX + "v0=newer", now)
    bot.idle()
    assert len(runtime.database.seen_requests().keys(http.REPLAY_PREFIX)) == 3  # not yet
    http._ReplayState.inserts = 0
    http._ReplayState.pruned_at = int(now.timestamp()) - http._PRUNE_SECONDS
    assert http.remember(runtime, http.REPLAY_PREFIX + "v0=newest", now)
    bot.idle()
    names = set(runtime.database.seen_requests().keys(http.REPLAY_PREFIX))
    assert names == {http.REPLAY_PREFIX + f"v0={n}" for n in ("new", "newer", "newest")}
    assert not http.remember(runtime, http.REPLAY_PREFIX + "v0=newer", now)


def test_a_store_that_cannot_write_lets_requests_through_and_says_so(
    bot: BotUnderTest, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The replay check fails open: a full or broken `-seen.lmdb` file must not refuse every
    Slack request (the incident's own writes still fail loudly if the disk is the problem)."""
    from storage import seen_requests

    monkeypatch.setattr(seen_requests, "MAP_SIZE", 256 * 1024)  # opened by the first request
    assert bot.command("open Disk trouble").status_code == 200
    bot.idle()
    store = bot.runtime.database.seen_requests()
    n = 0
    with pytest.raises(lmdb.MapFullError):  # as a full disk or a storm past its size would
        while n < 100_000:
            store.add(f"filler:{n:09d}", seen=1)
            n += 1
    with caplog.at_level(logging.WARNING, logger="bot.http"):
        answer = bot.command("status INC-1")
    assert answer.status_code == 200 and answer.json()["text"] == "INC-1: open, medium"
    assert "replay check skipped" in caplog.text
