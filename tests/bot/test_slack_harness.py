"""The test harness itself: the fake Slack server and the request signer, driven by a bare
Bolt app and slack_sdk clients exactly as the real app will use them."""

from __future__ import annotations

import json
import time
from urllib.parse import parse_qs

import pytest
from slack_bolt import App, BoltRequest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier

from tests.slack_fake import FakeSlack, SlackManners
from tests.slack_signing import (
    block_actions_payload,
    event_callback_body,
    interactivity_body,
    signed_headers,
    slash_command_body,
    view_submission_payload,
)

SECRET = "test-signing-secret"


def bare_app(slack: FakeSlack) -> App:
    client = WebClient(token="xoxb-test", base_url=slack.base_url)
    return App(client=client, signing_secret=SECRET, process_before_response=True)


def dispatch(app: App, body: str, **kw) -> int:
    headers = signed_headers(SECRET, body, **kw)
    response = app.dispatch(BoltRequest(body=body, headers=headers))
    return response.status


def test_signature_matches_slack_sdk_verifier():
    body = slash_command_body(text="open Disk full")
    headers = signed_headers(SECRET, body)
    verifier = SignatureVerifier(SECRET)
    assert verifier.is_valid(
        body, headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"]
    )
    assert not SignatureVerifier("other-secret").is_valid(
        body, headers["X-Slack-Request-Timestamp"], headers["X-Slack-Signature"]
    )


def test_slash_command_body_keeps_fixture_shape_and_replaces_fields():
    body = parse_qs(slash_command_body("/incident", "open a & b", user_id="U9"))
    assert body["command"] == ["/incident"]
    assert body["text"] == ["open a & b"]
    assert body["user_id"] == ["U9"]
    assert body["team_id"] == ["T111"]  # untouched fixture field
    assert body["trigger_id"] == ["111.111.xxx"]


def test_bolt_command_posts_message_recorded_by_fake(fake_slack):
    app = bare_app(fake_slack)

    @app.command("/incident")
    def handle(ack, command, client):
        ack()
        client.chat_postMessage(channel=command["channel_id"], text=f"got {command['text']}")

    assert dispatch(app, slash_command_body(text="status")) == 200
    call = fake_slack.wait_for("chat.postMessage")
    assert call.args["channel"] == "C0INCIDENT"
    assert call.args["text"] == "got status"
    assert call.headers["authorization"] == "Bearer xoxb-test"
    assert call.response["ok"] and call.response["channel"] == "C0INCIDENT"
    assert call.response["ts"] in {m["ts"] for m in fake_slack.messages("C0INCIDENT")}
    assert fake_slack.calls_for("auth.test")  # Bolt authorizes the token first


@pytest.mark.parametrize("how", ["unsigned", "bad", "stale"])
def test_bolt_rejects_unsigned_bad_and_stale_requests(fake_slack, how):
    app = bare_app(fake_slack)
    handled = []

    @app.command("/incident")
    def handle(ack):
        handled.append(1)
        ack()

    body = slash_command_body(text="status")
    if how == "unsigned":
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
    elif how == "bad":
        headers = signed_headers("wrong-secret", body)
    else:
        headers = signed_headers(SECRET, body, timestamp=int(time.time()) - 6 * 60)
    assert app.dispatch(BoltRequest(body=body, headers=headers)).status == 401
    assert handled == []


def test_respond_posts_to_response_url_on_fake(fake_slack):
    app = bare_app(fake_slack)

    @app.command("/incident")
    def handle(ack, respond):
        ack()
        respond(text="only you see this", response_type="ephemeral")

    url = fake_slack.response_url("cmd1")
    assert dispatch(app, slash_command_body(text="help", response_url=url)) == 200
    call = fake_slack.wait_for("response_url")
    assert call.path == "/response/cmd1"
    assert call.args == {"text": "only you see this", "response_type": "ephemeral"}


