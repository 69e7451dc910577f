"""An HTTP proxy in front of moto_server that injects one fault per chosen AWS operation.

Faults, as a client sees them on the wire:
- `drop`: the call is forwarded and takes effect, then the connection closes with no answer;
- `hold`: the call takes effect, the answer is held past the client's read timeout, then the
  connection closes (the client has given up by then);
- `500` / `503`: AWS's internal error / unavailable, the call not carried out;
- `throttle`: the service's own throttling error (`RequestLimitExceeded` for EC2,
  `ThrottlingException` for JSON services, `SlowDown` for S3, `Throttling` elsewhere);
- `reset`: the request is read and the connection reset (RST), the call not carried out.

Each armed fault fires once, on the next request for its operation (several armed for one
operation fire in turn, on its next requests). The proxy logs every request (service,
operation, fault or none), so a test can count what it injected.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import struct
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, Self

Fault = Literal["drop", "hold", "500", "503", "throttle", "reset"]
FAULTS: tuple[Fault, ...] = ("drop", "hold", "500", "503", "throttle", "reset")
# Faults after which the call has taken effect in AWS although the client saw a failure.
TOOK_EFFECT: tuple[Fault, ...] = ("drop", "hold")
# Faults that refuse the call before it runs.
REFUSED: tuple[Fault, ...] = ("500", "503", "throttle", "reset")

_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}
_SERVICE = re.compile(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/")


@dataclass(frozen=True)
class Seen:
    service: str
    operation: str
    fault: Fault | None


def _operation(service: str, method: str, path: str, headers: dict[str, str], body: bytes) -> str:
    target = headers.get("x-amz-target")
    if target:
        return target.rsplit(".", 1)[-1]
    if body and service != "s3":
        fields = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        if "Action" in fields:
            return fields["Action"][0]
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
    if "Action" in query:
        return query["Action"][0]
    if service == "lambda":
        return _lambda_operation(method, path)
    return _s3_operation(method, path)


# Lambda's REST calls: (method, what follows /functions/<name>) -> operation.
_LAMBDA = {
    ("GET", ""): "GetFunction",
    ("GET", "concurrency"): "GetFunctionConcurrency",
    ("PUT", "concurrency"): "PutFunctionConcurrency",
    ("DELETE", "concurrency"): "DeleteFunctionConcurrency",
    ("GET", "policy"): "GetPolicy",
    ("POST", "policy"): "AddPermission",
    ("DELETE", "policy"): "RemovePermission",
    ("GET", "url"): "GetFunctionUrlConfig",
}


def _lambda_operation(method: str, path: str) -> str:
    parts = urllib.parse.urlsplit(path).path.strip("/").split("/")  # <version>/functions/...
    if parts[1:2] != ["functions"] or len(parts) < 3:
        return "ListFunctions" if method == "GET" else f"{method} /{'/'.join(parts)}"
    sub = parts[3] if len(parts) > 3 else ""
    return _LAMBDA.get((method, sub), f"{method} functions/{sub}")


def _s3_operation(method: str, path: str) -> str:
    """S3's REST calls by name (the key in the path varies between runs)."""
    parts = urllib.parse.urlsplit(path)
    verb = {"GET": "Get", "PUT": "Put", "DELETE": "Delete", "HEAD": "Head", "POST": "Post"}
    if parts.query.split("=")[0] == "publicAccessBlock":  # named without "Bucket"
        return f"{verb.get(method, method)}PublicAccessBlock"
    on_object = "/" in parts.path.strip("/")
    sub = "".join(p.split("=")[0].title() for p in parts.query.split("&") if p)
    noun = "Object" if on_object else "Bucket"
    return f"{verb.get(method, method)}{noun}{sub}"


def _throttle(service: str, json_protocol: bool) -> tuple[int, str, bytes]:
    if service == "lambda":  # Lambda's own throttling answer
        body = {"__type": "TooManyRequestsException", "message": "Rate exceeded (injected)"}
        return 429, "application/json", json.dumps(body).encode()
    if json_protocol:
        body = {"__type": "ThrottlingException", "message": "Rate exceeded (injected)"}
        return 400, "application/x-amz-json-1.1", json.dumps(body).encode()
    if service == "s3":
        return 503, "application/xml", _s3_error("SlowDown", "Please reduce your request rate.")
    if service == "ec2":
        return 503, "text/xml", _ec2_error("RequestLimitExceeded", "Request limit exceeded.")
    return 400, "text/xml", _query_error("Throttling", "Rate exceeded")


