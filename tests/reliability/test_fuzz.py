"""Property-based fuzzing of everything that parses outside input (Hypothesis).

Driven the way the input arrives: findings POSTed to /guardduty/events (EventBridge and
signed SNS), signed slash commands and interactivity payloads to /slack/events, YAML
configuration files through `load_settings`, and user text through the mrkdwn escaping
every card and reply uses. The properties: a clean 4xx or a result, never a 500 or a stack
trace; nothing a user types renders as a mention or a link.

Example counts are kept modest so `make test` stays fast; raise them for a long run with
`INCIDENT_BOT_FUZZ_SCALE=10`.
"""

from __future__ import annotations

import copy
import json
import os
import re
from dataclasses import replace
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bot.settings import SettingsError, load_settings
from bot.views import blocks as bk
from bot.wiring import INCIDENT
from tests.bot.conftest import bot_factory, fake_slack  # noqa: F401 (fixtures)
from tests.bot.guardduty.conftest import (  # noqa: F401 (fixtures)
    TOPIC,
    aws,
    guardduty_bot,
    sns_key,
    sns_pem,
)
from tests.bot.test_incident_commands import all_mrkdwn
from tests.commands.findings.test_findings_normalize_properties import (
    EC2_DETAIL,
    EC2_PATHS,
    json_values,
    shaped_values,
)
from tests.slack_mrkdwn import _code_spans, formatting_from_user
from tests.slack_signing import block_actions_payload, view_submission_payload

SCALE = max(1, int(os.environ.get("INCIDENT_BOT_FUZZ_SCALE", "1")))
BOT_SETTINGS = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    "database": None,  # no example database under the repo: every run explores afresh
}

# What the red team sent, and its relatives: surrogates, NUL, huge numbers, long ids.
HOSTILE = st.sampled_from(
    [
        "\ud800",
        "a\x00b",
        10**23,
        2**40,
        -(2**63) - 1,
        1e308,
        "i-" + "x" * 250,
        "x" * 100_000,
        "",
        [],
        {},
        None,
        "<!channel>",
    ]
)
VALUES = HOSTILE | json_values


def envelope(detail: Any) -> dict[str, Any]:
    return {
        "version": "0",
        "id": "7bf73129-1428-4cd3-a780-95db273d1602",
        "detail-type": "GuardDuty Finding",
        "source": "aws.guardduty",
        "account": "123456789012",
        "time": "2026-11-27T12:00:00Z",
        "region": "us-east-1",
        "resources": [],
        "detail": detail,
    }


def set_path(value: Any, path: tuple[Any, ...], leaf: Any) -> Any:
    out = copy.deepcopy(value)
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = leaf
    return out


CLEAN = {200, 202, 400, 403, 413}
seen: dict[str, int] = {}


def count(name: str) -> None:
    seen[name] = seen.get(name, 0) + 1


@pytest.fixture
def gd(guardduty_bot):  # noqa: F811
    return guardduty_bot()


# -- GuardDuty over HTTP ----------------------------------------------------------------------


@settings(max_examples=120 * SCALE, **BOT_SETTINGS)
@given(path=st.sampled_from(EC2_PATHS), leaf=VALUES, wrap=st.booleans())
def test_any_field_of_a_finding_gets_a_clean_answer(gd, path, leaf, wrap) -> None:
    count("finding field")
    detail = set_path(EC2_DETAIL, path, leaf)
    response = gd.post(envelope(detail) if wrap else detail)
    assert response.status_code in CLEAN, (path, leaf, response.text[:300])
    assert response.json()["ok"] is (response.status_code < 300)


@settings(max_examples=60 * SCALE, **BOT_SETTINGS)
@given(body=shaped_values | st.binary(max_size=200).map(lambda b: b"\x00" + b))
def test_any_json_or_bytes_gets_a_clean_answer(gd, body) -> None:
    count("any body")
    response = gd.post(body if isinstance(body, bytes) else json.dumps(body).encode())
    assert response.status_code in CLEAN, (body, response.text[:300])


