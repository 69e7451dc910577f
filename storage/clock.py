"""The one notion of "now" below bot/: an injected Clock.

Nothing under bot/'s edge reads the wall clock. The running process hands a SystemClock
(bot/clock.py) to the Database and the runtime; tests and drills hand a clock they control,
so no behaviour depends on the day the code runs.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any, Protocol


class Clock(Protocol):
    def now(self) -> dt.datetime:
        """An aware UTC datetime."""
        ...


@dataclass
class ManualClock:
    """Time stands still until a test moves it."""

    at: dt.datetime

    def now(self) -> dt.datetime:
        return self.at

    def advance(self, **delta: float) -> dt.datetime:
        self.at += dt.timedelta(**delta)
        return self.at

    def set(self, at: dt.datetime) -> None:
        self.at = at


@dataclass
class FlowingClock:
    """Starts at a chosen instant and runs at the machine's pace (monotonic), whatever the date.

    For tests whose threads must see time pass (timers, heartbeats) yet must not depend on
    the calendar day they run on.
    """

    start: dt.datetime
    _origin: float = field(default_factory=time.monotonic, repr=False)
    offset: dt.timedelta = field(default_factory=dt.timedelta)

    def now(self) -> dt.datetime:
        return self.start + self.offset + dt.timedelta(seconds=time.monotonic() - self._origin)

    def advance(self, **delta: float) -> dt.datetime:
        self.offset += dt.timedelta(**delta)
        return self.now()


CLOCK_OPTION = "incident_bot_clock"


def column_now(context: Any) -> dt.datetime:
    """Column default for created/updated stamps: the clock the Database was given.

    A context-sensitive default, so ORM and Core inserts alike take their time from the
    engine's clock; a missing clock is an error, never a silent wall-clock read.
    """
    clock: Clock = context.execution_options[CLOCK_OPTION]
    return clock.now()
