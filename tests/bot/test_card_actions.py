"""Card buttons, modals and the App Home tab, driven over HTTP with Slack's real payloads."""

from __future__ import annotations

import datetime as dt
import json

from sqlalchemy import select

from storage.models import ContainmentRequest, Incident, TimelineEvent
from tests.bot.test_incident_commands import EVIL, ack_json, events, incident, open_incident
from tests.slack_signing import block_actions_payload, view_submission_payload


def clicked(call) -> bool:
    return call.path == "/response/click"


def click(bot, action_id: str, value: str, card, **kw):
    payload = block_actions_payload(
        action_id,
        value,
        message_ts=card.response["ts"],
        response_url=bot.slack.response_url("click"),
        message=card.response["message"],
        **kw,
    )
    return payload


def test_severity_menu_updates_card(bot):
    card = open_incident(bot)
    payload = click(bot, "incident_severity", "", card, block_id="incident_card")
    payload["actions"][0].update(
        type="static_select",
        selected_option={"value": "critical", "text": {"type": "plain_text", "text": "critical"}},
    )
    assert bot.sender.action(payload).status_code == 200
    update = bot.slack.wait_for("chat.update")
    bot.idle()
    assert update.args["text"].startswith("INC-1 [critical/open]")
    assert incident(bot).severity == "critical"
    answer = bot.slack.wait_for("response_url", clicked)
    assert answer.args["replace_original"] is False  # the card is never overwritten
    assert answer.args["response_type"] == "ephemeral"


def test_timeline_button_answers_ephemerally(bot):
    card = open_incident(bot)
    assert bot.sender.action(click(bot, "incident_timeline", "INC-1", card)).status_code == 200
    answer = bot.slack.wait_for("response_url", clicked)
    assert answer.args["response_type"] == "ephemeral"
    assert answer.args["replace_original"] is False
    assert "incident.opened" in json.dumps(answer.args["blocks"])


def test_unknown_incident_on_button_is_answered(bot):
    card = open_incident(bot)
    assert bot.sender.action(click(bot, "incident_timeline", "INC-77", card)).status_code == 200
    answer = bot.slack.wait_for("response_url", clicked)
    assert answer.args["text"] == "No incident INC-77. /incident list shows the open ones."


def test_note_button_opens_modal_and_submission_adds_note(bot):
    card = open_incident(bot)
    assert bot.sender.action(click(bot, "incident_note", "INC-1", card)).status_code == 200
    opened = bot.slack.wait_for("views.open")
    view = opened.args["view"]
    assert view["callback_id"] == "incident_note_modal"
    assert opened.args["trigger_id"] == "111.222.valid"

    empty = view_submission_payload(
        view["callback_id"],
        {"note": {"note": {"type": "plain_text_input", "value": "  "}}},
        private_metadata=view["private_metadata"],
    )
    refused = bot.sender.action(empty)
    assert refused.json() == {
        "response_action": "errors",
        "errors": {"note": "Write the note first."},
    }

    submit = view_submission_payload(
        view["callback_id"],
        {"note": {"note": {"type": "plain_text_input", "value": EVIL}}},
        private_metadata=view["private_metadata"],
    )
    assert bot.sender.action(submit).status_code == 200
    line = bot.slack.wait_for("chat.postMessage", lambda c: "📝" in c.args.get("text", ""))
    bot.idle()
    assert line.args["thread_ts"] == card.response["ts"]
    assert "<!channel>" not in line.args["text"]
    assert events(bot)[-1].summary == EVIL


def test_resolve_button_modal_then_submission_changes_status(bot):
    card = open_incident(bot)
    assert bot.sender.action(click(bot, "incident_resolve", "INC-1", card)).status_code == 200
    view = bot.slack.wait_for("views.open").args["view"]
    submit = view_submission_payload(
        view["callback_id"],
        {"summary": {"summary": {"type": "plain_text_input", "value": "rebuilt host"}}},
        private_metadata=view["private_metadata"],
    )
    assert bot.sender.action(submit).status_code == 200
    update = bot.slack.wait_for("chat.update")
    bot.idle()
    assert update.args["text"].startswith("INC-1 [medium/resolved]")
    inc = incident(bot)
    assert inc.status == "resolved" and inc.resolution == "rebuilt host"
    # the result reaches the submitter as a DM from the bot (modals have no response_url)
    dm = bot.slack.wait_for("chat.postMessage", lambda c: c.args["channel"] == "W111")
    assert "INC-1" in dm.args["text"] and "resolved" in dm.args["text"]


