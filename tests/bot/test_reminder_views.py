"""bot/views/reminders.py: the regulator clock and durations as text."""

from __future__ import annotations

import datetime as dt

from bot.views import blocks as bk
from bot.views.reminders import time_left_text
from commands.deadlines import timefmt
from commands.deadlines.policy import DeadlinePolicy
from storage.models import Incident

T0 = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)


def policy(**kw: float) -> DeadlinePolicy:
    return DeadlinePolicy(**kw)  # type: ignore[arg-type]


def test_mentions_are_for_ids_only_and_names_are_escaped() -> None:
    assert bk.user("U0OWNER") == "<@U0OWNER>"
    assert bk.user("<!channel>") == "&lt;!channel&gt;"
    assert bk.user(None) == "nobody"
    assert bk.subteam("S0IRTEAM") == "<!subteam^S0IRTEAM>"
    assert bk.subteam("@ir-team") == "@ir-team"
    assert bk.subteam("") is None


def test_time_left_text_for_cards() -> None:
    incident = Incident(number=3, personal_data=True, aware_at=T0)
    pol = policy(gdpr_hours=72)
    assert time_left_text(incident, now=T0 + dt.timedelta(hours=1), policy=pol) == (
        "Regulator notice due in 2 d 23 h (by 2026-11-30 12:00 UTC)"
    )
    assert time_left_text(incident, now=T0 + dt.timedelta(hours=75), policy=pol) == (
        "Regulator notice OVERDUE by 3 h 0 m (was due 2026-11-30 12:00 UTC)"
    )
    incident.notified_at = T0 + dt.timedelta(hours=70)
    incident.notified_reference = "ICO-9"
    assert time_left_text(incident, now=T0 + dt.timedelta(hours=80), policy=pol) == (
        "Regulator notified 2026-11-30 10:00 UTC (ICO-9)"
    )
    assert time_left_text(Incident(number=4, personal_data=False), now=T0, policy=pol) is None
    assert timefmt.format_duration(dt.timedelta(seconds=36)) == "36 s"
    assert timefmt.format_duration(dt.timedelta(minutes=4, seconds=10)) == "4 m 10 s"