@settings(max_examples=40 * SCALE, **BOT_SETTINGS)
@given(message=VALUES | shaped_values, as_json=st.booleans())
def test_a_signed_sns_message_carrying_anything_gets_a_clean_answer(gd, message, as_json):
    count("sns message")
    note = {
        "Type": "Notification",
        "MessageId": "da41e39f-ea4d-435a-b922-c6aae3915ebe",
        "TopicArn": TOPIC,
        "Subject": "GuardDuty Finding",
        # Only what SNS can carry: UTF-8 text (a lone surrogate only inside JSON escapes).
        "Message": json.dumps(message)
        if as_json
        else str(message).encode("utf-8", "replace").decode(),
        "Timestamp": "2026-11-27T12:00:00.000Z",
    }
    response = gd.post(gd.sign(note))
    assert response.status_code in CLEAN, (message, response.text[:300])


# -- Slack: commands and interactivity ------------------------------------------------------

WORDS = st.sampled_from(
    ["open", "note", "status", "severity", "close", "resolve", "help", "timeline", "INC-1"]
)
TEXT = st.text(max_size=80) | st.lists(WORDS | st.text(max_size=12), max_size=5).map(" ".join)


@settings(max_examples=200 * SCALE, database=None)
@given(TEXT)
def test_slash_command_parsing_never_raises(text: str) -> None:
    count("slash parse")
    sub, _typed, rest = INCIDENT.parse(text)
    assert sub is not None  # the fallback answers what nothing else does
    assert rest == rest.strip()


@settings(max_examples=40 * SCALE, **BOT_SETTINGS)
@given(text=TEXT)
def test_any_incident_command_is_answered(bot_factory, text) -> None:  # noqa: F811
    count("slash command")
    bot = _bot(bot_factory)
    response = bot.command(text)
    assert response.status_code == 200, response.text[:300]
    assert bot.runtime.background.wait_idle(10)


ACTIONS = st.sampled_from(
    [
        "incident_severity",
        "incident_timeline",
        "incident_note",
        "incident_resolve",
        "incident_close",
        "plan_containment",
        "approve_containment",
        "reject_containment",
        "retry_containment",
        "rollback_containment",
        "no_such_action",
    ]
)


@settings(max_examples=60 * SCALE, **BOT_SETTINGS)
@given(
    action_id=ACTIONS,
    value=st.text(max_size=40) | WORDS,
    path=st.sampled_from(["actions", "message", "user", "channel", "container", "view"]),
    leaf=VALUES,
)
# Found by this test: a null view reached Bolt, whose unhandled-request log answered 500.
@example(action_id="approve_containment", value="", path="view", leaf=None)
def test_any_click_payload_is_answered(bot_factory, action_id, value, path, leaf) -> None:  # noqa: F811
    count("interactivity")
    bot = _bot(bot_factory)
    payload = block_actions_payload(action_id, value, response_url=bot.slack.response_url())
    payload[path] = leaf
    response = bot.sender.action(payload)
    assert response.status_code in (200, 400, 404), response.text[:300]
    assert bot.runtime.background.wait_idle(10)


@settings(max_examples=40 * SCALE, **BOT_SETTINGS)
@given(
    callback=st.sampled_from(
        ["incident_note_modal", "incident_status_modal", "containment_reject_modal"]
    ),
    metadata=st.text(max_size=40) | VALUES.map(json.dumps),
    values=st.dictionaries(st.text(max_size=8), VALUES, max_size=3),
)
def test_any_modal_submission_is_answered(bot_factory, callback, metadata, values) -> None:  # noqa: F811
    count("view submission")
    bot = _bot(bot_factory)
    payload = view_submission_payload(callback, values, private_metadata=metadata)
    response = bot.sender.action(payload)
    assert response.status_code in (200, 400), response.text[:300]
    assert bot.runtime.background.wait_idle(10)


