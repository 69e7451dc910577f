"""The wall clock: read here, at bot/'s edge, and nowhere below it (see storage/clock.py)."""

from __future__ import annotations

import datetime as dt


class SystemClock:
    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)