def test_close_button_on_closed_incident_explains(bot):
    card = open_incident(bot)
    assert ack_json(bot.command("close INC-1 done")) == {}
    bot.slack.wait_for("chat.update")
    bot.idle()
    assert bot.sender.action(click(bot, "incident_close", "INC-1", card)).status_code == 200
    answer = bot.slack.wait_for(
        "response_url", lambda c: clicked(c) and "cannot become" in c.args["text"]
    )
    assert answer.args["text"] == "INC-1 is closed and cannot become closed."
    assert not bot.slack.calls_for("views.open")


def test_app_home_lists_open_incidents_with_approvals_and_deadlines(bot):
    open_incident(bot, "Quiet one")
    bot.slack.reset_calls()
    open_incident(bot, EVIL)
    assert ack_json(bot.command("personal-data INC-2")) == {}
    bot.slack.wait_for("chat.update")
    bot.idle()
    now = bot.runtime.now()
    with bot.runtime.database.session() as session:
        inc = session.scalars(select(Incident).where(Incident.number == 1)).one()
        session.add(
            ContainmentRequest(
                incident_id=inc.id,
                target_type="ec2_instance",
                target_id="i-0abc",
                requested_by="U1",
                expires_at=now + dt.timedelta(minutes=25),
                status="pending",
            )
        )
    event = {
        "type": "app_home_opened",
        "user": "W111",
        "channel": "D0HOME",
        "tab": "home",
        "event_ts": "1596183880.004200",
    }
    assert bot.sender.event(event).status_code == 200
    published = bot.slack.wait_for("views.publish")
    assert published.args["user_id"] == "W111"
    flat = json.dumps(published.args["view"], ensure_ascii=False)
    assert "Open incidents (2)" in flat
    assert "*Pending approvals* 1" in flat
    assert "approval expires in 24m" in flat or "approval expires in 25m" in flat
    assert "regulator notice in 2d 23h" in flat
    assert "<!channel>" not in flat and "&lt;!channel&gt;" in flat


def test_app_home_for_messages_tab_is_ignored(bot):
    event = {
        "type": "app_home_opened",
        "user": "W111",
        "channel": "D0HOME",
        "tab": "messages",
        "event_ts": "1596183880.004200",
    }
    assert bot.sender.event(event).status_code == 200
    bot.idle()
    assert not bot.slack.calls_for("views.publish")


def test_timeline_records_button_errors(bot):
    card = open_incident(bot)
    bot.slack.fail_next("chat.update", "msg_too_long")
    payload = click(bot, "incident_severity", "", card, block_id="incident_card")
    payload["actions"][0].update(type="static_select", selected_option={"value": "low"})
    bot.sender.action(payload)
    answer = bot.slack.wait_for(
        "response_url", lambda c: clicked(c) and "severity is now low" in c.args["text"]
    )
    bot.idle()
    # The change is saved; the clicker hears which part Slack did not show, not "failed".
    assert (
        "Slack did not show the card update (Slack answered `msg_too_long`)"
        in (answer.args["text"])
    )
    with bot.session() as session:
        kinds = session.scalars(select(TimelineEvent.kind).order_by(TimelineEvent.seq)).all()
    assert kinds[-2:] == ["incident.severity", "slack.not_shown"]


def seed_many(bot, count: int, title: str) -> None:
    from commands.incidents import open_incident as open_service

    with bot.runtime.database.session() as session:
        for n in range(count):
            open_service(
                session=session,
                title=f"{n} {title}",
                created_by="W111",
                severity=("low", "medium", "high", "critical")[n % 4],
            )


