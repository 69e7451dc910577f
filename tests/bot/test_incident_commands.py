"""/incident over real HTTP: signed requests in, what Slack received and the database out."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from sqlalchemy import select

from bot.views import blocks as bk
from storage.models import Incident, TimelineEvent
from tests.slack_fake import Call
from tests.slack_mrkdwn import formatting_from_user

EVIL = "<!channel> <https://evil|click>"


def ack_json(response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    return response.json() if response.content else {}


def flat(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def rich_texts(blocks: Any) -> str:
    """What the rich_text blocks show, one line per block (users as @U..): Slack shows their
    text elements literally."""
    from bot.drill.console import rich_text_to_text

    return "\n".join(rich_text_to_text(b) for b in blocks or [] if b.get("type") == "rich_text")


def all_mrkdwn(payload: Any) -> list[str]:
    """Every string Slack would parse as mrkdwn: `text` fields and mrkdwn text objects (not
    plain_text objects, nor rich_text `text` elements: Slack shows those literally)."""
    found: list[str] = []
    if isinstance(payload, dict):
        literal = payload.get("type") in ("plain_text", "text")
        if not literal and isinstance(payload.get("text"), str):
            found.append(payload["text"])
        for value in payload.values():
            if isinstance(value, dict | list):
                found.extend(all_mrkdwn(value))
    elif isinstance(payload, list):
        for item in payload:
            found.extend(all_mrkdwn(item))
    return found


def incident(bot, number: int = 1) -> Incident:
    with bot.session() as session:
        return session.scalars(select(Incident).where(Incident.number == number)).one()


def incident_count(bot) -> int:
    with bot.session() as session:
        return len(session.scalars(select(Incident)).all())


def events(bot, number: int = 1) -> list[TimelineEvent]:
    with bot.session() as session:
        inc = session.scalars(select(Incident).where(Incident.number == number)).one()
        return list(
            session.scalars(
                select(TimelineEvent)
                .where(TimelineEvent.incident_id == inc.id)
                .order_by(TimelineEvent.seq)
            )
        )


def open_incident(bot, title: str = "Disk full on db-1", **kw: Any) -> Call:
    assert ack_json(bot.command(f"open {title}", **kw)) == {}
    card = bot.slack.wait_for("chat.postMessage", lambda c: "blocks" in c.args)
    bot.idle()
    return card


def response_texts(bot) -> list[str]:
    return [c.args.get("text", "") for c in bot.slack.calls_for("response_url")]


# -- open ------------------------------------------------------------------------------------


def test_open_posts_card_with_buttons_and_starts_thread(bot):
    card = open_incident(bot)
    assert card.args["channel"] == "C0INCIDENT"
    blocks = card.args["blocks"]
    dumped = flat(blocks)
    assert (
        blocks[0]["type"] == "header" and "INC-1 · Disk full on db-1" in blocks[0]["text"]["text"]
    )
    for label in ("*Severity*", "medium", "*Status*", "open", "*Owner*", "<@W111>", "*Age*"):
        assert label in dumped
    action_ids = [el["action_id"] for b in blocks if b["type"] == "actions" for el in b["elements"]]
    assert {
        "incident_severity",
        "incident_note",
        "incident_timeline",
        "incident_resolve",
        "incident_close",
    } <= set(action_ids)

    inc = incident(bot)
    assert (inc.channel_id, inc.card_ts, inc.thread_ts) == (
        "C0INCIDENT",
        card.response["ts"],
        card.response["ts"],
    )
    thread = bot.slack.wait_for("chat.postMessage", lambda c: c.args.get("thread_ts"))
    assert thread.args["thread_ts"] == card.response["ts"]
    assert "Opened *INC-1*" in bot.slack.wait_for("response_url").args["text"]
    assert [e.kind for e in events(bot)] == ["incident.opened", "slack.card_posted"]


def test_open_escapes_title_everywhere_mrkdwn_is_parsed(bot):
    card = open_incident(bot, EVIL)
    assert incident(bot).title == EVIL  # stored as typed
    posted = [c.args for c in bot.slack.calls_for("chat.postMessage")]
    for text in all_mrkdwn(posted):
        assert "<!channel>" not in text and "<https://evil" not in text, text
    assert any("&lt;!channel&gt; &lt;https://evil|click&gt;" in t for t in all_mrkdwn(posted))
    assert EVIL in card.args["blocks"][0]["text"]["text"]  # plain_text header: shown literally
    assert card.args["blocks"][0]["text"]["type"] == "plain_text"


def test_open_without_title_answers_in_ack_and_does_nothing(bot):
    body = ack_json(bot.command("open   "))
    assert body["response_type"] == "ephemeral"
    assert body["text"].startswith("Give the incident a title")
    bot.idle()
    assert not bot.slack.calls_for("chat.postMessage")
    with bot.session() as session:
        assert session.scalars(select(Incident)).first() is None


def test_open_with_over_long_title_is_cut_so_slack_accepts(bot):
    card = open_incident(bot, "x" * 1000)
    assert card.ok  # the fake rejects what Slack rejects (header > 150 chars, etc.)
    assert len(card.args["blocks"][0]["text"]["text"]) <= 150


def test_channel_per_incident_creates_channel_and_invites_opener(bot_factory):
    bot = bot_factory({"slack": {"channel_per_incident": True}})
    assert ack_json(bot.command("open Disk FULL on db-1!")) == {}
    created = bot.slack.wait_for("conversations.create")
    assert created.args["name"] == "inc-1-disk-full-on-db-1"
    channel_id = created.response["channel"]["id"]
    invite = bot.slack.wait_for("conversations.invite")
    assert (invite.args["channel"], invite.args["users"]) == (channel_id, "W111")
    card = bot.slack.wait_for("chat.postMessage", lambda c: c.args["channel"] == channel_id)
    announce = bot.slack.wait_for("chat.postMessage", lambda c: c.args["channel"] == "C0INCIDENT")
    assert f"<#{channel_id}>" in announce.args["text"]
    bot.idle()
    inc = incident(bot)
    assert (inc.channel_id, inc.card_ts, inc.thread_ts) == (channel_id, card.response["ts"], None)
    # In the incident's own channel the key is implied.
    status = ack_json(bot.command("status", channel_id=channel_id))
    assert status["text"].startswith("INC-1")


def test_card_post_failure_is_reported_to_user_and_timeline(bot):
    bot.slack.fail_next("chat.postMessage", "not_in_channel")
    assert ack_json(bot.command("open Disk full")) == {}
    failure = bot.slack.wait_for("response_url", lambda c: "INC-1" in c.args["text"])
    bot.idle()
    # The incident is saved: the answer says so and never asks to open it again.
    assert "Opened *INC-1* (it is saved)" in failure.args["text"]
    assert "Slack answered `not_in_channel`" in failure.args["text"]
    assert "try again" not in failure.args["text"].lower()
    kinds = [e.kind for e in events(bot)]
    assert kinds == ["incident.opened", "slack.card_failed"]


# -- reads -----------------------------------------------------------------------------------


def test_status_of_unknown_key_answers_ephemerally(bot):
    body = ack_json(bot.command("status INC-9"))
    assert body == {
        "text": "No incident INC-9. /incident list shows the open ones.",
        "response_type": "ephemeral",
    }


def test_status_without_key_in_shared_channel_asks_which(bot):
    body = ack_json(bot.command("status"))
    assert body["response_type"] == "ephemeral"
    assert body["text"].startswith("Say which incident")


def test_status_and_list(bot):
    open_incident(bot, "First")
    bot.slack.reset_calls()
    open_incident(bot, EVIL)
    status = ack_json(bot.command("status INC-1"))
    assert status["response_type"] == "ephemeral"
    assert "INC-1 · First" in rich_texts(status["blocks"])
    assert status["blocks"][0]["elements"][0]["elements"][0]["style"] == {"bold": True}
    listing = ack_json(bot.command("list"))
    dumped = flat(listing["blocks"])
    assert "Open incidents (2)" in dumped and "*INC-1* · First" in dumped
    assert "<!channel>" not in dumped and "&lt;!channel&gt;" in dumped


def test_unknown_subcommand_gets_help_ephemerally(bot):
    body = ack_json(bot.command("frobnicate now"))
    assert body["response_type"] == "ephemeral"
    assert body["text"].startswith("There is no `/incident frobnicate`.")
    for usage in (
        "/incident open <title>",
        "/incident list",
        "/incident status [INC-N]",
        "/incident note [INC-N] <text>",
        "/incident timeline [INC-N]",
        "/incident close [INC-N] <summary>",
        "/incident personal-data [INC-N]",
    ):
        assert usage.replace("<", "&lt;").replace(">", "&gt;") in body["text"]


def test_help_for_one_subcommand(bot):
    body = ack_json(bot.command("help note"))
    assert body["text"] == "`/incident note [INC-N] &lt;text&gt;` Add a note to the timeline."


def test_help_and_empty_text(bot):
    for text in ("help", ""):
        body = ack_json(bot.command(text))
        assert "There is no" not in body["text"]
        assert "/incident open" in body["text"]


def test_timeline_latest_20_then_file_with_full_export(bot):
    open_incident(bot)
    with bot.runtime.database.session() as session:
        from storage.timeline import append_event

        inc = session.scalars(select(Incident)).one()
        for i in range(30):
            append_event(
                session=session, incident=inc, actor="W111", kind="note", summary=f"step {i} <b>"
            )
    body = ack_json(bot.command("timeline INC-1"))
    dumped = flat(body["blocks"])
    assert "step 29 &lt;b&gt;" in dumped and "step 10 " in dumped and "step 9 " not in dumped
    assert "latest 20 of 32 events" in dumped
    done = bot.slack.wait_for("files.completeUploadExternal")
    file_id = done.args["files"][0]["id"]
    content = bot.slack.files[file_id]["content"].decode()
    assert content.startswith("# INC-1: Disk full on db-1")
    assert content.count("\n| ") == 33  # header row + 32 events
    assert bot.slack.files[file_id]["channel"] == "C0INCIDENT"


def test_short_timeline_uploads_nothing(bot):
    open_incident(bot)
    body = ack_json(bot.command("timeline INC-1"))
    assert "incident.opened" in flat(body["blocks"])
    bot.idle()
    assert not bot.slack.calls_for("files.getUploadURLExternal")


# -- writes ----------------------------------------------------------------------------------


def test_note_goes_to_timeline_and_thread(bot):
    card = open_incident(bot)
    assert ack_json(bot.command(f"note INC-1 saw {EVIL} in logs")) == {}
    line = bot.slack.wait_for("chat.postMessage", lambda c: "saw" in c.args.get("text", ""))
    bot.idle()
    assert line.args["thread_ts"] == card.response["ts"]
    assert "&lt;!channel&gt;" in line.args["text"] and "<!channel>" not in line.args["text"]
    assert events(bot)[-1].summary == f"saw {EVIL} in logs"
    assert "Noted on *INC-1*" in response_texts(bot)[-1]


def test_over_long_note_is_cut_so_slack_accepts(bot):
    open_incident(bot)
    assert ack_json(bot.command("note INC-1 " + "<" * 5000)) == {}
    bot.slack.wait_for("response_url", lambda c: "Noted" in c.args["text"])
    failed = [c for c in bot.slack.calls if not c.ok]
    assert failed == []


def test_severity_change_updates_card_in_place(bot):
    card = open_incident(bot)
    assert ack_json(bot.command("severity INC-1 HIGH")) == {}
    update = bot.slack.wait_for("chat.update")
    bot.idle()
    assert update.args["ts"] == card.response["ts"]
    assert "high" in flat(update.args["blocks"])
    assert bot.slack.messages("C0INCIDENT")[0]["text"].startswith("INC-1 [high/open]")
    assert incident(bot).severity == "high"
    body = ack_json(bot.command("severity INC-1 urgent"))
    assert body["text"].startswith("Say the new severity")


@pytest.mark.parametrize("verb,status", [("resolve", "resolved"), ("close", "closed")])
def test_status_change_updates_card_and_posts_thread_line(bot, verb, status):
    card = open_incident(bot)
    assert ack_json(bot.command(f"{verb} INC-1 patched and rotated keys")) == {}
    update = bot.slack.wait_for("chat.update")
    line = bot.slack.wait_for("chat.postMessage", lambda c: "Status open" in c.args["text"])
    bot.idle()
    assert update.args["text"].startswith(f"INC-1 [medium/{status}]")
    assert line.args["thread_ts"] == card.response["ts"]
    inc = incident(bot)
    assert inc.status == status and inc.resolution == "patched and rotated keys"
    if status == "closed":
        assert not any(b["type"] == "actions" for b in update.args["blocks"])
        again = ack_json(bot.command("close INC-1 again"))
        assert again["text"] == "INC-1 is closed; open a new incident instead."


def test_resolve_needs_summary(bot):
    open_incident(bot)
    body = ack_json(bot.command("resolve INC-1"))
    assert body["text"].startswith("Add a one-line summary")


def test_personal_data_starts_regulator_clock(bot):
    open_incident(bot)
    assert ack_json(bot.command("personal-data INC-1")) == {}
    update = bot.slack.wait_for("chat.update")
    bot.idle()
    inc = incident(bot)
    assert inc.personal_data and inc.aware_at is not None
    assert "regulator notice in 2d 23h" in flat(update.args["blocks"])
    assert ack_json(bot.command("personal-data INC-1")) == {}
    again = bot.slack.wait_for("response_url", lambda c: "already running" in c.args["text"])
    assert again.ok


def test_slack_refusing_the_card_update_after_a_note_is_said_not_failed(bot):
    open_incident(bot)
    bot.slack.fail_next("chat.update", "cant_update_message")
    assert ack_json(bot.command("note INC-1 checking")) == {}
    answer = bot.slack.wait_for("response_url", lambda c: "Noted" in c.args["text"])
    bot.idle()
    # The note is saved: "failed, try again" would add it twice.
    text = answer.args["text"]
    assert text.startswith("Noted on *INC-1*. It is saved on the timeline, but Slack did not")
    assert "the card update (Slack answered `cant_update_message`)" in text
    assert "Do not repeat the command" in text
    last = events(bot)[-1]
    assert last.kind == "slack.not_shown" and "cant_update_message" in last.summary
    assert events(bot)[-2].kind == "note"  # the note itself was committed


# -- security --------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["unsigned", "bad", "stale"])
def test_bad_signatures_get_401_and_nothing_happens(bot, how):
    from tests.slack_signing import signed_headers, slash_command_body

    body = slash_command_body(text="open Should not exist")
    if how == "unsigned":
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
    elif how == "bad":
        headers = signed_headers("not-the-secret", body)
    else:
        headers = signed_headers("test-signing-secret", body, timestamp=int(time.time()) - 301)
    response = bot.sender.session.post(bot.sender.url, data=body, headers=headers, timeout=5)
    assert response.status_code == 401
    bot.idle()
    assert not [c for c in bot.slack.calls if c.method != "auth.test"]
    with bot.session() as session:
        assert session.scalars(select(Incident)).first() is None


def test_healthz_and_unknown_routes(bot):
    import requests

    assert requests.get(f"{bot.url}/healthz", timeout=5).json() == {"ok": True, "database": "ok"}
    assert requests.get(f"{bot.url}/nope", timeout=5).status_code == 404
    assert requests.get(f"{bot.url}/slack/events", timeout=5).status_code == 405


def test_healthz_503_when_database_unreachable(bot):
    import requests

    bot.runtime.database.ping = lambda: False  # the real check runs in test_healthz above
    assert requests.get(f"{bot.url}/healthz", timeout=5).status_code == 503


def test_work_still_running_at_shutdown_is_recorded_as_interrupted(bot):
    bot.slack.delay("chat.postMessage", 1.0)
    assert ack_json(bot.command("open Shutdown mid-flight")) == {}
    deadline = time.monotonic() + 5
    while not bot.runtime.background.pending() or bot.runtime.background.pending()[0].state != (
        "running"
    ):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    # The incident row is committed; the card post then waits on slow Slack.
    while not incident_count(bot):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    interrupted = bot.runtime.background.shutdown(grace=0.1)
    assert [j.description for j in interrupted] == ["/incident open by W111"]
    notice = bot.slack.wait_for("response_url", lambda c: "interrupted" in c.args["text"])
    assert "`/incident open` was interrupted by a restart" in notice.args["text"]
    assert [e.kind for e in events(bot)][-1] == "bot.interrupted"


def test_rate_limited_card_post_is_retried_after_retry_after(bot):
    bot.slack.rate_limit("chat.postMessage", times=1, retry_after=0)
    assert ack_json(bot.command("open Alert storm")) == {}
    card = bot.slack.wait_for("chat.postMessage", lambda c: c.ok and "blocks" in c.args)
    bot.idle()
    statuses = [c.status for c in bot.slack.calls_for("chat.postMessage")]
    assert statuses[:2] == [429, 200]
    assert incident(bot).card_ts == card.response["ts"]


def test_events_url_verification_handshake(bot):
    response = bot.sender.post(
        '{"token": "x", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P", '
        '"type": "url_verification"}',
        content_type="application/json",
    )
    assert response.status_code == 200
    assert response.json() == {"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}


def test_full_background_pool_is_said_in_the_ack(bot):
    import threading

    from bot.background import Background

    gate = threading.Event()
    bot.runtime.background = Background(max_workers=1, max_pending=1)
    bot.runtime.background.submit(gate.wait, description="blocker")
    while bot.runtime.background.pending()[0].state != "running":
        time.sleep(0.01)
    bot.runtime.background.submit(lambda: None, description="queued")
    try:
        body = ack_json(bot.command("open Too busy"))
        assert body["text"] == "The bot is busy right now; try again in a minute."
    finally:
        gate.set()
        bot.runtime.background.shutdown(grace=2)


def test_channel_name_taken_gets_a_suffix(bot_factory):
    bot = bot_factory({"slack": {"channel_per_incident": True}})
    bot.slack.add_channel("C0TAKEN", name="inc-1-disk-full")
    assert ack_json(bot.command("open Disk full")) == {}
    created = bot.slack.wait_for("conversations.create", lambda c: c.ok)
    assert created.args["name"] == "inc-1-disk-full-2"
    bot.idle()
    assert incident(bot).channel_id == created.response["channel"]["id"]


def test_oversized_body_is_refused_before_bolt(bot):
    import requests

    response = requests.post(
        f"{bot.url}/slack/events",
        data=b"x" * (3 * 1024 * 1024),
        timeout=10,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 413


def test_formatting_typed_in_a_title_shows_as_typed(bot):
    """A user opens `/incident open *bold* _it_ ~s~ `c``: every rendering shows those
    characters as typed (plain_text, rich text, or mrkdwn where they cannot format)."""
    title = "*bold* _it_ ~s~ `c`"
    assert ack_json(bot.command(f"open {title}")) == {}
    card = bot.slack.wait_for("chat.postMessage", lambda c: "blocks" in c.args)
    bot.idle()
    blocks = card.args["blocks"]
    assert blocks[0]["text"]["type"] == "plain_text" and title in blocks[0]["text"]["text"]
    assert f"INC-1 · {title}" in rich_texts(blocks)  # the title line: literal rich text
    listing = ack_json(bot.command("list"))
    status = ack_json(bot.command("status INC-1"))
    posted = [c.args for c in bot.slack.calls_for("chat.postMessage")]
    mrkdwn = all_mrkdwn([*posted, listing, status])
    assert any(bk.esc(title) in text for text in mrkdwn)  # the notification and the list
    for text in mrkdwn:
        for piece in ("*bold*", "_it_", "~s~", "`c`"):
            assert piece not in text, text
        at = text.find(bk.esc(title))
        if at != -1:  # the title's own characters, by the model of Slack's rules
            user = [at <= i < at + len(bk.esc(title)) for i in range(len(text))]
            assert not formatting_from_user(text, user), text