_bots: dict[str, tuple[Any, Any]] = {}  # "bot": (the factory, its bot)


def _bot(factory: Any) -> Any:
    """One bot per test (Hypothesis runs every example inside one fixture instance). Keyed
    by the factory itself, held: a new test's factory could get a freed one's id, and with
    it the last test's bot, whose server its fixture had shut down."""
    found = _bots.get("bot")
    if found is not None and found[0] is factory:
        return found[1]
    bot = factory()
    bot.slack.add_channel("W111")
    _bots["bot"] = (factory, bot)
    return bot


# -- what Slack renders ---------------------------------------------------------------------

# Slack's control sequences in mrkdwn all sit between < and >: <@U…>, <#C…>, <!here>,
# <!subteam^…>, <https://…|label>. The bot writes only mentions of real ids, channels and
# its own dates.
OURS = re.compile(r"<(@[UW][A-Z0-9]+|#[CGD][A-Z0-9]+|!date\^\d+\^[^<>|]*\|[^<>|]*)>")


@settings(max_examples=500 * SCALE, database=None)
@given(st.text())
def test_escaped_text_has_no_control_sequence_and_reads_back_as_typed(text: str) -> None:
    count("esc")
    out = bk.esc(text)
    assert "<" not in out and ">" not in out
    # Slack decodes exactly these three entities and shows the word joiners as nothing, so
    # the reader sees what was typed.
    shown = out.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    assert shown.replace(bk.WORD_JOINER, "") == text.replace(bk.WORD_JOINER, "")
    assert not formatting_from_user(out, [True] * len(out))
    for limit in (1, 5, 40):
        cut = bk.esc_cut(text, limit)
        assert len(cut) <= limit
        assert not re.search(r"&[a-z]{0,3}$", cut.removesuffix("…"))  # no split entity
        assert not formatting_from_user(cut, [True] * len(cut))


def test_the_model_sees_formatting_and_passes_inert_text() -> None:
    for typed in ("*bold*", "_it_", "~s~", "`c`", "a *b* c", "<!here>"):
        assert formatting_from_user(typed, [True] * len(typed)), typed
    assert not formatting_from_user("snake_case_name", [True] * 15)
    assert not formatting_from_user("`*not bold*`", [False] + [True] * 10 + [False])
    assert formatting_from_user("`a` b`", [False, True, True, True, True, True])
    for typed in ("*bold*", "_it_", "~s~", "`c`", "x `*_~` y"):
        out = bk.esc(typed)
        assert not formatting_from_user(out, [True] * len(out)), out


# The user's text reaches the builders between two private-use marks; the check takes the
# marks out and knows which characters are the user's (to the end when a cut dropped the
# closing mark). The text has no whitespace at its ends: code spans strip it, which the marks
# would hide.
OPEN, CLOSE = "\ue000", "\ue001"
HOSTILE_TEXT = (
    st.lists(
        st.sampled_from([*"*_~`<>&|@!#:. \nab1\u2060", "<!channel>", "<@U1>"])
        | st.text(max_size=3),
        min_size=1,
        max_size=20,
    )
    .map("".join)
    .map(str.strip)
    .filter(bool)
    .map(lambda t: f"{OPEN}{t}{CLOSE}")
)


def _unmark(text: str, marks: tuple[str, str] = (OPEN, CLOSE)) -> tuple[str, list[bool]]:
    out, user, mine = [], [], False
    for ch in text:
        if ch in marks:
            mine = ch == marks[0]
            continue
        out.append(ch)
        user.append(mine)
    return "".join(out), user