def test_long_list_and_home_stay_within_slack_limits(bot):
    from tests.slack_fake import MAX_MESSAGE_BLOCKS, _block_errors

    seed_many(bot, 60, "<!channel> " + "&<>" * 100)
    listing = ack_json(bot.command("list"))
    assert _block_errors(listing["blocks"], max_blocks=MAX_MESSAGE_BLOCKS) == []
    assert len(listing["text"]) <= 4000
    assert "20 more not shown" in json.dumps(listing["blocks"])
    event = {
        "type": "app_home_opened",
        "user": "W111",
        "channel": "D0HOME",
        "tab": "home",
        "event_ts": "1596183880.004200",
    }
    bot.sender.event(event)
    published = bot.slack.wait_for("views.publish")
    assert published.ok, published.response  # the fake refuses > 100 blocks, like Slack
    flat = json.dumps(published.args["view"], ensure_ascii=False)
    assert "Open incidents (60)" in flat and "20 more" in flat
    # critical incidents come first on the Home tab
    assert published.args["view"]["blocks"][3]["text"]["text"].startswith("🚨 *INC-4*")


# --- signed requests missing what Slack always sends: an answer, never a 500 --------------


def test_a_forged_severity_is_quoted_as_sent_never_as_formatting(bot):
    card = open_incident(bot)
    payload = click(bot, "incident_severity", "", card, block_id="incident_card")
    payload["actions"][0].update(
        type="static_select",
        selected_option={"value": "*Urgent* <!here>", "text": {"type": "plain_text", "text": "x"}},
    )
    assert bot.sender.action(payload).status_code == 200
    answer = bot.slack.wait_for("response_url", clicked)
    bot.idle()
    wj = "\u2060"
    assert answer.args["text"] == (
        "Severity must be one of low, medium, high, critical, not "
        f"'{wj}*{wj}urgent{wj}*{wj} &lt;!here&gt;'."
    )
    assert incident(bot).severity == "medium"


def test_severity_menu_on_a_message_without_blocks_is_answered(bot):
    card = open_incident(bot)
    payload = click(bot, "incident_severity", "", card, block_id="incident_card")
    payload["actions"][0].update(type="static_select", selected_option={"value": "low"})
    payload["message"] = {"type": "message", "text": "no blocks here"}
    response = bot.sender.action(payload)
    assert response.status_code == 200, response.text
    answer = bot.slack.wait_for("response_url", clicked)
    assert answer.args["text"] == (
        "This card no longer names its incident; use /incident severity INC-N."
    )
    bot.idle()
    assert incident(bot).severity == "medium"


def test_note_button_without_a_value_is_answered(bot):
    card = open_incident(bot)
    payload = click(bot, "incident_note", "", card)
    del payload["actions"][0]["value"]
    response = bot.sender.action(payload)
    assert response.status_code == 200, response.text
    answer = bot.slack.wait_for("response_url", clicked)
    assert answer.args["text"] == (
        "This button does not name an incident; use /incident note INC-N and the note instead."
    )
    assert not bot.slack.calls_for("views.open")


def test_reject_modal_with_a_garbled_request_id_is_answered(bot):
    open_incident(bot)
    submit = view_submission_payload(
        "containment_reject_modal",
        {"reason": {"reason": {"type": "plain_text_input", "value": "not ours"}}},
        private_metadata=json.dumps({"request_id": "abc", "channel": "C0INCIDENT"}),
    )
    response = bot.sender.action(submit)
    assert response.status_code == 200, response.text
    dm = bot.slack.wait_for("chat.postMessage", lambda c: c.args["channel"] == "W111")
    bot.idle()
    assert "failed" not in dm.args["text"] and "Traceback" not in dm.args["text"]
    with bot.session() as session:
        assert session.scalars(select(ContainmentRequest)).all() == []


def test_modal_with_unreadable_metadata_is_answered(bot):
    open_incident(bot)
    bot.idle()
    before = len(events(bot))
    submit = view_submission_payload(
        "incident_note_modal",
        {"note": {"note": {"type": "plain_text_input", "value": "hello"}}},
        private_metadata="[not json",
    )
    response = bot.sender.action(submit)
    assert response.status_code == 200, response.text
    dm = bot.slack.wait_for("chat.postMessage", lambda c: c.args["channel"] == "W111")
    bot.idle()
    assert dm.args["text"] == (
        "This form does not name an incident; use /incident note INC-N and the note."
    )
    assert len(events(bot)) == before  # no note went anywhere
