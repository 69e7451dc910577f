"""The HTTP-mode WSGI application: a small router that other features add routes to.

Routes served by default:

* ``POST /slack/events``: every Slack request, handed to Bolt (signature verified, requests
  older than five minutes refused with 401);
* ``GET /healthz``: 200 when the database answers and commits a one-row write, 503 otherwise.

A feature adds its own route with a ``register_routes(router)`` listed in
``bot.wiring.ROUTES``, e.g. GuardDuty's::

    def register_routes(router: Router) -> None:
        router.add("POST", "/guardduty/events", handle_guardduty)

A handler takes an `HttpRequest` (with ``.runtime``) and returns an `HttpResponse`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import json
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from slack_bolt import BoltRequest
from slack_bolt.context import BoltContext
from slack_bolt.request.internals import build_context
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from bot.background import Busy
from bot.clock import SystemClock
from storage.models import Cursor
from storage.seen_requests import STORE_ERRORS

if TYPE_CHECKING:
    from bot.app import IncidentBotApp
    from bot.runtime import Runtime

log = logging.getLogger(__name__)

MAX_BODY = 2 * 1024 * 1024  # Slack's payloads are far smaller; refuse anything bigger

_REASONS = {
    200: "OK",
    202: "Accepted",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass
class HttpRequest:
    method: str
    path: str
    query: str
    body: bytes
    runtime: Runtime
    environ: dict[str, Any] = field(repr=False, default_factory=dict)

    @cached_property
    def headers(self) -> dict[str, str]:
        """Every header, lower-case names (built on first use: most routes read one or two)."""
        return _headers(self.environ)

    def header(self, name: str, default: str = "") -> str:
        key = name.upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
        value = self.environ.get(key)
        return default if value is None else str(value)

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class HttpResponse:
    status: int = 200
    body: bytes | str | dict[str, Any] | list[Any] = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, payload: Any) -> HttpResponse:
        return cls(status, payload)

    def encoded(self) -> tuple[bytes, dict[str, str]]:
        headers = {k: v for k, v in self.headers.items() if k.lower() != "content-length"}
        # Header names are case-insensitive: Bolt's `content-type` is the response's type.
        typed = any(k.lower() == "content-type" for k in headers)
        if isinstance(self.body, dict | list):
            data = json.dumps(self.body).encode()
            default_type = "application/json"
        elif isinstance(self.body, str):
            data = self.body.encode()
            default_type = "text/plain; charset=utf-8"
        else:
            data = self.body
            typed = True  # bytes: the handler says what they are, or nothing is said
        if not typed:
            headers["Content-Type"] = default_type
        headers["Content-Length"] = str(len(data))
        return data, headers


Handler = Callable[[HttpRequest], HttpResponse]


class Router:
    """Exact-path routing; 404 for unknown paths, 405 for known paths with other methods."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._routes: dict[tuple[str, str], Handler] = {}

    def add(self, method: str, path: str, handler: Handler) -> None:
        key = (method.upper(), path)
        if key in self._routes:
            raise ValueError(f"route {method} {path} is registered twice")
        self._routes[key] = handler

    def routes(self) -> list[tuple[str, str]]:
        return sorted(self._routes)

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        response = self._handle(environ)
        data, headers = response.encoded()
        reason = _REASONS.get(response.status, "Unknown")
        start_response(f"{response.status} {reason}", list(headers.items()))
        return [data] if environ.get("REQUEST_METHOD") != "HEAD" else [b""]

    def _handle(self, environ: dict[str, Any]) -> HttpResponse:
        method = environ.get("REQUEST_METHOD", "GET").upper()
        path = environ.get("PATH_INFO", "") or "/"
        handler = self._routes.get((method, path))
        if handler is None and method == "HEAD":
            handler = self._routes.get(("GET", path))
        if handler is None:
            if any(p == path for _, p in self._routes):
                return HttpResponse(405, {"ok": False, "error": "method_not_allowed"})
            return HttpResponse(404, {"ok": False, "error": "not_found"})
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return HttpResponse(400, {"ok": False, "error": "bad_content_length"})
        if length > MAX_BODY:
            return HttpResponse(413, {"ok": False, "error": "body_too_large"})
        if length > 0:
            body = environ["wsgi.input"].read(length)
        elif "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            # No Content-Length: gunicorn hands the de-chunked body; read it to its end.
            body = _read_to_end(environ["wsgi.input"], MAX_BODY + 1)
            if len(body) > MAX_BODY:
                return HttpResponse(413, {"ok": False, "error": "body_too_large"})
        else:
            body = b""
        request = HttpRequest(
            method=method,
            path=path,
            query=environ.get("QUERY_STRING", ""),
            body=body,
            runtime=self.runtime,
            environ=environ,
        )
        try:
            return handler(request)
        except Exception:
            log.exception("%s %s failed", method, path)
            return HttpResponse(500, {"ok": False, "error": "internal_error"})