def test_block_actions_and_view_submission_payloads_reach_listeners(fake_slack):
    app = bare_app(fake_slack)
    seen = {}

    @app.action("incident_ack")
    def on_click(ack, body, action):
        ack()
        seen["action"] = (body["user"]["id"], action["value"], body["container"]["channel_id"])

    @app.view("reject_reason")
    def on_submit(ack, view, body):
        ack()
        seen["view"] = (body["user"]["id"], view["state"]["values"]["r"]["r"]["value"])

    click = block_actions_payload("incident_ack", "INC-3", user_id="U7")
    assert dispatch(app, interactivity_body(click)) == 200
    submit = view_submission_payload(
        "reject_reason", {"r": {"r": {"type": "plain_text_input", "value": "too broad"}}}
    )
    assert dispatch(app, interactivity_body(submit)) == 200
    assert seen == {"action": ("U7", "INC-3", "C0INCIDENT"), "view": ("W111", "too broad")}


def test_event_callback_body_reaches_event_listener(fake_slack):
    app = bare_app(fake_slack)
    opened = []

    @app.event("app_home_opened")
    def on_home(event):
        opened.append(event["user"])

    event = {
        "type": "app_home_opened",
        "user": "W111",
        "channel": "D1",
        "tab": "home",
        "event_ts": "1596183880.004200",
    }
    body = event_callback_body(event)
    assert dispatch(app, body, content_type="application/json") == 200
    assert opened == ["W111"]


def test_unknown_channel_answers_channel_not_found(fake_slack):
    client = WebClient(token="xoxb-test", base_url=fake_slack.base_url)
    with pytest.raises(SlackApiError) as err:
        client.chat_postMessage(channel="C0NOPE", text="hi")
    assert err.value.response["error"] == "channel_not_found"


def test_missing_token_answers_not_authed(fake_slack):
    client = WebClient(base_url=fake_slack.base_url)
    with pytest.raises(SlackApiError) as err:
        client.chat_postMessage(channel="C0INCIDENT", text="hi")
    assert err.value.response["error"] == "not_authed"


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")
def test_fake_rejects_what_slack_rejects(fake_slack):
    client = WebClient(token="xoxb-test", base_url=fake_slack.base_url)
    too_long = [{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}]
    with pytest.raises(SlackApiError) as err:
        client.chat_postMessage(channel="C0INCIDENT", text="t", blocks=too_long)
    assert err.value.response["error"] == "invalid_blocks"
    with pytest.raises(SlackApiError) as err:
        client.chat_postMessage(channel="C0INCIDENT", text="x" * 40_001)
    assert err.value.response["error"] == "msg_too_long"
    with pytest.raises(SlackApiError) as err:
        client.chat_postMessage(channel="C0INCIDENT", text="")
    assert err.value.response["error"] == "no_text"
    many = [{"type": "divider"}] * 51
    with pytest.raises(SlackApiError) as err:
        client.chat_postMessage(channel="C0INCIDENT", text="t", blocks=many)
    assert err.value.response["error"] == "invalid_blocks"


def test_chat_update_changes_stored_message_and_needs_a_real_ts(fake_slack):
    client = WebClient(token="xoxb-test", base_url=fake_slack.base_url)
    posted = client.chat_postMessage(channel="C0INCIDENT", text="status: open")
    client.chat_update(channel="C0INCIDENT", ts=posted["ts"], text="status: closed")
    assert [m["text"] for m in fake_slack.messages("C0INCIDENT")] == ["status: closed"]
    with pytest.raises(SlackApiError) as err:
        client.chat_update(channel="C0INCIDENT", ts="1.000001", text="x")
    assert err.value.response["error"] == "message_not_found"
    reply = client.chat_postMessage(channel="C0INCIDENT", thread_ts=posted["ts"], text="line")
    assert reply["message"]["thread_ts"] == posted["ts"]


