"""StormWatch on a set clock: when the storm card is due, and that asking never changes it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from bot.guardduty.storm import QUIET_REFRESH, StormWatch


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def now(self) -> dt.datetime:
        return dt.datetime(2024, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=self.t)


def written(
    watch: StormWatch, clock: Clock, *, posted: bool, meanwhile: Callable[[], object] = list
) -> None:
    """What the publisher does to write the storm card; `meanwhile` runs while Slack answers."""
    storm = watch.storm
    assert storm is not None
    storm.dirty = False
    live = watch.live() is not None
    members = list(storm.members)
    meanwhile()
    storm.ts = storm.ts or "1.000001"
    storm.last_write = clock()
    storm.shown_live = live
    storm.listed.update(members)
    if not live and posted and not storm.dirty:
        storm.done = True


def test_asking_when_the_card_is_due_never_makes_it_stale() -> None:
    clock = Clock()
    watch = StormWatch(clock=clock, now=clock.now, threshold=2, window=3.0, refresh=1.0)
    for incident_id in (1, 2, 3):
        watch.opened(incident_id)
    assert watch.due() == 0.0  # a storm: its card is not posted yet
    written(watch, clock, posted=False)
    assert watch.due() is None  # written and nothing new

    clock.t = 10.0  # the storm ended (3 s without a new incident)
    assert watch.due() == 0.0  # the card must say it ended
    # Both workers and wait_idle ask while that write is in flight: asking changes nothing.
    written(watch, clock, posted=True, meanwhile=lambda: [watch.due() for _ in range(5)])
    assert watch.storm is not None and watch.storm.done
    assert watch.due() is None


def test_an_ended_storm_is_rewritten_as_its_cards_are_posted_then_done() -> None:
    clock = Clock()
    watch = StormWatch(clock=clock, now=clock.now, threshold=2, window=3.0, refresh=1.0)
    for incident_id in (1, 2, 3):
        watch.opened(incident_id)
    written(watch, clock, posted=False)
    clock.t = 10.0
    written(watch, clock, posted=False)  # says it ended; cards still being posted
    assert watch.due() is None and not watch.storm.done  # type: ignore[union-attr]
    watch.touched(2)  # a card was posted: its entry links to it now
    assert watch.due() == QUIET_REFRESH  # an ended storm's card is refreshed less often
    clock.t = 10.0 + QUIET_REFRESH
    assert watch.due() == 0.0
    written(watch, clock, posted=True)  # every entry links to its card now
    assert watch.storm.done and watch.due() is None  # type: ignore[union-attr]


def test_an_incident_that_joined_during_a_write_is_shown_at_the_live_pace_after_the_end() -> None:
    """Incidents that join while the storm card is being posted are shown at its next live
    refresh, even when a loaded machine's worker only looks again after the storm ended: the
    quiet refresh kept them off the card for 10 s (the storm target is 5 s). The likely cause
    of a CI run whose storm card listed every incident only after 10 s."""
    clock = Clock()
    watch = StormWatch(clock=clock, now=clock.now, threshold=2, window=3.0, refresh=1.0)
    for incident_id in (1, 2, 3):
        watch.opened(incident_id)
    written(watch, clock, posted=False, meanwhile=lambda: watch.opened(4))
    clock.t = 5.0  # the storm ended before the worker looked again
    assert watch.live() is None
    assert watch.due() == 0.0  # 4 is not on the card yet: the live pace, already past
    written(watch, clock, posted=False)
    watch.touched(2)  # every incident is on the card now: cards' links wait for the quiet pace
    assert watch.due() == QUIET_REFRESH