def _rendered(payload: Any) -> tuple[list[str], list[str]]:
    """(mrkdwn strings, literal strings): plain_text objects and rich_text `text` elements
    Slack shows literally; every other `text` (mrkdwn objects, a message's text) it parses."""
    mrkdwn, literal = [], []
    if isinstance(payload, dict):
        text = payload.get("text")
        if isinstance(text, str):
            kind = payload.get("type")
            (literal if kind in ("plain_text", "text") else mrkdwn).append(text)
        for value in payload.values():
            if isinstance(value, dict | list):
                more = _rendered(value)
                mrkdwn += more[0]
                literal += more[1]
    elif isinstance(payload, list):
        for item in payload:
            more = _rendered(item)
            mrkdwn += more[0]
            literal += more[1]
    elif isinstance(payload, str):
        mrkdwn.append(payload)
    return mrkdwn, literal


def _renderings(u: Any) -> dict[str, Any]:
    """Every card and reply builder that shows user or finding text, fed `u` (a draw)."""
    from bot.views import approval_card as cv
    from bot.views import investigation as iv
    from bot.views import people as pv
    from bot.views import replies
    from bot.views.approval_card import CardView, StepView, approval_card
    from bot.views.cards import incident_card, list_reply, status_reply, timeline_reply
    from bot.views.guardduty import finding_blocks
    from bot.views.home import home_view
    from bot.views.reminders import delivery_text
    from bot.views.storm import StormEntry, StormGroup, StormView, storm_message
    from commands.abuse import AbuseNotice
    from commands.deadlines.delivery import Delivery
    from commands.deadlines.digest import Digest, DigestIncident
    from commands.overview import IncidentOverview
    from commands.people import TaskNotice
    from storage.models import Incident, IncidentTask, TimelineEvent
    from tests.clock import T0

    incident = Incident(
        id=1,
        number=4,
        title=u("title"),
        severity="high",
        status="resolved",
        created_by="W111",
        owner="W111",
        created_at=T0,
        resource_id=u("resource"),
        resource_type="instance",
        resolution=u("resolution"),
        personal_data=True,
        aware_at=T0,
        notified_at=T0,
        notified_reference=u("reference"),
        is_drill=False,
        facts={
            "guardduty": {
                "distinct": 2,
                "occurrences": 3,
                "findings": [
                    {
                        "type": u("finding type"),
                        "title": u("finding title"),
                        "band": "high",
                        "severity": 8,
                        "resource_id": u("finding resource"),
                        "process": u("process"),
                        "user_name": u("user name"),
                        "remote_domain": u("remote"),
                    },
                    {"type": u("other type"), "band": "low", "severity": 2},
                ],
            },
            "tags": {"Name": u("tag value"), "Owner": u("owner tag")},
            "not_automatic": {u("what"): u("why not")},
            "impact": {"tags": {"owner": u("impact tag")}, "user": u("iam user")},
            "forensics": {
                "stack_name": u("stack"),
                "status": "CREATE_COMPLETE",
                "error": u("error"),
            },
        },
    )
    overview = IncidentOverview(incident, 1, None, 72.0)
    event = TimelineEvent(seq=1, occurred_at=T0, actor="W111", kind="note", summary=u("summary"))
    card = CardView(
        request_id=7,
        kind="contain",
        status="failed",
        incident_key="INC-4",
        incident_title=u("title"),
        target_type="instance",
        target_id=u("target"),
        region="us-east-1",
        account_id="111122223333",
        requested_by="W111",
        requested_at=T0,
        reason=u("reason"),
        expires_at=None,
        decided_by="W111",
        decided_at=T0,
        decision_reason=u("decision"),
        dry_run=False,
        plan={
            "steps": [{"action": "isolate", "summary": "swap", "mutating": True, "calls": []}],
            "blast_radius": {
                "tags": {u("tag key"): u("tag")},
                "labelled": {"owner": u("owner")},
                "note": u("note"),
            },
        },
        steps=[StepView("isolate", "failed", error=u("step error"))],
        missing_evidence=[{"evidence": u("evidence"), "action": "capture", "error": u("missing")}],
    )
    task = IncidentTask(number=2, text=u("task"), owner="W111", due_on=T0.date())
    delivery = Delivery(reminder_id=1, kind="x", prepared_at=T0, incident_key="INC-4")
    digest = Digest(
        T0, "UTC", [DigestIncident(1, "INC-4", "high", "open", u("title"), "W111")], [], []
    )
    storm = StormView(
        1, 0, T0, T0, True, [StormGroup(u("finding type"), "high", [StormEntry("INC-4", None)])]
    )
    return {
        "incident card": incident_card(overview, now=T0),
        "finding blocks": finding_blocks(incident),
        "status": status_reply(overview, now=T0),
        "list": list_reply([overview], now=T0),
        "timeline": timeline_reply(incident, [event], 1),
        "home": home_view([overview], now=T0),
        "approval card": approval_card(card),
        "reject modal": cv.reject_modal(7, channel_id="C1", target_id=u("target")),
        "proposal": replies.text_reply(u("resource")),
        "storm": storm_message(storm),
        "note line": replies.note_line("W111", u("note")),
        "status line": replies.status_line(
            "open", "closed", "W111", u("summary"), open_tasks=[1], force_reason=u("reason")
        ),
        "channel pointer": replies.channel_pointer("INC-4", "W111", u("title"), "C1"),
        "notified line": replies.notified_line(u("reference"), "W111", "1 h before"),
        "abuse line": iv.abuse_recorded_line(u("ref"), "W111", u("summary"), u("support")),
        "task line": pv.task_added_line("INC-4", task, "W111"),
        "task reminder": delivery_text(
            replace(delivery, notice=TaskNotice(2, u("task"), "W111", T0.date(), 1))
        ),
        "abuse reminder": delivery_text(
            replace(delivery, notice=AbuseNotice(u("reference"), u("case"), None))
        ),
        "plain reminder": delivery_text(replace(delivery, message=u("message"))),
        "digest": delivery_text(replace(delivery, notice=digest)),
    }