def _read_to_end(stream: Any, limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    while size < limit:
        chunk = stream.read(min(65536, limit - size))
        if not chunk:
            break
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)


def _headers(environ: dict[str, Any]) -> dict[str, str]:
    headers = {
        key[5:].replace("_", "-").lower(): str(value)
        for key, value in environ.items()
        if key.startswith("HTTP_")
    }
    if environ.get("CONTENT_TYPE"):
        headers["content-type"] = environ["CONTENT_TYPE"]
    if environ.get("CONTENT_LENGTH"):
        headers["content-length"] = environ["CONTENT_LENGTH"]
    return headers


def bolt_request(raw_body: str, *, query: str, headers: dict[str, str]) -> BoltRequest:
    """A BoltRequest for `raw_body`, with slack-bolt's form-parsing defect worked around.

    slack-bolt (1.30 and earlier) reads any form body containing the substring "payload" as
    an interactivity request and, with no `payload=` field, parses it to `{}`: a slash
    command whose text, channel or user name says "payload" is then answered 404. Bolt keeps
    the raw body for signature verification; only the parsed body (and the context built
    from it) is replaced here. docs/slack-bolt-payload-parsing.md says how to remove this.
    """
    request = BoltRequest(body=raw_body, query=query, headers=headers)
    if request.body or "payload" not in raw_body or raw_body.startswith("{"):
        return request
    if (request.content_type or "").startswith("application/json"):
        return request
    form = dict(parse_qsl(raw_body, keep_blank_values=True))
    if "payload" in form:
        return request  # a real interactivity request Bolt failed to parse: leave it to Bolt
    request.body = form
    request.context = build_context(BoltContext({}), form)
    return request


SIGNATURE_WINDOW = 300  # seconds: Slack's own limit for a request's timestamp
_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"v0=[0-9a-f]{64}")


def verify_slack_signature(
    secret: str, *, body: bytes, timestamp: str, signature: str, now: float
) -> str | None:
    """Why the request is not Slack's (None: it is). Checked here, before anything parses the
    body: Bolt parses first and answers garbage with 500 and a stack trace, and logs the whole
    body (with Slack's legacy verification token and the response_url) of a request that
    fails its own check."""
    if not _TIMESTAMP.fullmatch(timestamp):
        return "missing or malformed X-Slack-Request-Timestamp"
    if abs(now - int(timestamp)) > SIGNATURE_WINDOW:
        return "stale X-Slack-Request-Timestamp"
    if not _SIGNATURE.fullmatch(signature):
        return "missing or malformed X-Slack-Signature"
    base = b"v0:" + timestamp.encode() + b":" + body
    expected = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        return "invalid X-Slack-Signature"
    return None


def _parse_error(raw_body: str, content_type: str) -> str | None:
    """Why a signed body is not one Slack sends (None: Bolt can parse it)."""
    if content_type.startswith("application/json") or raw_body.startswith("{"):
        return None if isinstance(_json_object(raw_body), dict) else "body is not a JSON object"
    if "payload" not in raw_body:  # a form without a payload field: nothing to check
        return None
    form = dict(parse_qsl(raw_body, keep_blank_values=True))
    if "payload" in form:
        try:
            payload = json.loads(form["payload"])
        except (json.JSONDecodeError, RecursionError):
            return "payload is not JSON"
        if not isinstance(payload, dict):
            return "payload is not a JSON object"
        return _payload_shape_error(payload)
    return None


# Interactivity fields Bolt's matchers and the listeners read, with the JSON type Slack
# always sends them as: a signed payload that differs is refused with 400 here, never
# dispatched (Bolt indexes into them and would answer 500).
_OBJECTS = ("user", "channel", "container", "message", "view", "team", "enterprise", "state")
_STRINGS = ("type", "trigger_id", "response_url", "callback_id", "api_app_id", "token")
_ACTION_STRINGS = ("action_id", "block_id", "value", "type", "action_ts")
_VIEW_STRINGS = ("callback_id", "private_metadata", "id", "hash", "type")


