"""The deadline policy: hours and times from the `deadlines:` settings section.

There is no process-wide policy: the bot builds one from its Settings and passes it to every
call that needs it, so two apps (or tests) in one process never see each other's.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


class DeadlineOptions(Protocol):
    """The `deadlines:` configuration section (bot.settings.DeadlinesConfig)."""

    gdpr_hours: float
    reminder_hours_before: list[float]
    overdue_every_hours: float
    stale_after_hours: float
    digest_time: str
    timezone: str
    personal_data_tags: dict[str, list[str]]


@dataclass(frozen=True)
class DeadlinePolicy:
    gdpr_hours: float = 72
    reminder_hours_before: tuple[float, ...] = (48, 24, 6, 1)
    overdue_every_hours: float = 12
    stale_after_hours: float = 24
    digest_time: str = "09:00"
    timezone: str = "UTC"
    personal_data_tags: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: {"DataClassification": ("PII", "Confidential")}
    )

    @classmethod
    def from_options(cls, options: DeadlineOptions) -> DeadlinePolicy:
        return cls(
            gdpr_hours=float(options.gdpr_hours),
            reminder_hours_before=tuple(
                sorted((float(h) for h in options.reminder_hours_before), reverse=True)
            ),
            overdue_every_hours=float(options.overdue_every_hours),
            stale_after_hours=float(options.stale_after_hours),
            digest_time=options.digest_time,
            timezone=options.timezone,
            personal_data_tags={k: tuple(v) for k, v in (options.personal_data_tags or {}).items()},
        )

    @property
    def gdpr(self) -> dt.timedelta:
        return dt.timedelta(hours=self.gdpr_hours)

    @property
    def overdue_every(self) -> dt.timedelta:
        return dt.timedelta(hours=self.overdue_every_hours)

    @property
    def stale_after(self) -> dt.timedelta:
        return dt.timedelta(hours=self.stale_after_hours)
