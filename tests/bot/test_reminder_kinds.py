"""The reminder kinds are one explicit map: nothing registers by import, and the standalone
scheduler gets every kind without loading the Slack listeners."""

from __future__ import annotations

import json
import subprocess
import sys

from bot.reminder_kinds import reminder_kinds
from commands.deadlines.queue import KINDS

PROBE = """
import json, sys
from bot.reminder_kinds import reminder_kinds
import bot.scheduler
kinds = reminder_kinds()
print(json.dumps({
    "deliver": sorted(kinds.deliver),
    "after_post": sorted(kinds.after_post),
    "listeners": sorted(m for m in sys.modules if m.startswith("bot.listeners.")),
}))
"""


def test_every_kind_but_the_plain_followup_has_a_handler() -> None:
    kinds = reminder_kinds()
    assert set(kinds.deliver) == set(KINDS) - {"followup"}
    assert set(kinds.after_post) <= set(KINDS)


def test_the_standalone_scheduler_loads_kinds_without_the_feature_listeners() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    found = json.loads(out.stdout)
    assert found["deliver"] == sorted(set(KINDS) - {"followup"})
    assert found["after_post"] == ["approval_expiry"]
    # The listeners that handle /contain, /incident notified and the like stay unloaded.
    for listener in ("containment", "deadlines", "investigation", "drill", "incident_subcommands"):
        assert f"bot.listeners.{listener}" not in found["listeners"]
