"""Gapless, duplicate-free incident numbers.

The counter row is incremented inside the caller's transaction: a concurrent writer waits on
the row lock (PostgreSQL) or the database lock (SQLite), and a rollback gives the number back,
so numbers never skip or repeat.
"""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.orm import Session

from storage.models import Counter


def next_value(*, session: Session, name: str = "incident") -> int:
    # A Core statement on the table: the ORM's bulk-update path costs more than the UPDATE.
    counters = Counter.__table__
    value = session.execute(
        update(counters)
        .where(counters.c.name == name)
        .values(value=counters.c.value + 1)
        .returning(counters.c.value)
    ).scalar_one_or_none()
    if value is None:
        # First use of this counter: create it. A concurrent creator makes one of us fail on
        # the primary key, and that transaction's caller retries.
        session.add(Counter(name=name, value=1))
        session.flush()
        return 1
    return int(value)
