"""Slack's published rate limits, kept before Slack has to enforce them, by every process.

Slack counts chat.postMessage per channel (about one a second, short bursts allowed) and each
Tier 3 method (chat.update...) per workspace (about 50 a minute): across every process that
writes with the bot's token. So the budget is kept where all of them see it: one `Cursor`
row per bucket (`slack.pace:post:<channel>`, `slack.pace:chat_update`), the way the writer
keeps each card's slots.

Each bucket is a single number, the time its next token is due on the database's clock (a
token bucket in its "theoretical arrival time" form, GCRA): taking a token moves it one
interval on, and the token may be used once the number is within the burst's tolerance of
now. A token may be taken before it is due (a reservation in debt): the taker waits for it.
A 429 moves the number past Slack's Retry-After, for every process.

The row is read and written only when a token is taken or a 429 holds a bucket. `ready_in`,
which the publisher and the reminder lanes ask often, reads the process's mirror of what it
last learnt (so it may be early about another process's posts, never late about its own);
the reservation that follows is the one that counts. When the database cannot be reached,
pacing falls back to the mirror alone rather than holding a message back.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Float, Text, bindparam, case, cast
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from storage.db import Database
from storage.models import Cursor

log = logging.getLogger(__name__)

PACE_CURSOR = "slack.pace:"  # + bucket key: when the bucket's next token is due (epoch s)
# A due time further ahead than this was written on another clock (a test's, a skewed host's)
# or is junk: the bucket starts afresh rather than holding Slack writes back for it.
HORIZON = 600.0

# Slack's Tier 3 methods the bot calls (per method per workspace: about 50 a minute).
TIER3 = frozenset(
    {
        "chat_update",
        "chat_delete",
        "conversations_replies",
        "conversations_invite",
    }
)


@dataclass(frozen=True)
class Pace:
    """The rates the writer keeps to: a little under Slack's published limits."""

    posts_per_second: float = 1.0  # chat.postMessage per channel (Slack: about 1)
    post_burst: float = 2.0  # posts a quiet channel takes at once ("short bursts")
    tier3_per_minute: float = 45.0  # each Tier 3 method (Slack: 50)
    tier3_burst: float = 3.0


@dataclass
class _Move:
    """One process's request to move a bucket: take a token, or hold it (a 429)."""

    key: str
    hold: bool
    seconds: float  # take: the interval; hold: how far ahead the due time must be
    ahead: float | None = None  # the answer: the due time, seconds from now (None: failed)
    done: bool = False


class SharedBuckets:
    """The buckets' due times in the database: each move is one upsert that moves the due
    time and returns it. The moves a process's threads ask for at once go in one transaction
    (the first to ask writes for everyone waiting behind it), so a burst of posts in many
    channels costs a few commits, not one each, and SQLite's write lock a few turns."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._cond = threading.Condition()
        self._waiting: list[_Move] = []
        self._writing = False

    def take(self, key: str, interval: float) -> float | None:
        """Take the bucket's next token; how far its due time lies ahead of now afterwards
        (None: the database could not be reached)."""
        return self._move(_Move(key, hold=False, seconds=interval))

    def hold(self, key: str, ahead: float) -> float | None:
        """Keep the bucket's due time at least `ahead` seconds from now (a 429)."""
        return self._move(_Move(key, hold=True, seconds=ahead))

    def _move(self, move: _Move) -> float | None:
        with self._cond:
            self._waiting.append(move)
            while self._writing and not move.done:
                self._cond.wait()
            if move.done:  # another thread wrote it
                return move.ahead
            self._writing = True
            batch, self._waiting = self._waiting, []
        try:
            self._write(batch)
        finally:
            with self._cond:
                for done in batch:
                    done.done = True
                self._writing = False
                self._cond.notify_all()
        return move.ahead

    def _write(self, batch: list[_Move]) -> None:
        try:
            with self.database.engine.begin() as conn:  # SQLite: BEGIN IMMEDIATE, the lock
                stamp = self.database.clock.now()  # after any wait for the lock
                now = stamp.timestamp()
                # Rows in key order (stable: one key's moves keep theirs), so two processes'
                # batches never lock the same rows in opposite orders (a PostgreSQL deadlock).
                for move in sorted(batch, key=lambda m: m.key):
                    stmt = _statement(conn.dialect.name, move.hold)
                    params = {"name": PACE_CURSOR + move.key, "stamp": stamp}
                    params.update(now=now, seconds=move.seconds)
                    move.ahead = float(conn.execute(stmt, params).scalar_one()) - now
        except SQLAlchemyError as exc:
            log.warning("Slack's pace falls back to this process's own: %s", exc)
            for move in batch:
                move.ahead = None


