"""Durations and instants as plain text (no Slack markup): `2 d 3 h`, `2026-01-05 09:00 UTC`."""

from __future__ import annotations

import datetime as dt


def format_duration(delta: dt.timedelta) -> str:
    """`2 d 3 h`, `5 h 12 m`, `4 m 10 s`, `36 s` (sign dropped; callers say overdue)."""
    secs = int(abs(delta.total_seconds()))
    days, rest = divmod(secs, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} m"
    if minutes:
        return f"{minutes} m {seconds} s"
    return f"{seconds} s"


def utc_text(ts: dt.datetime) -> str:
    return ts.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
