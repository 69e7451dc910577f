"""Running the bot: HTTP mode on gunicorn, or Socket Mode.

HTTP mode embeds gunicorn (BaseApplication) with gthread workers whose event loop reads
each request completely before a thread takes it (BufferingThreadWorker: slow and half-open
clients cannot hold the threads). The app is built in each
worker after the fork (database engines and thread pools must not cross a fork). On SIGTERM
gunicorn stops accepting, finishes in-flight requests, and then each worker's `worker_exit`
hook drains the background pool: jobs still queued or running after the grace period are
recorded as interrupted (their own on_interrupt hooks tell the user and the timeline).

Socket Mode (SLACK_APP_TOKEN set, no --http) uses Bolt's SocketModeHandler; SIGTERM closes
the connection and drains the background pool the same way.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import logging
import re
import selectors
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from gunicorn.app.base import BaseApplication
from gunicorn.workers.gthread import TConn, ThreadWorker

from bot.clock import SystemClock
from bot.settings import Settings, SettingsError

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger(__name__)

THREADS_PER_WORKER = 24
REQUEST_TIMEOUT = 30  # seconds a worker may be silent before gunicorn restarts it
GRACEFUL_TIMEOUT = 30  # SIGTERM -> SIGKILL, for draining requests plus background jobs
BACKGROUND_GRACE = 20.0  # of which background jobs get this long to finish
HEAD_TIMEOUT = 10.0  # seconds a client has to send its whole request (Slack sends at once)
SOCKET_TIMEOUT = 10.0  # a thread's longest wait on one client's socket
MAX_BUFFERED = 2 * 1024 * 1024 + 65536  # bot.http.MAX_BODY plus a generous head
_EXPECT_CONTINUE = re.compile(rb"(?im)^expect:[ \t]*100-continue[ \t]*\r?$")
_CONTENT_LENGTH = re.compile(rb"(?im)^content-length:[ \t]*([0-9]{1,12})[ \t]*\r?$")
GC_YOUNG_THRESHOLD = 10_000  # allocations between young-generation collections (default 700)

WsgiApp = Callable[..., Any]


class GunicornServer(BaseApplication):
    """gunicorn, embedded: `load` builds the WSGI app inside each worker."""

    def __init__(
        self,
        load: Callable[[], WsgiApp],
        *,
        options: dict[str, Any],
        on_worker_exit: Callable[[], None] | None = None,
    ) -> None:
        self._load = load
        self._options = options
        self._on_worker_exit = on_worker_exit
        super().__init__()

    def load_config(self) -> None:
        assert self.cfg is not None
        for key, value in self._options.items():
            self.cfg.set(key, value)
        if self._on_worker_exit is not None:
            hook = self._on_worker_exit
            self.cfg.set("worker_exit", lambda _arbiter, _worker: hook())

    def load(self) -> WsgiApp:
        return self._load()


def gunicorn_options(*, host: str, port: int, workers: int) -> dict[str, Any]:
    return {
        "bind": f"{host}:{port}",
        "workers": workers,
        "worker_class": BufferingThreadWorker,
        "threads": THREADS_PER_WORKER,
        "timeout": REQUEST_TIMEOUT,
        "graceful_timeout": GRACEFUL_TIMEOUT,
        "keepalive": 5,
        "preload_app": False,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": "incident-bot",
        # gunicorn 27's runtime control socket lives at one path per user: several bots (or a
        # bot and a benchmark floor) on one host would fight over it, and we do not use it.
        "control_socket_disable": True,
    }


class _BufferedConn(TConn):
    """A connection whose request is read by the worker's poller before a thread takes it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.buffered = b""
        self.deadline = 0.0

    def init(self) -> None:
        super().init()
        # A backstop for what the poller did not buffer (a chunked body, a slow reader of the
        # response): a thread never waits on one client longer than this.
        self.sock.settimeout(SOCKET_TIMEOUT)


