"""Running the bot: HTTP mode on gunicorn, or Socket Mode.

HTTP mode embeds gunicorn (BaseApplication) with gthread workers. The app is built in each
worker after the fork (database engines and thread pools must not cross a fork). On SIGTERM
gunicorn stops accepting, finishes in-flight requests, and then each worker's `worker_exit`
hook drains the background pool: jobs still queued or running after the grace period are
recorded as interrupted (their own on_interrupt hooks tell the user and the timeline).

Socket Mode (SLACK_APP_TOKEN set, no --http) uses Bolt's SocketModeHandler; SIGTERM closes
the connection and drains the background pool the same way.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gunicorn.app.base import BaseApplication

from bot.clock import SystemClock
from bot.settings import Settings, SettingsError

if TYPE_CHECKING:
    from bot.runtime import Runtime

log = logging.getLogger(__name__)

THREADS_PER_WORKER = 24
REQUEST_TIMEOUT = 30  # seconds a worker may be silent before gunicorn restarts it
GRACEFUL_TIMEOUT = 30  # SIGTERM -> SIGKILL, for draining requests plus background jobs
BACKGROUND_GRACE = 20.0  # of which background jobs get this long to finish
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
        "worker_class": "gthread",
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
