"""A fake Slack Web API server for tests.

It listens on an ephemeral 127.0.0.1 port, records every call thread-safely and answers the
way Slack does (``ok``, ``ts``, ``channel``, ``message``, Slack's error codes), including the
checks that make Slack reject a message: unknown channels, missing text, over-long text and
Block Kit limits. It also serves ``response_url`` posts and the file-upload flow of
``WebClient.files_upload_v2`` (getUploadURLExternal -> upload URL -> completeUploadExternal).

Usage::

    with FakeSlack() as slack:
        slack.add_channel("C0INCIDENT", name="incidents")
        client = WebClient(token="xoxb-test", base_url=slack.base_url)
        client.chat_postMessage(channel="C0INCIDENT", text="hi")
        call = slack.wait_for("chat.postMessage")

Socket Mode: `apps.connections.open` (with an app-level token) hands out a ws:// URL on the
same port; `socket_send(envelope)` pushes an envelope to the connected client and each
envelope the client acknowledges is recorded as a "socket_ack" call.

Tests can make the next N calls of a method answer 429 with ``Retry-After``
(``rate_limit``), fail with a Slack error (``fail_next``), slow a method down (``delay``),
or enforce Slack's one message per second per channel (``channel_rate_limit``).

Slack's manners: ``slack.realistic()`` (or ``FakeSlack(manners=SLACK_MANNERS)``) turns on, in
one call, what a real workspace does to a busy app: every call answers after ~150 ms (with
jitter), chat.postMessage is held to about one per second per channel (short bursts
allowed), the tiered methods (chat.update is Tier 3: about 50 per minute per method per
workspace) to their published rates, and past them Slack answers 429 with ``Retry-After``.
``unhandled_429s()`` lists the rate-limited calls a client got wrong: retried before its
Retry-After passed, or never followed by a successful call for the same message. Benches run
with it; plain unit tests keep an instant Slack so the suite stays fast.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import math
import random
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

# Arguments that slack_sdk sends as JSON strings when it uses a form body.
_JSON_ARGS = ("blocks", "attachments", "view", "files", "metadata")

# Slack's documented limits (Block Kit reference, chat.postMessage, conversations.create).
MAX_TEXT = 40_000
MAX_MESSAGE_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
MAX_SECTION_TEXT = 3_000
MAX_SECTION_FIELDS = 10
MAX_FIELD_TEXT = 2_000
MAX_HEADER_TEXT = 150
MAX_CONTEXT_ELEMENTS = 10
MAX_ACTIONS_ELEMENTS = 25
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2_000
MAX_ACTION_ID = 255
MAX_BLOCK_ID = 255
MAX_VIEW_TITLE = 24
MAX_CHANNEL_NAME = 80
_CHANNEL_NAME_RE = re.compile(r"^[a-z0-9_\-]+$")

# Slack's published rate-limit tiers (api.slack.com/docs/rate-limits): calls per minute, per
# method per workspace. chat.postMessage is "special": about one per second per channel.
TIER_PER_MINUTE = {1: 1, 2: 20, 3: 50, 4: 100}
METHOD_TIERS = {
    "chat.update": 3,
    "chat.delete": 3,
    "chat.getPermalink": 4,
    "chat.postEphemeral": 4,
    "conversations.create": 2,
    "conversations.info": 3,
    "conversations.invite": 3,
    "conversations.replies": 3,
    "usergroups.list": 2,
    "users.info": 4,
    "views.open": 4,
    "views.publish": 4,
    "views.update": 4,
    "files.getUploadURLExternal": 4,
    "files.completeUploadExternal": 4,
}


@dataclass(frozen=True)
class SlackManners:
    """How a real Slack answers a busy app: latency, and the rate limits past which it 429s."""

    latency: float = 0.150  # seconds before each Web API answer...
    jitter: float = 0.050  # ...plus or minus up to this much (uniform)
    posts_per_second: float = 1.0  # chat.postMessage per channel
    post_burst: int = 3  # posts a quiet channel takes at once ("short bursts")
    tier_per_minute: tuple[tuple[int, int], ...] = tuple(TIER_PER_MINUTE.items())
    tier_burst_seconds: float = 6.0  # a quiet method takes this many seconds' worth at once
    seed: int = 17


SLACK_MANNERS = SlackManners()


class _Bucket:
    """A token bucket: `rate` per second, at most `burst` saved up."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = max(1.0, burst)
        self.tokens = self.burst
        self.at = time.monotonic()

    def take(self) -> float:
        """0 when a token was taken; else the whole seconds to wait (Slack's Retry-After)."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return float(max(1, math.ceil((1.0 - self.tokens) / self.rate)))


BOT_USER_ID = "U0INCBOT"
BOT_ID = "B0INCBOT"
TEAM_ID = "T111"


@dataclass
class Call:
    """One request the fake received."""

    method: str  # Web API method ("chat.postMessage"), "response_url" or "file_upload"
    args: dict[str, Any]  # JSON body or form fields; JSON-valued form fields decoded
    headers: dict[str, str]
    raw_body: bytes
    path: str
    status: int = 200
    response: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)
    retry_after: float | None = None  # a 429's Retry-After, in seconds
    latency: float = 0.0  # seconds the fake waited before answering

    @property
    def ok(self) -> bool:
        return self.status == 200 and bool(self.response.get("ok", True))


@dataclass
class Channel:
    id: str
    name: str
    is_private: bool = False
    members: set[str] = field(default_factory=set)
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)  # ts -> message
    created: int = field(default_factory=lambda: int(time.time()))


class SlackError(Exception):
    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


def _block_errors(blocks: Any, *, max_blocks: int) -> list[str]:
    """The Block Kit limit violations Slack would answer `invalid_blocks` for."""
    if not isinstance(blocks, list):
        return ["blocks must be an array"]
    errors: list[str] = []
    if len(blocks) > max_blocks:
        errors.append(f"must provide an array with no more than {max_blocks} items")
    for i, block in enumerate(blocks):
        where = f"[json-pointer:/blocks/{i}"
        if not isinstance(block, dict) or "type" not in block:
            errors.append(f"missing type {where}]")
            continue
        if len(str(block.get("block_id", ""))) > MAX_BLOCK_ID:
            errors.append(f"block_id too long {where}/block_id]")
        kind = block["type"]
        if kind == "section":
            text = block.get("text")
            if text is None and not block.get("fields"):
                errors.append(f"section needs text or fields {where}]")
            if text is not None and len(text.get("text", "")) > MAX_SECTION_TEXT:
                errors.append(f"must be less than {MAX_SECTION_TEXT + 1} characters {where}/text]")
            fields = block.get("fields") or []
            if len(fields) > MAX_SECTION_FIELDS:
                errors.append(f"no more than {MAX_SECTION_FIELDS} items {where}/fields]")
            for j, f in enumerate(fields):
                if len(f.get("text", "")) > MAX_FIELD_TEXT:
                    errors.append(f"field text too long {where}/fields/{j}]")
            if block.get("accessory"):
                errors.extend(_element_errors(block["accessory"], f"{where}/accessory"))
        elif kind == "header":
            text = block.get("text") or {}
            if text.get("type") != "plain_text":
                errors.append(f"header text must be plain_text {where}/text]")
            if len(text.get("text", "")) > MAX_HEADER_TEXT:
                errors.append(f"must be less than {MAX_HEADER_TEXT + 1} characters {where}/text]")
        elif kind == "context":
            elements = block.get("elements") or []
            if not elements or len(elements) > MAX_CONTEXT_ELEMENTS:
                errors.append(f"context needs 1-{MAX_CONTEXT_ELEMENTS} elements {where}]")
            for j, el in enumerate(elements):
                if len(el.get("text", "")) > MAX_SECTION_TEXT:
                    errors.append(f"context text too long {where}/elements/{j}]")
        elif kind == "actions":
            elements = block.get("elements") or []
            if not elements or len(elements) > MAX_ACTIONS_ELEMENTS:
                errors.append(f"actions needs 1-{MAX_ACTIONS_ELEMENTS} elements {where}]")
            for j, el in enumerate(elements):
                errors.extend(_element_errors(el, f"{where}/elements/{j}"))
    return errors


def _element_errors(el: dict[str, Any], where: str) -> list[str]:
    errors: list[str] = []
    if len(str(el.get("action_id", ""))) > MAX_ACTION_ID:
        errors.append(f"action_id too long {where}]")
    if el.get("type") == "button":
        if len(el.get("text", {}).get("text", "")) > MAX_BUTTON_TEXT:
            errors.append(f"button text too long {where}/text]")
        if len(str(el.get("value", ""))) > MAX_BUTTON_VALUE:
            errors.append(f"button value too long {where}/value]")
    return errors


class _Server(ThreadingHTTPServer):
    # socketserver listens with a backlog of 5: a burst of parallel posts (as Slack takes
    # them) would wait for SYN retransmits of 1 s and 3 s, a delay real Slack never adds.
    request_queue_size = 128


class FakeSlack:
    """A Slack Web API double on a real socket. Use as a context manager or start()/stop()."""

    def __init__(self, *, manners: SlackManners | None = None) -> None:
        self._lock = threading.Condition()
        self.calls: list[Call] = []
        self.channels: dict[str, Channel] = {}
        self.users: dict[str, dict[str, Any]] = {}
        self.usergroups: list[dict[str, Any]] = []
        self.views: dict[str, dict[str, Any]] = {}  # view id -> view (views.open/publish)
        self.home_views: dict[str, dict[str, Any]] = {}  # user id -> published home view
        self.files: dict[str, dict[str, Any]] = {}  # file id -> {"filename","length","content"}
        self._rate_limits: dict[str, list[int]] = {}  # method -> [remaining, retry_after]
        self._failures: dict[str, list[Any]] = {}  # method -> [remaining, error]
        self._channel_rate: tuple[float, float] | None = None  # (per second, burst)
        self._channel_buckets: dict[str, _Bucket] = {}
        self._tier_rates: dict[int, int] = {}  # tier -> calls per minute (off when empty)
        self._tier_burst = 6.0
        self._tier_buckets: dict[str, _Bucket] = {}
        self._delays: dict[str, float] = {}
        self._latency: tuple[float, float] = (0.0, 0.0)  # every method: (mean, jitter)
        self._random = random.Random(0)
        self._sockets: list[_WebSocket] = []  # Socket Mode connections (apps.connections.open)
        self.manners: SlackManners | None = None
        self._seq = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.add_user(BOT_USER_ID, name="incident-bot", is_bot=True)
        if manners is not None:
            self.realistic(manners)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> FakeSlack:
        fake = self

        class Handler(_Handler):
            slack = fake

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fake-slack", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        for ws in list(self._sockets):
            ws.close()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeSlack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "FakeSlack is not started"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """Pass as WebClient(base_url=...) / INCIDENT_BOT_SLACK_API_URL."""
        return f"{self.url}/api/"

    def response_url(self, name: str = "default") -> str:
        """A URL to use as a request's response_url; posts to it are recorded."""
        return f"{self.url}/response/{name}"

    # -- test set-up -----------------------------------------------------------------------

    def add_channel(
        self, channel_id: str, *, name: str | None = None, members: list[str] | None = None
    ) -> Channel:
        with self._lock:
            channel = Channel(
                id=channel_id, name=name or channel_id.lower(), members=set(members or [])
            )
            channel.members.add(BOT_USER_ID)
            self.channels[channel_id] = channel
            return channel

    def add_user(self, user_id: str, *, name: str | None = None, **profile: Any) -> None:
        with self._lock:
            self.users[user_id] = {
                "id": user_id,
                "team_id": TEAM_ID,
                "name": name or user_id.lower(),
                "real_name": profile.pop("real_name", name or user_id),
                "deleted": False,
                "is_bot": profile.pop("is_bot", False),
                "tz": "Etc/UTC",
                "profile": {"display_name": name or user_id, **profile},
            }

    def add_usergroup(self, group_id: str, *, handle: str, users: list[str]) -> None:
        with self._lock:
            self.usergroups.append(
                {
                    "id": group_id,
                    "team_id": TEAM_ID,
                    "handle": handle,
                    "name": handle,
                    "users": list(users),
                    "user_count": len(users),
                }
            )

    def rate_limit(self, method: str, *, times: int, retry_after: int = 1) -> None:
        """Answer the next `times` calls of `method` with 429 and Retry-After."""
        with self._lock:
            self._rate_limits[method] = [times, retry_after]

    def delay(self, method: str, seconds: float) -> None:
        """Answer every call of `method` only after `seconds` (a slow Slack); 0 turns it off."""
        with self._lock:
            self._delays[method] = seconds

    def fail_next(self, method: str, error: str, *, times: int = 1) -> None:
        """Answer the next `times` calls of `method` with {"ok": false, "error": error}."""
        with self._lock:
            self._failures[method] = [times, error]

    def channel_rate_limit(self, per_second: float | None = 1.0, *, burst: int = 1) -> None:
        """Enforce Slack's chat.postMessage limit per channel: `per_second`, with `burst`
        posts at once on a quiet channel (None turns it off)."""
        with self._lock:
            self._channel_rate = None if per_second is None else (per_second, float(burst))
            self._channel_buckets.clear()

    def tier_limits(self, per_minute: dict[int, int] | None, *, burst_seconds: float = 6.0) -> None:
        """Enforce Slack's tiers (`METHOD_TIERS`): calls per minute per method, a quiet method
        taking `burst_seconds` worth at once; past them 429 + Retry-After (None: off)."""
        with self._lock:
            self._tier_rates = dict(per_minute or {})
            self._tier_burst = burst_seconds
            self._tier_buckets.clear()

    def latency(self, seconds: float, *, jitter: float = 0.0) -> None:
        """Answer every call after `seconds` ± up to `jitter` (`delay` overrides per method)."""
        with self._lock:
            self._latency = (seconds, jitter)

    def realistic(self, manners: SlackManners = SLACK_MANNERS) -> SlackManners:
        """Behave like a real workspace under load: see the module docstring. One call."""
        with self._lock:
            self.manners = manners
            self._random = random.Random(manners.seed)
        self.latency(manners.latency, jitter=manners.jitter)
        self.channel_rate_limit(manners.posts_per_second, burst=manners.post_burst)
        self.tier_limits(dict(manners.tier_per_minute), burst_seconds=manners.tier_burst_seconds)
        return manners

    # -- Socket Mode -----------------------------------------------------------------------

    def wait_for_socket(self, timeout: float = 10.0) -> None:
        """Block until a Socket Mode client connected (and got its hello)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not any(ws.open for ws in self._sockets):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no Socket Mode connection within {timeout}s")
                self._lock.wait(remaining)

    def socket_send(self, envelope: dict[str, Any]) -> str:
        """Push an envelope (slash_commands, interactive, events_api) to the client."""
        envelope = {"accepts_response_payload": True, **envelope}
        envelope.setdefault("envelope_id", f"env-{next(self._seq)}")
        with self._lock:
            live = [ws for ws in self._sockets if ws.open]
        if not live:
            raise AssertionError("no Socket Mode client is connected")
        live[-1].send_text(json.dumps(envelope))
        return str(envelope["envelope_id"])

    def _socket_opened(self, ws: _WebSocket) -> None:
        with self._lock:
            self._sockets.append(ws)
            self._lock.notify_all()

    # -- inspection ------------------------------------------------------------------------

    def calls_for(self, method: str, *, ok_only: bool = False) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method == method and (c.ok or not ok_only)]

    def methods(self) -> list[str]:
        with self._lock:
            return [c.method for c in self.calls]

    def wait_for(
        self,
        method: str,
        predicate: Callable[[Call], bool] | None = None,
        timeout: float = 5.0,
        *,
        count: int = 1,
    ) -> Call:
        """Block until `count` calls of `method` matching `predicate` arrived; return the last."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                found = [
                    c
                    for c in self.calls
                    if c.method == method and (predicate is None or predicate(c))
                ]
                if len(found) >= count:
                    return found[count - 1]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [f"{c.method}({c.status})" for c in self.calls]
                    raise AssertionError(
                        f"no {count}x {method} matching within {timeout}s; calls so far: {seen}"
                    )
                self._lock.wait(remaining)

    def messages(self, channel_id: str) -> list[dict[str, Any]]:
        """Current messages of a channel (after any chat.update), oldest first."""
        with self._lock:
            return list(self.channels[channel_id].messages.values())

    def reset_calls(self) -> None:
        with self._lock:
            self.calls.clear()

    def unhandled_429s(
        self, calls: list[Call] | None = None, *, until: float | None = None
    ) -> list[Call]:
        """The 429s a client mishandled: the same message sent again before the Retry-After
        it was given had passed, or never sent successfully afterwards (given up). `until`:
        when the client stopped (a 429 whose wait ran past it was not given up)."""
        with self._lock:
            calls = list(self.calls if calls is None else calls)
        later: dict[tuple[Any, ...], list[Call]] = {}
        for call in calls:
            later.setdefault(_message_identity(call), []).append(call)
        bad: list[Call] = []
        for call in calls:
            if call.status != 429:
                continue
            after = [c for c in later[_message_identity(call)] if c.at > call.at]
            # The client sent it when its answer arrived at `at`; a little slack for clocks.
            early = any(c.at - c.latency < call.at + (call.retry_after or 0) - 0.05 for c in after)
            cut_short = until is not None and call.at + (call.retry_after or 0) + 2.0 > until
            if early or not (cut_short or any(c.ok for c in after)):
                bad.append(call)
        return bad

    def slack_latency_ms(self) -> float:
        """The mean wait the fake put before its Web API answers so far, in ms."""
        with self._lock:
            waits = [c.latency for c in self.calls if c.path.startswith("/api/")]
        return round(1000 * sum(waits) / len(waits), 1) if waits else 0.0

    # -- request handling ------------------------------------------------------------------

    def _record(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)
            self._lock.notify_all()

    def _next_ts(self) -> str:
        return f"{int(time.time())}.{next(self._seq):06d}"

    def _channel(self, ref: Any) -> Channel:
        ref = str(ref or "")
        if ref in self.channels:
            return self.channels[ref]
        name = ref.lstrip("#")
        for channel in self.channels.values():
            if channel.name == name:
                return channel
        if ref in self.users:  # a user id: Slack posts in the app's DM with that user
            dm = f"D{ref}"
            if dm not in self.channels:
                self.channels[dm] = Channel(id=dm, name=dm.lower(), members={ref, BOT_USER_ID})
            return self.channels[dm]
        raise SlackError("channel_not_found")

    def _check_limits(self, method: str) -> tuple[int, dict[str, Any], dict[str, str]] | None:
        with self._lock:
            limit = self._rate_limits.get(method)
            if limit and limit[0] > 0:
                limit[0] -= 1
                return 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(limit[1])}
            failure = self._failures.get(method)
            if failure and failure[0] > 0:
                failure[0] -= 1
                return 200, {"ok": False, "error": failure[1]}, {}
        return None

    def _channel_throttle(self, channel: Channel) -> tuple[int, dict[str, Any], dict[str, str]]:
        """A token bucket per channel, like Slack's 1 msg/s with short bursts."""
        if self._channel_rate is None:
            return 200, {}, {}
        rate, burst = self._channel_rate
        bucket = self._channel_buckets.get(channel.id)
        if bucket is None:
            bucket = self._channel_buckets[channel.id] = _Bucket(rate, burst)
        wait = bucket.take()
        if wait:
            return _ratelimited(wait)
        return 200, {}, {}

    def _tier_throttle(self, method: str) -> tuple[int, dict[str, Any], dict[str, str]] | None:
        with self._lock:
            per_minute = self._tier_rates.get(METHOD_TIERS.get(method, 0))
            if not per_minute:
                return None
            bucket = self._tier_buckets.get(method)
            if bucket is None:
                rate = per_minute / 60.0
                bucket = self._tier_buckets[method] = _Bucket(rate, rate * self._tier_burst)
            wait = bucket.take()
        return _ratelimited(wait) if wait else None

    def pause_for(self, method: str) -> float:
        """Seconds to wait before answering `method` (its `delay`, else the latency)."""
        with self._lock:
            if method in self._delays:
                return self._delays[method]
            mean, jitter = self._latency
            return max(0.0, mean + self._random.uniform(-jitter, jitter)) if mean else 0.0

    def handle_api(
        self, method: str, args: dict[str, Any], headers: dict[str, str]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        limited = self._check_limits(method) or self._tier_throttle(method)
        if limited is not None:
            return limited
        token = args.get("token") or headers.get("authorization", "").removeprefix("Bearer ")
        if not token:
            return 200, {"ok": False, "error": "not_authed"}, {}
        handler = getattr(self, "_api_" + method.replace(".", "_"), None)
        if handler is None:
            return 200, {"ok": False, "error": "unknown_method"}, {}
        try:
            with self._lock:
                result = handler(args)
        except SlackError as e:
            return 200, {"ok": False, "error": e.error, **e.extra}, {}
        if isinstance(result, tuple):
            return result
        return 200, {"ok": True, **result}, {}

    # -- Web API methods (called with the lock held) ----------------------------------------

    def _api_auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": "https://test-workspace.slack.com/",
            "team": "Test Workspace",
            "user": "incident-bot",
            "team_id": TEAM_ID,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    def _api_apps_connections_open(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"url": f"ws://127.0.0.1:{self.port}/link/?ticket=t{next(self._seq)}"}

    def _message_content(self, args: dict[str, Any], *, max_blocks: int) -> dict[str, Any]:
        text = args.get("text")
        blocks = args.get("blocks")
        if not text and not blocks and not args.get("attachments"):
            raise SlackError("no_text")
        if text is not None and len(str(text)) > MAX_TEXT:
            raise SlackError("msg_too_long")
        if blocks is not None:
            errors = _block_errors(blocks, max_blocks=max_blocks)
            if errors:
                raise SlackError("invalid_blocks", errors=errors)
        content: dict[str, Any] = {"text": text or ""}
        if blocks is not None:
            content["blocks"] = blocks
        if isinstance(args.get("metadata"), dict):
            content["metadata"] = args["metadata"]  # conversations.history shows it on request
        return content

    def _api_chat_postMessage(self, args: dict[str, Any]) -> Any:
        channel = self._channel(args.get("channel"))
        content = self._message_content(args, max_blocks=MAX_MESSAGE_BLOCKS)
        thread_ts = args.get("thread_ts")
        if thread_ts and thread_ts not in channel.messages:
            raise SlackError("thread_not_found")
        status, body, hdrs = self._channel_throttle(channel)
        if status != 200:
            return status, body, hdrs
        ts = self._next_ts()
        message = {"type": "message", "user": BOT_USER_ID, "bot_id": BOT_ID, "ts": ts, **content}
        if thread_ts:
            message["thread_ts"] = thread_ts
        channel.messages[ts] = message
        return {"channel": channel.id, "ts": ts, "message": message}

    def _api_chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(args.get("channel"))
        ts = str(args.get("ts") or "")
        if ts not in channel.messages:
            raise SlackError("message_not_found")
        content = self._message_content(args, max_blocks=MAX_MESSAGE_BLOCKS)
        message = channel.messages[ts]
        message.update(content)
        message["edited"] = {"user": BOT_USER_ID, "ts": self._next_ts()}
        return {"channel": channel.id, "ts": ts, "text": message["text"], "message": message}

    def _api_chat_postEphemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(args.get("channel"))
        user = args.get("user")
        if user not in self.users:
            raise SlackError("user_not_found")
        self._message_content(args, max_blocks=MAX_MESSAGE_BLOCKS)
        return {"message_ts": self._next_ts(), "channel": channel.id}

    def _api_conversations_create(self, args: dict[str, Any]) -> dict[str, Any]:
        name = str(args.get("name") or "")
        if not name or len(name) > MAX_CHANNEL_NAME or not _CHANNEL_NAME_RE.match(name):
            raise SlackError("invalid_name_specials" if name else "invalid_name_required")
        if any(c.name == name for c in self.channels.values()):
            raise SlackError("name_taken")
        channel_id = f"C{next(self._seq):08d}"
        channel = Channel(id=channel_id, name=name, members={BOT_USER_ID})
        channel.is_private = str(args.get("is_private", "")).lower() in ("true", "1")
        self.channels[channel_id] = channel
        return {"channel": self._channel_info(channel)}

    def _api_conversations_invite(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._channel(args.get("channel"))
        users = [u for u in str(args.get("users") or "").split(",") if u]
        if not users:
            raise SlackError("no_user")
        unknown = [u for u in users if u not in self.users]
        if unknown:
            raise SlackError("user_not_found")
        if all(u in channel.members for u in users):
            raise SlackError("already_in_channel")
        channel.members.update(users)
        return {"channel": self._channel_info(channel)}

    def _api_conversations_info(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"channel": self._channel_info(self._channel(args.get("channel")))}

    def _api_conversations_replies(self, args: dict[str, Any]) -> dict[str, Any]:
        """The parent then its replies, oldest first, paged like Slack (limit + cursor)."""
        channel = self._channel(args.get("channel"))
        ts = str(args.get("ts") or "")
        if ts not in channel.messages:
            raise SlackError("thread_not_found")
        replies = sorted(
            (m for m in channel.messages.values() if m.get("thread_ts") == ts and m["ts"] != ts),
            key=lambda m: m["ts"],
        )
        thread = [channel.messages[ts], *replies]
        start = int(args.get("cursor") or 0)
        limit = max(1, min(int(args.get("limit") or 100), 1000))
        page = thread[start : start + limit]
        more = start + limit < len(thread)
        meta = {"next_cursor": str(start + limit) if more else ""}
        return {"messages": page, "has_more": more, "response_metadata": meta}

    def _channel_info(self, channel: Channel) -> dict[str, Any]:
        return {
            "id": channel.id,
            "name": channel.name,
            "is_channel": True,
            "is_private": channel.is_private,
            "is_archived": False,
            "is_member": True,
            "created": channel.created,
            "num_members": len(channel.members),
        }

    def _view(self, args: dict[str, Any]) -> dict[str, Any]:
        view = args.get("view")
        if not isinstance(view, dict) or "type" not in view:
            raise SlackError("invalid_arguments")
        errors = _block_errors(view.get("blocks", []), max_blocks=MAX_VIEW_BLOCKS)
        title = (view.get("title") or {}).get("text", "")
        if len(title) > MAX_VIEW_TITLE:
            errors.append("title must be less than 25 characters [json-pointer:/view/title]")
        if errors:
            raise SlackError("invalid_arguments", response_metadata={"messages": errors})
        view_id = f"V{next(self._seq):08d}"
        stored = {**view, "id": view_id, "team_id": TEAM_ID, "hash": self._next_ts()}
        self.views[view_id] = stored
        return stored

    def _api_views_publish(self, args: dict[str, Any]) -> dict[str, Any]:
        user = args.get("user_id")
        if user not in self.users:
            raise SlackError("user_not_found")
        view = self._view(args)
        self.home_views[str(user)] = view
        return {"view": view}

    def _api_views_open(self, args: dict[str, Any]) -> dict[str, Any]:
        if not args.get("trigger_id"):
            raise SlackError("invalid_trigger_id")
        return {"view": self._view(args)}

    def _api_views_update(self, args: dict[str, Any]) -> dict[str, Any]:
        view_id = args.get("view_id")
        if view_id not in self.views:
            raise SlackError("not_found")
        view = self._view(args)
        self.views.pop(view["id"])
        view["id"] = view_id
        self.views[str(view_id)] = view
        return {"view": view}

    def _api_users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        user = self.users.get(str(args.get("user")))
        if user is None:
            raise SlackError("user_not_found")
        return {"user": user}

    def _api_usergroups_list(self, args: dict[str, Any]) -> dict[str, Any]:
        return {"usergroups": list(self.usergroups)}

    def _api_files_getUploadURLExternal(self, args: dict[str, Any]) -> dict[str, Any]:
        filename = args.get("filename")
        length = args.get("length")
        if not filename or length in (None, ""):
            raise SlackError("invalid_arguments")
        file_id = f"F{next(self._seq):08d}"
        self.files[file_id] = {
            "id": file_id,
            "filename": filename,
            "length": int(length),
            "content": None,
        }
        return {"upload_url": f"{self.url}/upload/v1/{file_id}", "file_id": file_id}

    def _api_files_completeUploadExternal(self, args: dict[str, Any]) -> dict[str, Any]:
        entries = args.get("files")
        if not isinstance(entries, list) or not entries:
            raise SlackError("invalid_arguments")
        channel_id = args.get("channel_id")
        channel = self._channel(channel_id) if channel_id else None
        done = []
        for entry in entries:
            stored = self.files.get(entry.get("id"))
            if stored is None or stored["content"] is None:
                raise SlackError("file_not_found")
            stored["title"] = entry.get("title") or stored["filename"]
            stored["channel"] = channel.id if channel else None
            stored["thread_ts"] = args.get("thread_ts")
            stored["initial_comment"] = args.get("initial_comment")
            done.append(
                {
                    "id": stored["id"],
                    "name": stored["filename"],
                    "title": stored["title"],
                    "size": len(stored["content"]),
                }
            )
        return {"files": done}

    def store_upload(self, file_id: str, data: bytes) -> bool:
        with self._lock:
            stored = self.files.get(file_id)
            if stored is None:
                return False
            stored["content"] = data
            return True

    def _api_conversations_history(self, args: dict[str, Any]) -> dict[str, Any]:
        """Top-level messages, newest first, from `oldest` on; metadata only when asked
        for (the card sweep looks for a card whose post went unanswered)."""
        channel = self._channel(args.get("channel"))
        oldest = float(args.get("oldest") or 0)
        with_metadata = str(args.get("include_all_metadata", "")).lower() in ("true", "1")
        found = sorted(
            (
                m
                for m in channel.messages.values()
                if float(m["ts"]) >= oldest and m.get("thread_ts", m["ts"]) == m["ts"]
            ),
            key=lambda m: m["ts"],
            reverse=True,
        )
        limit = max(1, min(int(args.get("limit") or 100), 1000))
        page = [
            m if with_metadata else {k: v for k, v in m.items() if k != "metadata"}
            for m in found[:limit]
        ]
        return {"messages": page, "has_more": len(found) > limit}


class _Handler(BaseHTTPRequestHandler):
    slack: FakeSlack
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass

    def _reply(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        content_type = "text/plain" if isinstance(body, bytes) else "application/json"
        self.send_header("Content-Type", f"{content_type}; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.headers.get("Upgrade", "").lower() == "websocket":
            self._serve_websocket()
            return
        self.do_POST()  # Slack accepts GET for most read methods

    def _serve_websocket(self) -> None:
        key = self.headers.get("Sec-WebSocket-Key", "")
        accept = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()
        self.send_response(101, "Switching Protocols")
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        ws = _WebSocket(self.connection)
        hello = {
            "type": "hello",
            "num_connections": 1,
            "connection_info": {"app_id": "A111"},
            "debug_info": {"host": "fake-slack", "approximate_connection_time": 3600},
        }
        ws.send_text(json.dumps(hello))
        self.slack._socket_opened(ws)
        for message in ws.messages():
            try:
                parsed = json.loads(message)
            except ValueError:
                continue
            self.slack._record(
                Call(
                    method="socket_ack",
                    args=parsed,
                    headers={},
                    raw_body=message.encode(),
                    path="/link/",
                )
            )
        self.close_connection = True

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        path = parts.path
        # An upload's body is the file itself (a PNG is not form data): stored, not parsed.
        is_upload = path.startswith("/upload/v1/")
        args = {} if is_upload else _parse_body(raw, headers.get("content-type", ""))
        args.update({k: v for k, v in parse_qsl(parts.query) if k not in args})

        pause = 0.0
        if path.startswith("/api/"):
            method = path.removeprefix("/api/")
            pause = self.slack.pause_for(method)
            if pause:
                time.sleep(pause)
            status, body, extra = self.slack.handle_api(method, args, headers)
        elif path.startswith("/response/"):
            method, status, extra = "response_url", 200, {}
            body = {"ok": True}
        elif path.startswith("/upload/v1/"):
            method, extra = "file_upload", {}
            stored = self.slack.store_upload(path.removeprefix("/upload/v1/"), raw)
            status = 200 if stored else 404
            body = f"OK - {len(raw)}".encode() if stored else b"not found"
        else:
            method, status, body, extra = "unknown", 404, {"ok": False, "error": "not_found"}, {}

        self.slack._record(
            Call(
                method=method,
                args=args,
                headers=headers,
                raw_body=raw,
                path=path,
                status=status,
                response=body if isinstance(body, dict) else {},
                retry_after=float(extra["Retry-After"]) if "Retry-After" in extra else None,
                latency=pause,
            )
        )
        self._reply(status, body, extra)


_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class _WebSocket:
    """The server end of one RFC 6455 connection: unmasked frames out, masked frames in."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.open = True
        self._send_lock = threading.Lock()

    def _send(self, opcode: int, payload: bytes) -> None:
        header = bytes([0x80 | opcode])
        n = len(payload)
        if n < 126:
            header += bytes([n])
        elif n < 65536:
            header += bytes([126]) + struct.pack("!H", n)
        else:
            header += bytes([127]) + struct.pack("!Q", n)
        with self._send_lock:
            self.sock.sendall(header + payload)

    def send_text(self, text: str) -> None:
        self._send(0x1, text.encode())

    def _recv_exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    def messages(self) -> Iterator[str]:
        """Text messages from the client until it closes; pings are answered."""
        try:
            while self.open:
                first, second = self._recv_exact(2)
                opcode, length = first & 0x0F, second & 0x7F
                if length == 126:
                    length = struct.unpack("!H", self._recv_exact(2))[0]
                elif length == 127:
                    length = struct.unpack("!Q", self._recv_exact(8))[0]
                mask = self._recv_exact(4) if second & 0x80 else b"\0\0\0\0"
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(self._recv_exact(length)))
                if opcode == 0x1:
                    yield payload.decode()
                elif opcode == 0x9:
                    self._send(0xA, payload)
                elif opcode == 0x8:
                    self._send(0x8, payload[:2])
                    break
        except (ConnectionError, OSError, ValueError):
            pass
        self.open = False

    def close(self) -> None:
        if self.open:
            self.open = False
            try:
                self._send(0x8, struct.pack("!H", 1001))
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _ratelimited(wait: float) -> tuple[int, dict[str, Any], dict[str, str]]:
    return 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(int(wait))}


def _message_identity(call: Call) -> tuple[Any, ...]:
    """What makes two calls "the same message" for `unhandled_429s`."""
    args = call.args
    if call.method == "chat.update":
        return (call.method, args.get("channel"), args.get("ts"))
    if call.method == "chat.postMessage":
        return (call.method, args.get("channel"), args.get("thread_ts"), args.get("text"))
    return (call.method, json.dumps(args, sort_keys=True, default=str))


def _parse_body(raw: bytes, content_type: str) -> dict[str, Any]:
    if not raw:
        return {}
    if content_type.startswith("application/json"):
        parsed = json.loads(raw)
        return parsed if isinstance(parsed, dict) else {"_": parsed}
    if content_type.startswith("application/x-www-form-urlencoded"):
        args: dict[str, Any] = dict(parse_qsl(raw.decode(), keep_blank_values=True))
        for key in _JSON_ARGS:
            value = args.get(key)
            if isinstance(value, str) and value[:1] in "[{":
                args[key] = json.loads(value)
        return args
    return {}


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    """A started FakeSlack with the incident channel C0INCIDENT and user W111 (the fixtures')."""
    with FakeSlack() as slack:
        slack.add_channel("C0INCIDENT", name="incidents")
        slack.add_user("W111", name="primary-owner")
        yield slack
