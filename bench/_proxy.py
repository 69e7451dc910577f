"""A moto_server subprocess, and an HTTP proxy in front of it that adds latency per call.

The proxy stands in for the network distance to AWS: every request waits `delay` seconds
before being forwarded, concurrently for concurrent requests. It records each call (service
operation, start, end) so a benchmark can count calls and see how they overlapped.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self

_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MotoServer:
    """`moto_server` on an ephemeral 127.0.0.1 port, for as long as the context lasts."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError("moto_server exited at start")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("moto_server did not start within 30 s")

    def reset(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request("POST", "/moto-api/reset")
        conn.getresponse().read()
        conn.close()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()


class _Server(ThreadingHTTPServer):
    # socketserver's default listen backlog is 5: a burst of new connections from a
    # containment's parallel calls would otherwise wait for SYN retransmits.
    request_queue_size = 128
    daemon_threads = True


@dataclass
class ProxiedCall:
    operation: str
    start: float
    end: float


def _operation(path: str, headers: dict[str, str], body: bytes) -> str:
    target = headers.get("x-amz-target")
    if target:
        return target.rsplit(".", 1)[-1]
    if body:
        for part in body.decode("utf-8", "replace").split("&"):
            if part.startswith("Action="):
                return urllib.parse.unquote(part[7:])
    return f"{headers.get('method', 'HTTP')} {urllib.parse.urlsplit(path).path}"


class DelayProxy:
    """Forward every request to `upstream` after `delay` seconds; count and time them."""

    def __init__(self, upstream: str, *, delay: float, jitter: float = 0.0) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        self.upstream_host = parsed.hostname or "127.0.0.1"
        self.upstream_port = parsed.port or 80
        self.delay = delay
        self.jitter = jitter  # each call waits delay x uniform(1 - jitter, 1 + jitter)
        self._rng = random.Random(17)
        self.calls: list[ProxiedCall] = []
        self._lock = threading.Lock()
        self._local = threading.local()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

            def setup(self) -> None:
                super().setup()
                # Small writes + Nagle + delayed ACKs cost ~40 ms per response otherwise.
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _reply(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
                """Status line, headers and body in one write."""
                lines = [f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}"]
                lines += [f"{k}: {v}" for k, v in headers]
                lines.append(f"Content-Length: {len(data)}")
                head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
                self.wfile.write(head + (b"" if self.command == "HEAD" else data))

            def _control(self) -> bool:
                """/__proxy__/calls (GET: the log as JSON) and /__proxy__/reset (POST)."""
                if not self.path.startswith("/__proxy__/"):
                    return False
                if self.path == "/__proxy__/reset":
                    proxy.reset_log()
                    data = b"{}"
                else:
                    with proxy._lock:
                        data = json.dumps([c.__dict__ for c in proxy.calls]).encode()
                self._reply(200, [("Content-Type", "application/json")], data)
                return True

            def _forward(self) -> None:
                if self._control():
                    return
                start = time.monotonic()
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
                time.sleep(proxy.wait())
                status, out_headers, data = proxy._send(self.command, self.path, headers, body)
                kept = [
                    (k, v)
                    for k, v in out_headers
                    if k.lower() not in _HOP_HEADERS and k.lower() != "content-length"
                ]
                self._reply(status, kept, data)
                lowered = {k.lower(): v for k, v in headers.items()}
                lowered["method"] = self.command
                with proxy._lock:
                    proxy.calls.append(
                        ProxiedCall(_operation(self.path, lowered, body), start, time.monotonic())
                    )

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _forward

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def wait(self) -> float:
        if not self.jitter:
            return self.delay
        with self._lock:
            return self.delay * self._rng.uniform(1 - self.jitter, 1 + self.jitter)

    def _send(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = getattr(self._local, "conn", None)
        for attempt in (1, 2):  # a kept-alive connection may have been closed upstream
            if conn is None:
                conn = http.client.HTTPConnection(
                    self.upstream_host, self.upstream_port, timeout=60
                )
                conn.connect()
                conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._local.conn = conn
            try:
                conn.request(method, path, body=body or None, headers=headers)
                resp = conn.getresponse()
                return resp.status, resp.getheaders(), resp.read()
            except (http.client.HTTPException, OSError):
                conn.close()
                conn = self._local.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def reset_log(self) -> None:
        with self._lock:
            self.calls.clear()

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


class ProxyProcess:
    """DelayProxy in its own process, so its work does not compete with the code measured."""

    def __init__(self, upstream: str, *, delay: float, jitter: float = 0.0) -> None:
        self.upstream = upstream
        self.delay = delay
        self.jitter = jitter
        self._proc: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> Self:
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench._proxy",
                "--upstream",
                self.upstream,
                "--delay",
                str(self.delay),
                "--jitter",
                str(self.jitter),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().strip()
        if not line.startswith("http://"):
            raise RuntimeError(f"proxy did not start: {line!r}")
        self.url = line
        return self

    def _control(self, method: str, path: str) -> bytes:
        parsed = urllib.parse.urlsplit(self.url)
        conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
        conn.request(method, path)
        data = conn.getresponse().read()
        conn.close()
        return data

    def reset_log(self) -> None:
        self._control("POST", "/__proxy__/reset")

    @property
    def calls(self) -> list[ProxiedCall]:
        return [ProxiedCall(**c) for c in json.loads(self._control("GET", "/__proxy__/calls"))]

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench._proxy")
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--delay", type=float, default=0.05)
    parser.add_argument("--jitter", type=float, default=0.0)
    args = parser.parse_args()
    with DelayProxy(args.upstream, delay=args.delay, jitter=args.jitter) as proxy:
        print(proxy.url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
