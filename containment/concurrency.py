"""Run independent AWS calls at the same time (each call is mostly waiting on the network)."""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
U = TypeVar("U")


class ContextPool(ThreadPoolExecutor):
    """A thread pool whose tasks run in a copy of the submitting thread's context variables:
    what a run set for its calls (whose timeline a retry of a shared AWS client is reported
    to: containment.context.retries_reported_to) holds in every thread it starts."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        return super().submit(contextvars.copy_context().run, fn, *args, **kwargs)


def parallel(*fns: Callable[[], T]) -> list[T]:
    """Call each function in its own thread; wait for all, then raise the first error."""
    if not fns:
        return []
    if len(fns) == 1:
        return [fns[0]()]
    with ContextPool(max_workers=len(fns), thread_name_prefix="contain-call") as pool:
        futures = [pool.submit(fn) for fn in fns]
    errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        raise errors[0]  # type: ignore[misc]
    return [f.result() for f in futures]


def parallel_map(fn: Callable[[U], T], items: Iterable[U]) -> list[T]:
    items = list(items)
    return parallel(*[(lambda item=item: fn(item)) for item in items])
