"""The one place AWS clients are made.

Every feature gets its clients here, directly (`aws_client`) or through an `ActionContext`
(which adds cross-account credentials and per-context hooks on top). Each client carries one
botocore handler that reports its calls to the observers registered with `observe`, so a test
can record every AWS call the bot makes, whichever feature makes it. Production registers no
observer; the handler then costs one empty-list check per call.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from botocore.client import BaseClient
from botocore.config import Config

# (service, operation, params): called before every API call of every client made here.
CallObserver = Callable[[str, str, dict[str, Any]], None]

_lock = threading.RLock()
_session: boto3.Session | None = None
# Least recently used last out. A process needs a few dozen (services x regions x retry
# settings); the bound keeps clients keyed by short-lived hooks (tests) from piling up.
_clients: OrderedDict[tuple[Any, ...], BaseClient] = OrderedDict()
MAX_CACHED_CLIENTS = 256
_observers: list[CallObserver] = []


def shared_session() -> boto3.Session:
    """One process-wide session: loading endpoint and service data costs ~0.5 s per session."""
    global _session
    with _lock:
        if _session is None:
            _session = boto3.Session()
        return _session


def _report(params: dict[str, Any], model: Any, **_: Any) -> None:
    if not _observers:
        return
    service = model.service_model.service_name
    for observer in list(_observers):
        observer(service, model.name, params)


def watch(client: BaseClient) -> BaseClient:
    """Attach the observer handler (once per client)."""
    service = client.meta.service_model.service_name
    client.meta.events.register(
        f"before-parameter-build.{service}", _report, unique_id="incident-bot-observe"
    )
    return client


@contextmanager
def observe(observer: CallObserver) -> Iterator[None]:
    """Report every AWS call made through this module's clients while the block runs."""
    with _lock:
        _observers.append(observer)
    try:
        yield
    finally:
        with _lock:
            _observers.remove(observer)


def make_client(
    session: boto3.Session,
    service: str,
    region: str | None,
    config: Config | None = None,
    credentials: dict[str, str] | None = None,
) -> Any:
    """A new watched client. Creating clients is not thread-safe on one session: serialise it
    on the shared one. Assumed-role credentials are passed per client, so every account reuses
    the session's loaded service data (a new session costs ~0.5 s)."""
    keys = credentials or {}
    if session is _session:
        with _lock:
            client = session.client(service, region_name=region, config=config, **keys)
    else:
        client = session.client(service, region_name=region, config=config, **keys)
    return watch(client)


def cached_client(key: tuple[Any, ...], make: Callable[[], BaseClient]) -> Any:
    """Clients in the bot's own account are reused across incidents (they are thread-safe)."""
    with _lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = make()
            if len(_clients) > MAX_CACHED_CLIENTS:
                _clients.popitem(last=False)  # whoever still holds it keeps using it
        else:
            _clients.move_to_end(key)
        return client


def aws_client(service: str, region: str | None) -> Any:
    """A client in the bot's own account with boto3's default configuration, for features
    that act outside an incident's ActionContext (polling, the card's tags, contacts, drills)."""
    return cached_client(
        ("default", service, region),
        lambda: make_client(shared_session(), service, region),
    )