@settings(max_examples=60 * SCALE, database=None, deadline=None)
@given(data=st.data())
def test_no_user_text_formats_mentions_or_links_in_any_card_or_reply(data) -> None:
    count("rendering")
    drawn: dict[str, str] = {}

    def u(field: str) -> str:
        if field not in drawn:
            drawn[field] = data.draw(HOSTILE_TEXT, label=field)
        return drawn[field]

    shown = 0
    for name, payload in _renderings(u).items():
        mrkdwn, literal = _rendered(payload)
        for text in mrkdwn:
            plain_text, user = _unmark(text)
            shown += any(user)
            assert not formatting_from_user(plain_text, user), (name, plain_text)
        shown += sum(OPEN in t for t in literal)
    assert shown  # the user's text was shown somewhere (the check is not vacuous)


@settings(max_examples=25 * SCALE, **BOT_SETTINGS)
@given(title=st.text(min_size=1, max_size=60).filter(str.strip))
def test_no_title_renders_as_a_mention_or_link(bot_factory, title) -> None:  # noqa: F811
    count("card title")
    bot = _bot(bot_factory)
    bot.slack.reset_calls()
    assert bot.command(f"open {title}").status_code == 200
    assert bot.runtime.background.wait_idle(10)
    posted = [c.args for c in bot.slack.calls_for("chat.postMessage", ok_only=True)]
    replies = [c.args for c in bot.slack.calls_for("response_url")]
    for text in all_mrkdwn(posted + replies):
        assert not re.sub(OURS, "", text).count("<"), text


# -- what an error quotes --------------------------------------------------------------------

# What the user typed reaches a UserError between these marks. An error may quote it with
# repr(), which would spell the private-use marks above as escapes; these are printable,
# neither spaces nor word characters, and lower() keeps them.
QUOTE = ("⟦", "⟧")
HOSTILE_WORD = (
    st.lists(
        st.sampled_from([*"*_~`<>&|@!#:.'\"\\ab1\u2060", "<!channel>", "<@U1>", "<https://x.io|x>"])
        | st.text(max_size=3),
        min_size=1,
        max_size=12,
    )
    .map("".join)
    .map(lambda t: "".join(c for c in t if not c.isspace() and c not in QUOTE))
    .filter(bool)
)


