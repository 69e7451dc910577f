"""A writer process for tests/bot/test_slack_pace.py: its own SlackWriter (so its own
in-process budget) on the database named, posting `count` messages to one channel of the fake
Slack, patiently, from the moment a line arrives on stdin.

    python -m tests.bot.pace_writer DATABASE_URL SLACK_API_URL CHANNEL TAG COUNT
"""

from __future__ import annotations

import sys

from slack_sdk import WebClient

from bot.clock import SystemClock
from bot.slack_out import SlackWriter
from storage.db import Database


def main(argv: list[str]) -> None:
    url, base_url, channel, tag, count = argv
    database = Database(url, clock=SystemClock())  # a process of its own: bot/'s edge clock
    # No retry handlers: every 429 reaches the writer (and would show in the fake's record).
    client = WebClient(token="xoxb-test", base_url=base_url, retry_handlers=[])
    writer = SlackWriter(client, database)
    print("ready", flush=True)
    sys.stdin.readline()
    for n in range(int(count)):
        writer.call("chat_postMessage", patient=True, channel=channel, text=f"{tag} {n}")
    print(f"posted {writer.stats.posts} rate_limited {writer.stats.rate_limited}", flush=True)
    database.dispose()


if __name__ == "__main__":
    main(sys.argv[1:])