def test_conversations_create_invite_info(fake_slack):
    fake_slack.add_user("U2")
    client = WebClient(token="xoxb-test", base_url=fake_slack.base_url)
    created = client.conversations_create(name="inc-1-disk-full")
    channel_id = created["channel"]["id"]
    client.conversations_invite(channel=channel_id, users="W111,U2")
    info = client.conversations_info(channel=channel_id)
    assert info["channel"]["name"] == "inc-1-disk-full"
    assert info["channel"]["num_members"] == 3  # the bot plus two
    with pytest.raises(SlackApiError) as err:
        client.conversations_create(name="inc-1-disk-full")
    assert err.value.response["error"] == "name_taken"
    with pytest.raises(SlackApiError) as err:
        client.conversations_create(name="Has Spaces")
    assert err.value.response["error"] == "invalid_name_specials"
    # a message to the new channel is accepted, by id or by name
    client.chat_postMessage(channel="#inc-1-disk-full", text="hello")
    assert fake_slack.messages(channel_id)[0]["text"] == "hello"


def test_ephemeral_views_users_usergroups(fake_slack):
    fake_slack.add_usergroup("S1", handle="security-oncall", users=["W111"])
    client = WebClient(token="xoxb-test", base_url=fake_slack.base_url)
    eph = client.chat_postEphemeral(channel="C0INCIDENT", user="W111", text="psst")
    assert eph["message_ts"]
    home = {
        "type": "home",
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "open: 0"}}],
    }
    published = client.views_publish(user_id="W111", view=home)
    assert fake_slack.home_views["W111"]["id"] == published["view"]["id"]
    modal = {
        "type": "modal",
        "callback_id": "m",
        "title": {"type": "plain_text", "text": "T"},
        "blocks": [],
    }
    assert client.views_open(trigger_id="111.222.valid", view=modal)["view"]["id"]
    assert client.users_info(user="W111")["user"]["name"] == "primary-owner"
    with pytest.raises(SlackApiError):
        client.users_info(user="U404")
    groups = client.usergroups_list()["usergroups"]
    assert groups[0]["handle"] == "security-oncall"
    assert fake_slack.wait_for("views.publish").args["view"]["type"] == "home"


def test_files_upload_v2_flow(fake_slack):
    client = WebClient(token="xoxb-test", base_url=fake_slack.base_url)
    content = "# INC-1 timeline\n" + "- event\n" * 100
    result = client.files_upload_v2(
        channel="C0INCIDENT",
        filename="INC-1-timeline.md",
        content=content,
        title="INC-1 timeline",
        initial_comment="Full timeline",
    )
    file_id = result["file"]["id"]
    stored = fake_slack.files[file_id]
    assert stored["content"].decode() == content
    assert stored["channel"] == "C0INCIDENT"
    assert stored["title"] == "INC-1 timeline"
    methods = [m for m in fake_slack.methods() if m != "files.info"]
    assert methods == ["files.getUploadURLExternal", "file_upload", "files.completeUploadExternal"]


def test_rate_limit_answers_429_with_retry_after(fake_slack):
    fake_slack.rate_limit("chat.postMessage", times=2, retry_after=0)
    plain = WebClient(token="xoxb-test", base_url=fake_slack.base_url)
    with pytest.raises(SlackApiError) as err:
        plain.chat_postMessage(channel="C0INCIDENT", text="storm")
    assert err.value.response.status_code == 429
    assert err.value.response.headers["Retry-After"] == "0"
    retrying = WebClient(
        token="xoxb-test",
        base_url=fake_slack.base_url,
        retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=2)],
    )
    assert retrying.chat_postMessage(channel="C0INCIDENT", text="storm")["ok"]
    statuses = [c.status for c in fake_slack.calls_for("chat.postMessage")]
    assert statuses == [429, 429, 200]


def test_channel_rate_limit_throttles_per_channel(fake_slack):
    fake_slack.add_channel("C2")
    fake_slack.channel_rate_limit(1)
    client = WebClient(token="xoxb-test", base_url=fake_slack.base_url)
    client.chat_postMessage(channel="C0INCIDENT", text="1")
    client.chat_postMessage(channel="C2", text="other channel is fine")
    with pytest.raises(SlackApiError) as err:
        client.chat_postMessage(channel="C0INCIDENT", text="2")
    assert err.value.response.status_code == 429


