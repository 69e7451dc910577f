"""The load generator the HTTP benchmarks share: POST a list of requests over keep-alive
connections, `concurrency` at once, all threads released together."""

from __future__ import annotations

import http.client
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass


@dataclass
class LoadResult:
    elapsed: float  # seconds from the start gate to the last response
    latencies: list[float]  # seconds, one per answered request
    statuses: dict[int, int]  # responses per HTTP status
    errors: int  # connection failures, plus answers `accept` refused


def post_all(
    *,
    port: int,
    path: str,
    requests: Sequence[tuple[bytes, Mapping[str, str]]],
    concurrency: int,
    accept: Callable[[int, bytes], bool] | None = None,
    timeout: float = 60.0,
    sent_at: list[float] | None = None,
) -> LoadResult:
    """Send every (body, headers) to POST `path` on 127.0.0.1:`port`. `sent_at`, when given
    (one slot per request), receives the wall-clock time each request was sent."""
    lock = threading.Lock()
    work = iter(enumerate(requests))
    gate = threading.Barrier(concurrency + 1)
    latencies: list[float] = []
    statuses: dict[int, int] = defaultdict(int)
    errors = 0

    def worker() -> None:
        nonlocal errors
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        mine: list[float] = []
        seen: dict[int, int] = defaultdict(int)
        bad = 0
        gate.wait()
        while True:
            with lock:
                item = next(work, None)
            if item is None:
                break
            index, (body, headers) = item
            if sent_at is not None:
                sent_at[index] = time.time()
            t0 = time.perf_counter()
            try:
                conn.request("POST", path, body=body, headers=dict(headers))
                response = conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
                bad += 1
                continue
            mine.append(time.perf_counter() - t0)
            seen[response.status] += 1
            if accept is not None and not accept(response.status, data):
                bad += 1
        conn.close()
        with lock:
            latencies.extend(mine)
            for status, n in seen.items():
                statuses[status] += n
            errors += bad

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    gate.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return LoadResult(time.perf_counter() - t0, latencies, dict(statuses), errors)


def bot_command(*, port: int, workers: int) -> list[str]:
    """`incident-bot run --http` on 127.0.0.1:`port`, as the benchmarks start it."""
    return [
        sys.executable,
        "-m",
        "bot.cli",
        "run",
        "--http",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