def _payload_shape_error(payload: dict[str, Any]) -> str | None:
    for name in _OBJECTS:
        if payload.get(name) is not None and not isinstance(payload[name], dict):
            return f"payload field {name} is not an object"
    # Slack sends `enterprise: null` and friends, but never a null view: Bolt reads any view
    # present as an object (its unhandled-request log answered 500).
    if "view" in payload and not isinstance(payload["view"], dict):
        return "payload field view is not an object"
    for name in _STRINGS:
        if payload.get(name) is not None and not isinstance(payload[name], str):
            return f"payload field {name} is not a string"
    actions = payload.get("actions")
    if payload.get("type") == "block_actions" and (
        not isinstance(actions, list)
        or not actions
        or not all(isinstance(a, dict) and isinstance(a.get("action_id"), str) for a in actions)
    ):
        return "a click's payload names no action"
    if actions is not None:
        if not isinstance(actions, list) or not all(isinstance(a, dict) for a in actions):
            return "payload field actions is not a list of objects"
        for action in actions:
            if not all(isinstance(action.get(k, ""), str) for k in _ACTION_STRINGS):
                return "an action's ids and value must be strings"
            for name in ("selected_option", "selected_user", "selected_channel"):
                if action.get(name) is not None and not isinstance(action[name], dict | str):
                    return f"an action's {name} is malformed"
    view = payload.get("view")
    if isinstance(view, dict):
        if not all(isinstance(view.get(k, ""), str) for k in _VIEW_STRINGS):
            return "a view's ids and metadata must be strings"
        state = view.get("state")
        if state is not None and not isinstance(state, dict):
            return "a view's state is not an object"
        values = state.get("values") if isinstance(state, dict) else None
        if values is not None and not isinstance(values, dict):
            return "a view's state values are not an object"
    return None


def _json_object(raw_body: str) -> Any:
    try:
        return json.loads(raw_body)
    except (json.JSONDecodeError, RecursionError):
        return None


def _event_id(raw_body: str) -> str | None:
    """An Events API callback's event_id (None for commands, clicks and other bodies)."""
    if not raw_body.startswith("{") or '"event_id"' not in raw_body:
        return None
    body = _json_object(raw_body)
    if not isinstance(body, dict) or body.get("type") != "event_callback":
        return None
    event_id = body.get("event_id")
    if not isinstance(event_id, str):
        return None
    return event_id if 0 < len(event_id) <= 100 else None


def slack_events(app: IncidentBotApp) -> Handler:
    """POST /slack/events: verify the signature, refuse replays and unparsable bodies, then
    hand the raw body and headers to Bolt. Every signed request is checked against replays
    here, reads included: a captured `/incident status` replayed within the window would
    otherwise tell whoever replays it how the incident stands now."""
    secret = app.runtime.settings.env.slack_signing_secret
    wall_clock = SystemClock()

    def handle(request: HttpRequest) -> HttpResponse:
        if secret is not None:
            signature = request.header("x-slack-signature")
            now = wall_clock.now()
            refusal = verify_slack_signature(
                secret.get_secret_value(),
                body=request.body,
                timestamp=request.header("x-slack-request-timestamp"),
                signature=signature,
                now=now.timestamp(),
            )
            if refusal is not None:
                log.info("refused a request to /slack/events: %s", refusal)
                return HttpResponse(401, {"ok": False, "error": "invalid_signature"})
            if not remember(request.runtime, REPLAY_PREFIX + signature, now):
                log.warning("refused a replayed signed request to /slack/events")
                return HttpResponse(200, b"")
        raw_body = request.body.decode("utf-8", errors="replace")
        problem = _parse_error(raw_body, request.header("content-type"))
        if problem is not None:
            log.warning("refused a signed request to /slack/events: %s", problem)
            return HttpResponse(400, {"ok": False, "error": "bad_request"})
        bolt_req = bolt_request(raw_body, query=request.query, headers=request.headers)
        event_id = _event_id(raw_body)
        if event_id and not remember(request.runtime, EVENT_PREFIX + event_id, wall_clock.now()):
            # Slack re-delivers an event it thinks failed (X-Slack-Retry-Num), re-signed.
            log.info(
                "event %s was already received; retry %s acknowledged",
                event_id,
                request.header("x-slack-retry-num") or "-",
            )
            return HttpResponse(200, b"")
        bolt_response = app.dispatch(bolt_req)
        headers = {name: ", ".join(values) for name, values in bolt_response.headers.items()}
        return HttpResponse(bolt_response.status, bolt_response.body or b"", headers)

    return handle