@functools.cache
def _statement(dialect: str, hold: bool) -> Any:
    """INSERT .. ON CONFLICT DO UPDATE .. RETURNING the bucket's new due time, in SQL both
    databases speak (so no max() of two, which PostgreSQL calls greatest())."""
    table = Cursor.__table__
    now = bindparam("now", type_=Float)
    seconds = bindparam("seconds", type_=Float)
    stamp = bindparam("stamp", type_=table.c.updated_at.type)
    due = cast(table.c.value, Float)
    # A due time too far ahead was written on another clock: the bucket starts afresh.
    due = case((due > now + HORIZON, now), else_=due)
    if hold:
        moved = case((due > now + seconds, due), else_=now + seconds)
    else:
        moved = case((due > now, due), else_=now) + seconds
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return (
        insert(table)
        .values(name=bindparam("name"), value=cast(now + seconds, Text), updated_at=stamp)
        .on_conflict_do_update(
            index_elements=[table.c.name],
            set_={"value": cast(moved, Text), "updated_at": stamp},
        )
        .returning(table.c.value)
    )


class Budget:
    """Token buckets per channel (posts) and per Tier 3 method; thread-safe. Reservations
    may go into debt: the caller then waits until its token is due. With `shared`, every
    process holding the same database draws on the same buckets (see the module docstring)."""

    def __init__(
        self,
        pace: Pace | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        shared: SharedBuckets | None = None,
    ) -> None:
        self.pace = pace
        self.clock = clock  # the mirror's; the shared buckets go by the database's clock
        self.shared = shared
        self._lock = threading.Lock()
        self._due: dict[str, float] = {}  # key -> when its next token is due (on `clock`)

    def key(self, method: str, kwargs: dict[str, Any]) -> str | None:
        """The bucket a call draws on (None: not paced)."""
        if self.pace is None:
            return None
        if method == "chat_postMessage":
            return f"post:{kwargs.get('channel')}"
        return method if method in TIER3 else None

    def _rate(self, key: str) -> tuple[float, float]:
        """The bucket's interval between tokens, and its burst."""
        assert self.pace is not None
        if key.startswith("post:"):
            return 1.0 / self.pace.posts_per_second, self.pace.post_burst
        return 60.0 / self.pace.tier3_per_minute, self.pace.tier3_burst

    def ready_in(self, key: str | None, *, spare: float = 0.0) -> float:
        """Seconds until `key` has a token free, `spare` more left for others (0: now), as
        far as this process knows: its own use, and others' as of its last reservation."""
        if key is None or self.pace is None:
            return 0.0
        interval, burst = self._rate(key)
        need = min(1.0 + spare, burst)
        with self._lock:
            ahead = self._due.get(key, -math.inf) - self.clock()
        return max(0.0, ahead - (burst - need) * interval)

    def reserve(self, key: str | None) -> float:
        """Take a token; the seconds until it is ours (0: now)."""
        if key is None or self.pace is None:
            return 0.0
        interval, burst = self._rate(key)
        tolerance = (burst - 1.0) * interval
        ahead = self.shared.take(key, interval) if self.shared else None
        with self._lock:
            now = self.clock()
            if ahead is None:  # this process's own budget
                ahead = max(self._due.get(key, now), now) + interval - now
            self._due[key] = max(self._due.get(key, now), now + ahead)
        return max(0.0, ahead - interval - tolerance)

    def hold(self, key: str | None, seconds: float) -> None:
        """Slack said 429: nobody draws on `key` for `seconds` (in any process, when shared)."""
        if key is None or self.pace is None:
            return
        interval, burst = self._rate(key)
        ahead = seconds + (burst - 1.0) * interval  # the next token is free `seconds` from now
        shared = self.shared.hold(key, ahead) if self.shared else None
        with self._lock:
            now = self.clock()
            self._due[key] = max(self._due.get(key, now), now + max(ahead, shared or 0.0))
