"""The tests' time: a fixed start that never depends on the day the suite runs.

`TEST_CLOCK` starts at T0 and flows at the machine's pace, for tests whose threads must see
time pass; tests that move time by hand make a `ManualClock`. Tests that cross into a separate
bot process (which runs on the SystemClock at bot/'s edge) use the SystemClock too.
"""

from __future__ import annotations

import datetime as dt

from storage.clock import FlowingClock, ManualClock

T0 = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)

TEST_CLOCK = FlowingClock(start=T0)


def flowing(start: dt.datetime = T0) -> FlowingClock:
    return FlowingClock(start=start)


def manual(at: dt.datetime = T0) -> ManualClock:
    return ManualClock(at=at)
