"""Every event the manifest subscribes to is answered 200, whether or not the bot acts on it.

Slack retries a delivery that is not answered 200 and disables the event subscriptions of an
app whose deliveries keep failing. The events below follow the shapes Slack publishes for
`app_home_opened` and each `message` subtype (docs.slack.dev/reference/events/message/...),
inside bolt-python's real event_callback envelope.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from moto import mock_aws
from sqlalchemy import func, select

from bot.guardduty.publisher import publisher_for
from storage.models import Finding
from tests.fixture_paths import FIXTURES

MANIFEST = Path(__file__).resolve().parents[2] / "manifest.yml"
CHANNEL = "C0INCIDENT"
TS = "1700000000.000100"

_USER_MESSAGE = {
    "type": "message",
    "channel": CHANNEL,
    "user": "U061F7AUR",
    "text": "is the web tier still serving?",
    "ts": TS,
    "event_ts": TS,
    "channel_type": "channel",
}

# message subtype -> the event as Slack sends it (fields from Slack's published examples).
MESSAGES: dict[str, dict[str, Any]] = {
    "plain": _USER_MESSAGE,
    "thread_reply": {
        **_USER_MESSAGE,
        "ts": "1700000001.000200",
        "thread_ts": TS,
        "parent_user_id": "U061F7AUR",
    },
    "bot_message": {
        "type": "message",
        "subtype": "bot_message",
        "channel": CHANNEL,
        "text": "Deploy finished",
        "ts": TS,
        "username": "ci",
        "bot_id": "B0UNTRUSTED",
        "channel_type": "channel",
    },
    "me_message": {**_USER_MESSAGE, "subtype": "me_message", "text": "is looking"},
    "message_changed": {
        "type": "message",
        "subtype": "message_changed",
        "hidden": True,
        "channel": CHANNEL,
        "ts": "1700000002.000300",
        "event_ts": "1700000002.000300",
        "channel_type": "channel",
        "message": {
            "type": "message",
            "user": "U061F7AUR",
            "text": "is the web tier still serving? (edited)",
            "ts": TS,
            "edited": {"user": "U061F7AUR", "ts": "1700000002.000000"},
        },
        "previous_message": {
            "type": "message",
            "user": "U061F7AUR",
            "text": "is the web tier still serving?",
            "ts": TS,
        },
    },
    "message_deleted": {
        "type": "message",
        "subtype": "message_deleted",
        "hidden": True,
        "channel": CHANNEL,
        "ts": "1700000003.000400",
        "deleted_ts": TS,
        "event_ts": "1700000003.000400",
        "channel_type": "channel",
        "previous_message": {
            "type": "message",
            "user": "U061F7AUR",
            "text": "is the web tier still serving?",
            "ts": TS,
        },
    },
    "file_share": {
        **_USER_MESSAGE,
        "subtype": "file_share",
        "text": "packet capture",
        "upload": True,
        "display_as_bot": False,
        "files": [
            {
                "id": "F0CAPTURE1",
                "created": 1700000000,
                "timestamp": 1700000000,
                "name": "web-1.pcap",
                "title": "web-1.pcap",
                "mimetype": "application/vnd.tcpdump.pcap",
                "filetype": "binary",
                "user": "U061F7AUR",
                "size": 20480,
                "mode": "hosted",
                "is_external": False,
                "is_public": True,
                "url_private": "https://files.slack.com/files-pri/T0001-F0CAPTURE1/web-1.pcap",
            }
        ],
    },
    "thread_broadcast": {
        **_USER_MESSAGE,
        "subtype": "thread_broadcast",
        "ts": "1700000004.000500",
        "thread_ts": TS,
        "root": {
            "type": "message",
            "user": "U061F7AUR",
            "text": "is the web tier still serving?",
            "ts": TS,
            "thread_ts": TS,
            "reply_count": 1,
            "reply_users": ["U061F7AUR"],
            "latest_reply": "1700000004.000500",
        },
    },
    "message_replied": {
        "type": "message",
        "subtype": "message_replied",
        "hidden": True,
        "channel": CHANNEL,
        "event_ts": "1700000005.000600",
        "ts": "1700000005.000600",
        "message": {
            "type": "message",
            "user": "U061F7AUR",
            "text": "is the web tier still serving?",
            "thread_ts": TS,
            "reply_count": 1,
            "replies": [{"user": "U0REPLIER", "ts": "1700000001.000200"}],
            "ts": TS,
        },
    },
    "channel_join": {
        **_USER_MESSAGE,
        "subtype": "channel_join",
        "user": "U0NEWCOMER",
        "text": "<@U0NEWCOMER> has joined the channel",
        "inviter": "U061F7AUR",
    },
    "channel_leave": {
        **_USER_MESSAGE,
        "subtype": "channel_leave",
        "text": "<@U061F7AUR> has left the channel",
    },
    "channel_topic": {
        **_USER_MESSAGE,
        "subtype": "channel_topic",
        "topic": "INC-1 web tier",
        "text": "<@U061F7AUR> set the channel topic: INC-1 web tier",
    },
    "channel_purpose": {
        **_USER_MESSAGE,
        "subtype": "channel_purpose",
        "purpose": "security incidents",
        "text": "<@U061F7AUR> set the channel purpose: security incidents",
    },
    "channel_name": {
        **_USER_MESSAGE,
        "subtype": "channel_name",
        "old_name": "incidents",
        "name": "security-incidents",
        "text": "<@U061F7AUR> has renamed the channel from incidents to security-incidents",
    },
    "channel_archive": {
        **_USER_MESSAGE,
        "subtype": "channel_archive",
        "text": "<@U061F7AUR> archived the channel",
    },
    "pinned_item": {
        **_USER_MESSAGE,
        "subtype": "pinned_item",
        "item_type": "C",
        "text": "<@U061F7AUR> pinned a message to this channel.",
        "item": {},
    },
}

APP_HOME: dict[str, dict[str, Any]] = {
    f"app_home_opened:{tab}": {
        "type": "app_home_opened",
        "user": "U061F7AUR",
        "channel": "D0APPHOME",
        "tab": tab,
        "event_ts": "1700000000.000000",
    }
    for tab in ("home", "messages")
}


@pytest.fixture
def aws() -> Iterator[None]:
    with mock_aws():
        yield


def test_every_subscribed_event_type_is_covered_here():
    manifest = yaml.safe_load(MANIFEST.read_text())
    subscribed = {
        e.split(".")[0] for e in manifest["settings"]["event_subscriptions"]["bot_events"]
    }
    sent = {event["type"] for event in [*MESSAGES.values(), *APP_HOME.values()]}
    assert subscribed == sent


@pytest.mark.parametrize("name", [*MESSAGES, *APP_HOME])
def test_subscribed_events_are_acknowledged(bot, aws: None, name: str) -> None:
    event = copy.deepcopy(MESSAGES.get(name) or APP_HOME[name])
    response = bot.sender.event(event)
    assert response.status_code == 200, (name, response.text)
    retried = bot.sender.event(
        event, headers={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
    )
    assert retried.status_code == 200, (name, retried.text)
    bot.idle()


def test_trusted_bot_findings_are_still_read(bot_factory, aws: None) -> None:
    bot = bot_factory({"slack": {"trusted_bot_ids": ["B0CHATBOT"]}})
    bot.runtime.options.guardduty_clients = lambda service, region: boto3.client(
        service, region_name=region or "us-east-1"
    )
    finding = (FIXTURES / "guardduty" / "custodian__ec2-duty-event.json").read_text()
    message = {
        **MESSAGES["bot_message"],
        "bot_id": "B0CHATBOT",
        "text": "GuardDuty finding:\n```" + json.dumps(json.loads(finding)) + "```",
    }
    assert bot.sender.event(message).status_code == 200
    assert publisher_for(bot.runtime).wait_idle(10)  # its card is done before AWS mocks go
    with bot.session() as session:
        assert session.scalar(select(func.count()).select_from(Finding)) == 1
    # The same JSON from a person or an untrusted bot is acknowledged and never a finding.
    for other in ({**message, "bot_id": "B0UNTRUSTED"}, {**_USER_MESSAGE, "text": message["text"]}):
        assert bot.sender.event({**other, "ts": "1700000009.000900"}).status_code == 200
    with bot.session() as session:
        assert session.scalar(select(func.count()).select_from(Finding)) == 1
