"""Build and sign Slack requests exactly as Slack sends them.

Bodies start from the real payloads in tests/fixtures/slack/ (bolt-python's test
fixtures) and change only the fields a test needs. Signatures follow Slack's scheme:
``X-Slack-Signature: v0=hex(HMAC-SHA256(secret, "v0:{timestamp}:{body}"))`` with the timestamp
in ``X-Slack-Request-Timestamp``.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import itertools
import json
import threading
import time
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import requests

from tests.fixture_paths import FIXTURES

REPO_ROOT = Path(__file__).resolve().parents[1]
SLACK_FIXTURES = FIXTURES / "slack"

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"


def signature(secret: str, timestamp: int | str, body: str | bytes) -> str:
    if isinstance(body, bytes):
        body = body.decode()
    base = f"v0:{timestamp}:{body}".encode()
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def signed_headers(
    secret: str, body: str | bytes, *, timestamp: int | None = None, content_type: str = FORM
) -> dict[str, str]:
    """Headers Slack sends with `body`; pass an old `timestamp` to build a stale request."""
    ts = int(time.time()) if timestamp is None else timestamp
    return {
        "Content-Type": content_type,
        "X-Slack-Request-Timestamp": str(ts),
        "X-Slack-Signature": signature(secret, ts, body),
    }


@cache
def _fixture_text(name: str) -> str:
    return (SLACK_FIXTURES / name).read_text()


def fixture_json(name: str) -> dict[str, Any]:
    """A fresh copy of a JSON fixture from tests/fixtures/slack/."""
    return copy.deepcopy(json.loads(_fixture_text(name)))


def slash_command_body(
    command: str = "/incident",
    text: str = "",
    *,
    user_id: str = "W111",
    channel_id: str = "C0INCIDENT",
    response_url: str | None = None,
    **fields: str,
) -> str:
    """bolt-python's real slash-command body with the command, text and ids replaced."""
    form = dict(parse_qsl(_fixture_text("bolt-python__slash_command.form-urlencoded.txt").strip()))
    form.update(command=command, text=text, user_id=user_id, channel_id=channel_id)
    if response_url is not None:
        form["response_url"] = response_url
    form.update(fields)
    return urlencode(form)


def block_actions_payload(
    action_id: str,
    value: str = "",
    *,
    user_id: str = "W111",
    channel_id: str = "C0INCIDENT",
    message_ts: str = "111.222",
    response_url: str | None = None,
    block_id: str = "b",
    message: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """bolt-python's real button-click payload, as clicked on a (non-ephemeral) message."""
    payload = fixture_json("bolt-python__block_actions_button.json")
    payload["user"]["id"] = user_id
    payload["channel"]["id"] = channel_id
    payload["container"].update(channel_id=channel_id, message_ts=message_ts, is_ephemeral=False)
    if response_url is not None:
        payload["response_url"] = response_url
    action = payload["actions"][0]
    action.update(action_id=action_id, value=value, block_id=block_id)
    if message is not None:
        payload["message"] = message
    return payload


def view_submission_payload(
    callback_id: str,
    values: dict[str, dict[str, Any]],
    *,
    user_id: str = "W111",
    private_metadata: str = "",
) -> dict[str, Any]:
    """bolt-python's real view_submission payload with callback_id and state values replaced.

    `values` maps block_id -> action_id -> value dict, e.g.
    ``{"reason": {"reason": {"type": "plain_text_input", "value": "no"}}}``.
    """
    payload = fixture_json("bolt-python__view_submission.json")
    payload["user"]["id"] = user_id
    view = payload["view"]
    view.update(callback_id=callback_id, private_metadata=private_metadata)
    view["state"] = {"values": values}
    return payload


def interactivity_body(payload: dict[str, Any]) -> str:
    """The wire form of an interactivity request, as Slack (and bolt-python's tests) send it."""
    return f"payload={quote(json.dumps(payload))}"


_event_numbers = itertools.count(1)


def event_callback_body(event: dict[str, Any] | None = None, **fields: Any) -> str:
    """bolt-python's real event_callback envelope with `event` (and top-level fields) replaced."""
    envelope = fixture_json("bolt-python__message_event_callback.json")
    if event is not None:
        envelope["event"] = event
    # Every delivery has its own event_id (a retry repeats it; the app acknowledges those).
    envelope["event_id"] = f"Ev{next(_event_numbers):09d}"
    envelope.update(fields)
    return json.dumps(envelope)


_last_sent: dict[str, int] = {}
_last_sent_lock = threading.Lock()


def fresh_timestamp(body: str) -> int:
    """Now, or one second past the last time this very body was signed.

    Slack never sends the same bytes twice (each request has its own trigger_id or event_id,
    a retry its own timestamp), and the app refuses an exact repeat as a replay; tests that
    send one fixture body several times get distinct signatures this way."""
    key = hashlib.sha256(body.encode()).hexdigest()
    with _last_sent_lock:
        ts = max(int(time.time()), _last_sent.get(key, 0) + 1)
        _last_sent[key] = ts
    return ts


class SlackSender:
    """Posts signed requests to an app's `/slack/events` endpoint over real HTTP."""

    def __init__(self, url: str, secret: str, *, session: requests.Session | None = None) -> None:
        self.url = url
        self.secret = secret
        self.session = session or requests.Session()

    def post(
        self,
        body: str,
        *,
        content_type: str = FORM,
        timestamp: int | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 10.0,
    ) -> requests.Response:
        if timestamp is None:
            timestamp = fresh_timestamp(body)
        sent = signed_headers(self.secret, body, timestamp=timestamp, content_type=content_type)
        sent.update(headers or {})
        return self.session.post(self.url, data=body.encode(), headers=sent, timeout=timeout)

    def command(self, text: str, *, command: str = "/incident", **kw: Any) -> requests.Response:
        return self.post(slash_command_body(command, text, **kw))

    def action(self, payload: dict[str, Any]) -> requests.Response:
        return self.post(interactivity_body(payload))

    def event(self, event: dict[str, Any], **fields: Any) -> requests.Response:
        return self.post(event_callback_body(event, **fields), content_type=JSON)