def _quoted(word: str) -> str:
    return f"{QUOTE[0]}{word}{QUOTE[1]}"


def _check_quoted(text: str) -> bool:
    """Nothing the user typed formats, mentions or links in this mrkdwn; whether it shows."""
    plain_text, user = _unmark(text, QUOTE)
    assert not formatting_from_user(plain_text, user), plain_text
    return any(user)


def _parser_errors(typed: str) -> dict[str, Any]:
    """The UserError each parser of outside text raises for `typed`."""
    from commands import abuse, incidents, people, trail
    from commands.approvals.plans import check_identifier
    from commands.drills.sandbox_account import pick_scenario
    from commands.errors import UserError
    from commands.review.team import parse_since
    from tests.clock import T0

    calls = {
        "due date": lambda: people.parse_due(typed, today=T0.date()),
        "incident key": lambda: incidents.require_key(typed),
        "resource": lambda: check_identifier(typed),
        "trail resource": lambda: trail.parse_args(typed),
        "trail hours": lambda: trail.parse_args(f"i-0123456789abcdef0 {typed}"),
        "abuse reference": lambda: abuse.parse_args(f"{typed} spam from our host"),
        "since": lambda: parse_since(typed),
        "drill": lambda: pick_scenario(typed),
    }
    errors = {}
    for name, call in calls.items():
        with pytest.raises(UserError) as caught:
            call()
        errors[name] = caught.value
    return errors


@settings(max_examples=150 * SCALE, database=None, deadline=None)
@given(word=HOSTILE_WORD)
def test_no_user_text_quoted_in_an_error_formats_mentions_or_links(word: str) -> None:
    from bot.views.replies import user_error

    count("error quote")
    typed = _quoted(word)
    for name, err in _parser_errors(typed).items():
        shown = user_error(err)
        assert _check_quoted(shown), (name, shown)  # the error quotes what was typed
        # Read back (entities decoded, word joiners unseen) it is the plain sentence the CLI
        # prints, which adds nothing to what was typed.
        read = shown.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
        assert read.replace(bk.WORD_JOINER, "") == err.message.replace(bk.WORD_JOINER, "")
        assert bk.WORD_JOINER not in err.message or bk.WORD_JOINER in word, name


def test_an_error_keeps_its_own_code_spans_around_quoted_text() -> None:
    from bot.views.replies import user_error
    from commands.errors import UserError

    err = UserError("`{flag}` is not an option: use `--volatile`.", flag=_quoted("*x*_<!here>"))
    shown = user_error(err)
    wj = bk.WORD_JOINER
    inert = f"{wj}*{wj}x{wj}*{wj}{wj}_{wj}&lt;!here&gt;"
    assert shown == f"`{QUOTE[0]}{inert}{QUOTE[1]}` is not an option: use `--volatile`."
    assert _check_quoted(shown)
    # Both of the sentence's code spans are still code spans.
    assert len(_code_spans(_unmark(shown, QUOTE)[0])) == 2


# Slash commands whose answer quotes what was typed, and what that answer says.
QUOTING_COMMANDS = [
    ("/incident", "task INC-1 me due {} fix it", "is not a due date"),
    ("/incident", "trail {}", "is neither an instance id"),
    ("/incident", "trail i-0123456789abcdef0 {}", "is not a number of hours"),
    ("/incident", "abuse {} spam from our host", "does not look like a case id"),
    ("/incident", "drill {}", "There is no drill"),
    ("/contain", "{}", "is neither an instance id"),
]


