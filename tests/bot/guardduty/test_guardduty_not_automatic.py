"""A finding whose resource id fails validation: one warning line, and the card says so."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from tests.bot.guardduty.conftest import GuardDutyBot
from tests.bot.guardduty.test_guardduty_route import event, section_texts
from tests.commands.findings.guardduty_fixtures import ec2_detail

Start = Callable[..., GuardDutyBot]


def test_bad_instance_id_warns_once_and_the_card_says_what_was_not_done(
    guardduty_bot: Start, caplog: pytest.LogCaptureFixture
) -> None:
    gd = guardduty_bot(propose=True)
    detail = ec2_detail(severity=8)
    detail["resource"]["instanceDetails"]["instanceId"] = "GeneratedFindingInstanceId"
    caplog.set_level(logging.WARNING)
    assert gd.post(event(detail)).status_code == 200
    gd.settle()
    gd.bot.slack.wait_for(
        "chat.update", lambda c: "Not done automatically" in section_texts(c.args["blocks"])
    )
    records = [r for r in caplog.records if r.name.startswith(("bot.", "commands."))]
    assert [r.levelname for r in records] == ["WARNING"], [r.getMessage() for r in records]
    (record,) = records
    assert record.exc_info is None and "\n" not in record.getMessage()
    assert "GeneratedFindingInstanceId" in record.getMessage()
    update = gd.bot.slack.calls_for("chat.update")[-1]
    text = section_texts(update.args["blocks"])
    assert "containment" in text and "GeneratedFindingInstanceId" in text
    assert "/contain" in text  # says what to do instead