def _server_error(status: int, service: str, json_protocol: bool) -> tuple[int, str, bytes]:
    code = "InternalError" if status == 500 else "ServiceUnavailable"
    if json_protocol:
        internal = "ServiceException" if service == "lambda" else "KMSInternalException"
        body = {"__type": internal if status == 500 else code, "message": code}
        return status, "application/x-amz-json-1.1", json.dumps(body).encode()
    if service == "s3":
        return status, "application/xml", _s3_error(code, "injected")
    if service == "ec2":
        return (
            status,
            "text/xml",
            _ec2_error("InternalError" if status == 500 else "Unavailable", "injected"),
        )
    return status, "text/xml", _query_error(code, "injected")


def _ec2_error(code: str, message: str) -> bytes:
    return (
        f"<?xml version='1.0' encoding='UTF-8'?><Response><Errors><Error><Code>{code}</Code>"
        f"<Message>{message}</Message></Error></Errors><RequestID>fault</RequestID></Response>"
    ).encode()


def _query_error(code: str, message: str) -> bytes:
    return (
        f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>"
        f"<Message>{message}</Message></Error><RequestId>fault</RequestId></ErrorResponse>"
    ).encode()


def _s3_error(code: str, message: str) -> bytes:
    return (
        f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
        f"<Message>{message}</Message><RequestId>fault</RequestId></Error>"
    ).encode()


class _Server(ThreadingHTTPServer):
    request_queue_size = 128
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up on a held answer closes first: expected here, not an error.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class FaultProxy:
    """Forward to `upstream`; `arm(operation, fault)` makes the next such call misbehave."""

    def __init__(self, upstream: str, *, hold_seconds: float) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        self.upstream = (parsed.hostname or "127.0.0.1", parsed.port or 80)
        self.hold_seconds = hold_seconds
        self.seen: list[Seen] = []
        self._armed: dict[str, list[Fault]] = {}
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _reply(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
                lines = [f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}"]
                lines += [f"{k}: {v}" for k, v in headers]
                lines.append(f"Content-Length: {len(data)}")
                head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
                self.wfile.write(head + (b"" if self.command == "HEAD" else data))

            def _abort(self, *, reset: bool) -> None:
                if reset:  # linger 0: close() sends RST instead of FIN
                    self.request.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                self.close_connection = True
                self.request.close()

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                lowered = {k.lower(): v for k, v in headers.items()}
                found = _SERVICE.search(lowered.get("authorization", ""))
                service = found.group(1) if found else "unknown"
                op = _operation(service, self.command, self.path, lowered, body)
                # JSON errors: the JSON protocols and Lambda's REST-JSON.
                json_protocol = "x-amz-target" in lowered or service == "lambda"
                fault = proxy._take(op)
                with proxy._lock:
                    proxy.seen.append(Seen(service, op, fault))
                if fault == "reset":
                    self._abort(reset=True)
                    return
                if fault in ("500", "503", "throttle"):
                    if fault == "throttle":
                        status, ctype, data = _throttle(service, json_protocol)
                    else:
                        status, ctype, data = _server_error(int(fault), service, json_protocol)
                    self._reply(status, [("Content-Type", ctype)], data)
                    return
                status, out_headers, data = proxy._send(self.command, self.path, headers, body)
                if fault == "drop":
                    self._abort(reset=False)
                    return
                if fault == "hold":
                    time.sleep(proxy.hold_seconds)
                    self._abort(reset=False)
                    return
                kept = [
                    (k, v)
                    for k, v in out_headers
                    if k.lower() not in _HOP and k.lower() != "content-length"
                ]
                self._reply(status, kept, data)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _handle

        self._server = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def arm(self, operation: str, fault: Fault) -> None:
        with self._lock:
            self._armed.setdefault(operation, []).append(fault)

    def disarm(self) -> None:
        with self._lock:
            self._armed.clear()

    def injected(self) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.fault is not None]

    def clear_log(self) -> None:
        with self._lock:
            self.seen.clear()

    def _take(self, operation: str) -> Fault | None:
        with self._lock:
            armed = self._armed.get(operation)
            return armed.pop(0) if armed else None

    def _send(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        # One connection per forwarded request: simple, and moto_server is local.
        conn = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            conn.request(method, path, body=body or None, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.getheaders(), resp.read()
        finally:
            conn.close()

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