@pytest.mark.parametrize("case", QUOTING_COMMANDS, ids=[c[1] for c in QUOTING_COMMANDS])
@settings(max_examples=8 * SCALE, **BOT_SETTINGS)
@given(word=HOSTILE_WORD)
def test_no_user_text_a_command_answer_quotes_formats_mentions_or_links(
    bot_factory,  # noqa: F811
    case,
    word,
) -> None:
    count("error answer")
    command, form, said = case
    bot = _bot(bot_factory)
    if not getattr(bot, "has_incident", False):
        assert bot.command("open fuzzing target").status_code == 200
        assert bot.runtime.background.wait_idle(10)
        bot.has_incident = True
    response = bot.command(form.format(_quoted(word)), command=command)
    assert response.status_code == 200, response.text[:300]
    answer = response.json()
    assert said in answer["text"], answer
    assert [_check_quoted(text) for text in _rendered(answer)[0]] == [True], answer


# -- configuration files ----------------------------------------------------------------------

SECTIONS = st.sampled_from(
    [
        "slack",
        "approvals",
        "guardduty",
        "containment",
        "contacts",
        "deadlines",
        "impact",
        "forensics",
        "wipe",
        "drills",
        "nonsense",
    ]
)
KEYS = st.sampled_from(
    [
        "incident_channel",
        "channel_per_incident",
        "trusted_bot_ids",
        "expire_after_minutes",
        "sns_topic_arns",
        "poll_interval_seconds",
        "dry_run",
        "examiner_cidrs",
        "gdpr_hours",
        "tag_keys",
        "emails",
        "allow_changes",
        "x",
    ]
)


@settings(max_examples=150 * SCALE, database=None, deadline=None)
@given(
    config=st.one_of(
        VALUES,
        st.dictionaries(SECTIONS, VALUES | st.dictionaries(KEYS, VALUES, max_size=3), max_size=3),
    ),
    raw=st.booleans(),
    text=st.text(max_size=60),
)
def test_any_config_file_loads_or_is_refused_in_one_line(tmp_path_factory, config, raw, text):
    count("config")
    path = tmp_path_factory.mktemp("cfg") / "incident-bot.yml"
    if raw:
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
    else:
        try:
            path.write_text(yaml.safe_dump(config), encoding="utf-8")
        except (UnicodeEncodeError, yaml.YAMLError):
            return  # not a file anyone can write
    environ = {
        "SLACK_BOT_TOKEN": "xoxb-x",
        "SLACK_SIGNING_SECRET": "s3cret",
        "DATABASE_URL": "sqlite://",
        "INCIDENT_BOT_CONFIG": str(path),
    }
    try:
        load_settings(environ)
    except SettingsError as exc:
        assert str(exc).strip() and "Traceback" not in str(exc)


def teardown_module() -> None:
    print("\nfuzz cases run:", json.dumps(dict(sorted(seen.items()))))


# -- what the fuzzing found (kept as plain regressions) ---------------------------------------


def test_an_sns_envelope_with_a_lone_surrogate_is_a_clean_400(gd) -> None:
    note = gd.sign(
        {
            "Type": "Notification",
            "MessageId": "m",
            "TopicArn": TOPIC,
            "Message": "x",
            "Timestamp": "2026-11-27T12:00:00.000Z",
        }
    )
    note["Message"] = "\ud800"  # json.dumps escapes it; the body is refused before SNS checks
    response = gd.post(note)
    assert response.status_code == 400 and "surrogate" in response.text, response.text


@pytest.mark.parametrize(
    "change",
    [
        {"actions": []},
        {"actions": [{"value": "x"}]},
        {"actions": "\ud800"},
        {"user": ["W111"]},
        {"channel": "C0INCIDENT"},
        {"container": None, "message": 7},
    ],
)
def test_signed_clicks_of_the_wrong_shape_are_refused_with_400(bot_factory, change) -> None:  # noqa: F811
    bot = _bot(bot_factory)
    payload = block_actions_payload("incident_timeline", "INC-1")
    payload.update(change)
    response = bot.sender.action(payload)
    assert response.status_code == 400, response.text