def test_fail_next_and_wait_for_timeout(fake_slack):
    fake_slack.fail_next("chat.update", "cant_update_message")
    client = WebClient(token="xoxb-test", base_url=fake_slack.base_url)
    ts = client.chat_postMessage(channel="C0INCIDENT", text="a")["ts"]
    with pytest.raises(SlackApiError) as err:
        client.chat_update(channel="C0INCIDENT", ts=ts, text="b")
    assert err.value.response["error"] == "cant_update_message"
    client.chat_update(channel="C0INCIDENT", ts=ts, text="b")  # only the next one failed
    with pytest.raises(AssertionError, match=r"no 1x views\.open"):
        fake_slack.wait_for("views.open", timeout=0.05)


def test_wait_for_sees_calls_from_other_threads(fake_slack):
    import threading

    client = WebClient(token="xoxb-test", base_url=fake_slack.base_url)
    threads = [
        threading.Thread(
            target=client.chat_postMessage, kwargs={"channel": "C0INCIDENT", "text": f"m{i}"}
        )
        for i in range(8)
    ]
    for t in threads:
        t.start()
    call = fake_slack.wait_for("chat.postMessage", count=8, timeout=5)
    assert call.ok
    for t in threads:
        t.join()
    texts = sorted(c.args["text"] for c in fake_slack.calls_for("chat.postMessage"))
    assert texts == sorted(f"m{i}" for i in range(8))
    assert len({c.response["ts"] for c in fake_slack.calls_for("chat.postMessage")}) == 8


def test_form_encoded_blocks_are_decoded(fake_slack):
    client = WebClient(token="xoxb-test", base_url=fake_slack.base_url)
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "hi"}}]
    client.api_call(
        "chat.postMessage",
        params={"channel": "C0INCIDENT", "text": "hi", "blocks": json.dumps(blocks)},
    )
    assert fake_slack.wait_for("chat.postMessage").args["blocks"] == blocks


def test_realistic_manners_answer_slowly_and_limit_like_slack() -> None:

    manners = SlackManners(latency=0.05, jitter=0.01, post_burst=2, tier_burst_seconds=3.0)
    with FakeSlack(manners=manners) as slack:
        slack.add_channel("C1")
        client = WebClient(token="xoxb-test", base_url=slack.base_url)
        t0 = time.monotonic()
        first = client.chat_postMessage(channel="C1", text="1")
        assert time.monotonic() - t0 >= 0.04  # latency applies
        client.chat_postMessage(channel="C1", text="2")  # a short burst is allowed
        with pytest.raises(SlackApiError) as err:
            client.chat_postMessage(channel="C1", text="3")
        assert err.value.response.status_code == 429
        assert err.value.response.headers["Retry-After"] == "1"
        # Tier 3: 50 a minute, 3 s worth (2.5 calls) at once, then 429.
        client.chat_update(channel="C1", ts=first["ts"], text="1b")
        client.chat_update(channel="C1", ts=first["ts"], text="1c")
        with pytest.raises(SlackApiError) as err:
            client.chat_update(channel="C1", ts=first["ts"], text="1d")
        assert err.value.response.status_code == 429
        assert int(err.value.response.headers["Retry-After"]) >= 1
        assert 40 <= slack.slack_latency_ms() <= 60
        # Neither 429 was retried: both count as unhandled.
        assert [c.args["text"] for c in slack.unhandled_429s()] == ["3", "1d"]


def test_unhandled_429s_tell_honoured_retry_after_from_early_retries() -> None:

    with FakeSlack() as slack:
        slack.add_channel("C1")
        slack.rate_limit("chat.postMessage", times=1, retry_after=1)
        patient = WebClient(
            token="xoxb-test",
            base_url=slack.base_url,
            retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=1)],
        )
        patient.chat_postMessage(channel="C1", text="waits")
        assert slack.unhandled_429s() == []
        slack.rate_limit("chat.postMessage", times=1, retry_after=5)
        hasty = WebClient(token="xoxb-test", base_url=slack.base_url)
        with pytest.raises(SlackApiError):
            hasty.chat_postMessage(channel="C1", text="hurries")
        hasty.chat_postMessage(channel="C1", text="hurries")  # at once, not after 5 s
        assert [c.args["text"] for c in slack.unhandled_429s()] == ["hurries"]
