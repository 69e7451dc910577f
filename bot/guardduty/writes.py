"""Write transactions of GuardDuty intake, queued on one lock per process.

SQLite admits one writer at a time; a writer that finds the lock taken waits in SQLite's
busy handler, which sleeps 1, 2, 5, 10... ms between tries. During a storm the batch writer
and the card publisher would keep putting each other to sleep that way. Queuing their write
transactions on a Python lock first hands the turn over at once. (Other processes, and other
features' writers, still meet SQLite's own lock; PostgreSQL needs none of this but loses
nothing by it.)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from bot.runtime import Runtime


def write_turn(runtime: Runtime) -> threading.Lock:
    return runtime.services.write_lock


@contextmanager
def write_session(runtime: Runtime) -> Iterator[Session]:
    """`runtime.database.session()`, entered in turn with this process's other intake writes."""
    with write_turn(runtime), runtime.database.session() as session:
        yield session


def intake_is_hot(runtime: Runtime, *, within: float = 0.1) -> bool:
    """Whether deliveries are being recorded right now (Slack work may wait a little)."""
    writer = runtime.services.intake_writer
    return writer is not None and time.monotonic() - writer.last_write < within
