"""The reminder kinds this package posts itself, as a `{kind: handler}` map.

The bot merges it with other features' kinds (bot/reminder_kinds.py) and hands the whole
map to the scheduler; nothing is registered by importing.
"""

from __future__ import annotations

from commands.deadlines.delivery import KindHandler
from commands.deadlines.digest import digest_delivery
from commands.deadlines.gdpr import gdpr_delivery
from commands.deadlines.stale import stale_delivery


def deadline_kinds() -> dict[str, KindHandler]:
    return {
        "gdpr": gdpr_delivery,
        "gdpr_overdue": gdpr_delivery,
        "stale": stale_delivery,
        "digest": digest_delivery,
    }