REPLAY_PREFIX = "slack-signature:"
EVENT_PREFIX = "slack-event:"
# Upkeep of the seen keys, off the ack's path: a passive WAL checkpoint every
# _UPKEEP_EVERY inserts (its cost is per distinct page, so rarer is cheaper per insert; the
# WAL stays a few MB), and the deletion of old keys (a scan) at most every _PRUNE_SECONDS.
_UPKEEP_EVERY = 1_000
_PRUNE_SECONDS = 60


class _ReplayState:
    inserts = 0
    pruned_at = 0  # the wall-clock second of this process's last deletion of old keys


def remember(runtime: Runtime, key: str, now: dt.datetime) -> bool:
    """Record a verified request's signature (or an event's id); False when it was seen
    before (a replay, or Slack's retry of an event already received).

    Kept in the database's store of seen keys (storage/seen_requests.py), so a replay is
    caught by whichever process or replica it reaches. A signature covers the timestamp,
    so keys older than the window can never match again, and Slack retries an event within
    minutes: they are deleted now and then, off the ack's path.
    """
    seen = int(now.timestamp())
    try:
        if not runtime.database.seen_requests().add(key, seen=seen):
            return False
        _ReplayState.inserts += 1
        if _ReplayState.inserts % _UPKEEP_EVERY == 1:
            with contextlib.suppress(Busy):  # if the pool is busy, the next one does it
                runtime.background.submit(
                    _replay_upkeep, runtime, seen, description="replay upkeep"
                )
    except (SQLAlchemyError, *STORE_ERRORS):
        # The store cannot write now: let the request through (its own write fails and
        # the user is told) rather than refuse every Slack request while the disk is sick.
        log.warning("could not record a request signature; replay check skipped", exc_info=True)
    return True


def _replay_upkeep(runtime: Runtime, seen: int) -> None:
    """Forget keys well past the window (they can never match again), then let the store
    tidy what the inserts grew."""
    store = runtime.database.seen_requests()
    if seen - _ReplayState.pruned_at >= _PRUNE_SECONDS:
        _ReplayState.pruned_at = seen
        store.prune(before=seen - 4 * SIGNATURE_WINDOW)
    store.tidy()


HEALTH_CURSOR = "healthz"
HEALTH_BUSY_MS = 2_000  # a lock held longer than this is unhealthy (requests wait 30 s)


def healthz(request: HttpRequest) -> HttpResponse:
    """200 only when the database answers and takes a write: reads alone kept saying "ok"
    while every write failed (disk full, a lock held by another process)."""
    if not request.runtime.database.ping():
        return HttpResponse(503, {"ok": False, "database": "unreachable"})
    if not database_writable(request.runtime):
        return HttpResponse(503, {"ok": False, "database": "not writable"})
    return HttpResponse(200, {"ok": True, "database": "ok"})


def database_writable(runtime: Runtime) -> bool:
    """Commit one tiny write (the `healthz` cursor row), waiting at most HEALTH_BUSY_MS for
    the write lock (a request's own writes wait up to 30 s)."""
    from storage.db import SQLITE_BUSY_TIMEOUT_MS

    database = runtime.database
    stamp = SystemClock().now().isoformat()
    table = Cursor.__table__
    try:
        with database.engine.connect() as conn:
            raw = conn.connection.dbapi_connection  # no autobegin: set the timeout first
            if database.is_sqlite:
                raw.execute(f"PRAGMA busy_timeout={HEALTH_BUSY_MS}")
            try:
                with conn.begin():
                    if not database.is_sqlite:
                        conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{HEALTH_BUSY_MS}ms'")
                    updated = conn.execute(
                        table.update().where(table.c.name == HEALTH_CURSOR).values(value=stamp)
                    )
                    if not updated.rowcount:
                        conn.execute(table.insert().values(name=HEALTH_CURSOR, value=stamp))
            finally:
                if database.is_sqlite:
                    raw.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    except IntegrityError:
        return True  # a concurrent check inserted the row first: that write worked
    except SQLAlchemyError:
        log.warning("health check: the database does not take writes", exc_info=True)
        return False
    return True


def core_router(app: IncidentBotApp) -> Router:
    """The router with the default routes; bot.wiring.build_wsgi_app adds the features'."""
    router = Router(app.runtime)
    router.add("POST", "/slack/events", slack_events(app))
    router.add("GET", "/healthz", healthz)
    return router