class BufferingThreadWorker(ThreadWorker):
    """gthread, but a request reaches a thread only once its head and body have arrived.

    gunicorn's gthread hands a connection to a thread as soon as any byte arrives and the
    thread then reads blocking: 24 clients that send half a request and stop held all 24
    threads, so /healthz, Slack and GuardDuty went unanswered for as long as they stayed.
    Here the worker's own event loop (its selector) reads each request, new or kept-alive,
    without blocking, and gives it to the thread pool complete; a client that has not sent
    its request within HEAD_TIMEOUT is closed. Idle and half-open clients cost a socket, not
    a thread (up to gunicorn's worker_connections per worker).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reading: deque[_BufferedConn] = deque()

    def accept(self, listener: Any) -> None:
        try:
            client, address = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = _BufferedConn(self.cfg, client, address, listener.getsockname())
        self._read_request(conn)

    def on_client_socket_readable(self, conn: Any, client: Any) -> None:
        """A kept-alive connection: its next request is buffered the same way."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._read_request(conn)

    def _read_request(self, conn: _BufferedConn) -> None:
        conn.sock.setblocking(False)
        conn.deadline = time.monotonic() + HEAD_TIMEOUT
        self.reading.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_bytes, conn))

    def _on_bytes(self, conn: _BufferedConn, sock: Any) -> None:
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client went away before finishing its request
            self._drop(conn)
            return
        conn.buffered += data
        if _request_complete(conn.buffered):
            self.poller.unregister(sock)
            self.reading.remove(conn)
            conn.data_ready = True
            self.enqueue_req(conn)

    def _drop(self, conn: _BufferedConn) -> None:
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.poller.unregister(conn.sock)
        self.reading.remove(conn)
        self.nr_conns -= 1
        conn.close()

    def murder_pending(self) -> None:
        super().murder_pending()
        now = time.monotonic()
        while self.reading and self.reading[0].deadline <= now:
            self._drop(self.reading[0])

    def handle(self, conn: Any) -> Any:
        if isinstance(conn, _BufferedConn) and conn.buffered:
            conn.sock.setblocking(True)
            conn.init()
            conn.parser.unreader.unread(conn.buffered)
            conn.buffered = b""
        return super().handle(conn)


def _request_complete(data: bytes) -> bool:
    """Whether `data` holds a whole request head and the body its Content-Length announces
    (a chunked body is left to the thread, under SOCKET_TIMEOUT). Past MAX_BUFFERED the
    request goes on as it is: the application refuses what is too big."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return len(data) > MAX_BUFFERED
    if _EXPECT_CONTINUE.search(data[:end]):
        return True  # the client waits for "100 Continue" (gunicorn sends it) before the body
    match = _CONTENT_LENGTH.search(data[:end])
    length = int(match.group(1)) if match else 0
    return len(data) - end - 4 >= min(length, MAX_BUFFERED)


class _WorkerState:
    """The runtime built in this worker process, so worker_exit can drain it."""

    runtime: Any = None


def serve(
    *, settings: Settings, force_http: bool = False, host: str, port: int, workers: int = 1
) -> None:
    """`incident-bot run`: Socket Mode when SLACK_APP_TOKEN is set (and not --http)."""
    if settings.env.slack_app_token is not None and not force_http:
        serve_socket_mode(settings)
        return
    if settings.env.slack_signing_secret is None:
        raise SettingsError(
            "HTTP mode needs SLACK_SIGNING_SECRET in the environment (or set SLACK_APP_TOKEN "
            "for Socket Mode)"
        )
    serve_http(settings, host=host, port=port, workers=workers)


def serve_http(settings: Settings, *, host: str, port: int, workers: int) -> None:
    def load() -> WsgiApp:
        from bot.wiring import build_wsgi_app, create_app, start_services

        app = create_app(settings, clock=SystemClock())
        _WorkerState.runtime = app.runtime
        wsgi = build_wsgi_app(app)
        start_services(app.runtime)
        # Everything built so far lives as long as the worker: keep it out of the cyclic GC's
        # generations, so full collections stay short on the ack path.
        gc.collect()
        gc.freeze()
        # A request allocates hundreds of short-lived containers (a finding's JSON alone is
        # ~200): at the default threshold of 700 the young generation is collected every few
        # requests, mostly finding garbage that reference counting frees anyway. Measured in
        # an alert storm: about 7% of the worker's time. 10,000 lets most of it die first.
        gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
        return wsgi

    def on_worker_exit() -> None:
        runtime = _WorkerState.runtime
        if runtime is not None:
            drain(runtime)

    log.info("HTTP mode on http://%s:%s (POST /slack/events, GET /healthz)", host, port)
    GunicornServer(
        load,
        options=gunicorn_options(host=host, port=port, workers=workers),
        on_worker_exit=on_worker_exit,
    ).run()


def drain(runtime: Runtime, *, grace: float = BACKGROUND_GRACE) -> None:
    """Stop producers (no new reminder is claimed), then finish or record background work."""
    interrupted = runtime.shutdown(grace=grace)
    if interrupted:
        log.warning("%d background job(s) recorded as interrupted", len(interrupted))


def serve_socket_mode(settings: Settings, *, stop: threading.Event | None = None) -> None:
    from slack_bolt.adapter.socket_mode import SocketModeHandler

    from bot.wiring import create_app, start_services

    app = create_app(settings, clock=SystemClock())
    start_services(app.runtime)
    assert settings.env.slack_app_token is not None
    handler = SocketModeHandler(app, settings.env.slack_app_token.get_secret_value())
    stop = stop or threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %d: shutting down Socket Mode", signum)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    handler.connect()
    log.info("Socket Mode connected")
    try:
        stop.wait()
    finally:
        handler.close()
        drain(app.runtime)
