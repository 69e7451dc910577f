"""/incident assign, role and task over real HTTP: signed commands and clicks in, the fake
Slack's calls and the database out; task reminders posted by the scheduler on the test clock."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from sqlalchemy import select

from bot.reminder_kinds import reminder_kinds
from bot.scheduler import ReminderScheduler
from storage.models import Incident, IncidentRole, IncidentTask, Reminder
from tests.bot.test_card_actions import click
from tests.bot.test_incident_commands import ack_json, events, flat, incident, open_incident
from tests.slack_signing import block_actions_payload

pytestmark = pytest.mark.dates

ALICE = "<@U0ALICE|alice>"
BOB = "<@U0BOB|bob>"


def card_update(bot, predicate=lambda c: True) -> Any:
    return bot.slack.wait_for("chat.update", predicate)


def thread_line(bot, text: str) -> Any:
    return bot.slack.wait_for("chat.postMessage", lambda c: text in c.args.get("text", ""))


def answer(bot, text: str) -> Any:
    return bot.slack.wait_for("response_url", lambda c: text in c.args.get("text", ""))


def tasks(bot) -> list[IncidentTask]:
    with bot.session() as session:
        return list(session.scalars(select(IncidentTask).order_by(IncidentTask.number)))


def task_reminders(bot) -> list[Reminder]:
    with bot.session() as session:
        return list(
            session.scalars(select(Reminder).where(Reminder.kind == "task").order_by(Reminder.id))
        )


def scheduler_for(bot) -> ReminderScheduler:
    """A scheduler on the bot's runtime, not started: the test runs it when time has moved."""
    return ReminderScheduler(
        database=bot.runtime.database,
        settings=bot.runtime.settings,
        kinds=reminder_kinds(),
        policy=bot.runtime.deadline_policy,
        client=bot.runtime.client,
        slack=bot.runtime.slack,
    )


def is_reminder(call: Any) -> bool:
    return (call.args.get("metadata") or {}).get("event_type") == "incident_bot_reminder"


# -- owner and roles -------------------------------------------------------------------------


def test_assign_by_mention_updates_card_thread_and_timeline(bot):
    card = open_incident(bot)
    bot.slack.reset_calls()
    assert ack_json(bot.command(f"assign INC-1 {ALICE}")) == {}
    update = card_update(bot)
    bot.idle()
    assert "*Owner*\\n<@U0ALICE>" in flat(update.args["blocks"])
    line = thread_line(bot, "now owns INC-1")
    assert line.args["thread_ts"] == card.response["ts"]
    assert "<@U0ALICE> now owns INC-1 (was <@W111>), assigned by <@W111>." in line.args["text"]
    answer(bot, "<@U0ALICE> owns *INC-1* now.")
    assert incident(bot).owner == "U0ALICE"
    owner = [e for e in events(bot) if e.kind == "incident.owner"]
    assert len(owner) == 1 and json.loads(owner[0].details)["to"] == "U0ALICE"


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("assign INC-1", "Say who owns it: `/incident assign INC-1 @user` (or `me`)."),
        ("assign INC-1 @alice", "@-mention picked from Slack's list"),
        ("role INC-1 janitor <@U0A>", "Say which role: `/incident role INC-1 commander|scribe"),
        ("role INC-1 commander", "Say which role and who"),
        ("task INC-1 <@U0A> due someday fix it", "'someday' is not a due date"),
        ("task INC-1 fix it", "Say who, when and what"),
        ("assign INC-9 me", "No incident INC-9"),
    ],
)
def test_mistakes_are_answered_in_the_ack_and_change_nothing(bot, text: str, said: str):
    open_incident(bot)
    before = len(events(bot))
    body = ack_json(bot.command(text))
    assert body["response_type"] == "ephemeral" and said in body["text"], body
    bot.idle()
    assert len(events(bot)) == before and incident(bot).owner == "W111"


def test_a_mistyped_due_date_is_answered_as_typed_never_as_formatting(bot):
    open_incident(bot)
    body = ack_json(bot.command("task INC-1 me due *tomorrow* fix the wiki"))
    wj = "\u2060"  # word joiners around each `*`: Slack shows it, and makes no bold of it
    assert body == {
        "text": f"'{wj}*{wj}tomorrow{wj}*{wj}' is not a due date: use YYYY-MM-DD, today, "
        "tomorrow or +3d.",
        "response_type": "ephemeral",
    }
    bot.idle()
    assert tasks(bot) == []


def test_roles_show_on_the_card_and_reassigning_names_who_had_it(bot):
    open_incident(bot)
    assert ack_json(bot.command(f"role INC-1 commander {ALICE}")) == {}
    bot.idle()
    assert ack_json(bot.command(f"role INC-1 Comms {BOB}")) == {}
    bot.idle()
    assert ack_json(bot.command("role INC-1 commander <@U0CAROL>")) == {}
    update = card_update(bot, lambda c: "U0CAROL" in flat(c.args["blocks"]))
    bot.idle()
    assert "*Roles* commander <@U0CAROL> · comms <@U0BOB>" in flat(update.args["blocks"])
    thread_line(bot, "<@U0CAROL> is now the commander of INC-1 (was <@U0ALICE>)")
    with bot.session() as session:
        held = {r.role: r.user_id for r in session.scalars(select(IncidentRole))}
    assert held == {"commander": "U0CAROL", "comms": "U0BOB"}
    details = [json.loads(e.details) for e in events(bot) if e.kind == "incident.role"]
    assert details[-1] == {"role": "commander", "from": "U0ALICE", "to": "U0CAROL"}


def test_assign_on_a_closed_incident_is_refused_after_the_ack(bot):
    open_incident(bot)
    ack_json(bot.command("close INC-1 false alarm"))
    bot.idle()
    assert ack_json(bot.command("assign INC-1 me")) == {}
    said = answer(bot, "is closed")
    assert said.args["text"] == "INC-1 is closed; assign the owner on a new incident instead."
    assert incident(bot).owner == "W111"


def test_help_lists_the_people_commands(bot):
    text = ack_json(bot.command("help"))["text"]
    for usage in (
        "/incident assign [INC-N] @user",
        "/incident role [INC-N] commander|scribe|comms @user",
        "/incident task [INC-N] @owner due",
    ):
        assert usage in text


def test_free_text_reads_as_typed_when_slack_escapes_mentions(bot):
    open_incident(bot)
    ack_json(bot.command("note INC-1 paged <@U0BOB|bob> in <#C0SEC|security> <https://x.io/a>"))
    bot.idle()
    notes = [e.summary for e in events(bot) if e.kind == "note"]
    assert notes == ["paged @bob in #security https://x.io/a"]


# -- tasks -------------------------------------------------------------------------------------


def test_task_is_listed_reminded_on_its_day_and_done_from_the_card(bot, clock):
    card = open_incident(bot)
    today = bot.runtime.now().date()  # deadlines.timezone is UTC here
    assert ack_json(bot.command(f"task INC-1 {BOB} due tomorrow Rotate the <b> keys")) == {}
    update = card_update(bot, lambda c: "Follow-up tasks" in flat(c.args["blocks"]))
    bot.idle()
    due = today + dt.timedelta(days=1)
    [task] = tasks(bot)
    assert (task.number, task.owner, task.due_on, task.text) == (
        1,
        "U0BOB",
        due,
        "Rotate the <b> keys",
    )
    blocks = update.args["blocks"]
    [row] = [b for b in blocks if b.get("accessory", {}).get("action_id") == "incident_task_toggle"]
    assert (
        row["accessory"]["value"] == "INC-1 1 done" and row["accessory"]["text"]["text"] == "Done"
    )
    assert "Rotate the &lt;b&gt; keys" in row["text"]["text"] and "<@U0BOB>" in row["text"]["text"]
    thread_line(bot, "Task #1 on INC-1 for <@U0BOB>")
    [reminder] = task_reminders(bot)
    assert reminder.due_at == dt.datetime.combine(due, dt.time(9, 0), tzinfo=dt.UTC)
    assert reminder.status == "pending"

    # The due day's morning: the scheduler reminds the task's owner in the incident's thread.
    clock.advance(seconds=(reminder.due_at - bot.runtime.now()).total_seconds() + 1)
    scheduler = scheduler_for(bot)
    assert scheduler.run_due() == 1
    assert scheduler.drain(10)  # posted and recorded by the scheduler's posting lanes
    posted = bot.slack.wait_for("chat.postMessage", is_reminder)
    assert posted.args["thread_ts"] == card.response["ts"]
    assert posted.args["text"].startswith("<@U0BOB> 📋 INC-1 task #1 is due today: Rotate the")
    assert "<!subteam" not in posted.args["text"]
    first, second = task_reminders(bot)
    assert first.status == "sent" and second.status == "pending"
    assert second.due_at == first.due_at + dt.timedelta(days=1)  # daily while it stays open
    assert "reminder.task" in [e.kind for e in events(bot)]

    # Done from the card: the next reminder is cancelled and the button offers Reopen.
    bot.slack.reset_calls()
    assert (
        bot.sender.action(click(bot, "incident_task_toggle", "INC-1 1 done", card)).status_code
        == 200
    )
    update = card_update(bot)
    bot.idle()
    answer(bot, "Task #1 of *INC-1* is done.")
    assert tasks(bot)[0].done_at is not None and tasks(bot)[0].done_by == "W111"
    assert [r.status for r in task_reminders(bot)] == ["sent", "cancelled"]
    shown = flat(update.args["blocks"])
    assert "(0 open of 1)" in shown and '"INC-1 1 open"' in shown and "Reopen" in shown
    done = [e for e in events(bot) if e.kind == "task.done"]
    assert json.loads(done[0].details) == {"number": 1, "reminders_cancelled": 1}

    # A second click on the stale Done button changes nothing and says so.
    bot.sender.action(click(bot, "incident_task_toggle", "INC-1 1 done", card))
    answer(bot, "Task #1 of INC-1 is already done.")

    # Reopen: reminded again at the next morning.
    bot.sender.action(click(bot, "incident_task_toggle", "INC-1 1 open", card))
    answer(bot, "Task #1 of *INC-1* is open again.")
    bot.idle()
    assert tasks(bot)[0].done_at is None
    latest = task_reminders(bot)[-1]
    assert latest.status == "pending" and latest.due_at > bot.runtime.now()
    kinds = [e.kind for e in events(bot) if e.kind.startswith("task.")]
    assert kinds == ["task.added", "task.done", "task.reopened"]


def test_open_tasks_block_close_until_forced_with_a_reason(bot):
    card = open_incident(bot)
    ack_json(bot.command(f"task INC-1 {BOB} due +3d Write the post-mortem"))
    bot.idle()
    body = ack_json(bot.command("close INC-1 all done"))
    assert body["text"] == (
        "INC-1 has 1 open follow-up task(s) (#1): mark them done on its card, or close anyway "
        "with `/incident close INC-1 &lt;summary&gt; --force &lt;reason&gt;`."
    )
    body = ack_json(bot.command("close INC-1 all done --force"))
    assert "Say why it closes with open tasks" in body["text"]
    # The card's Close… button says the same instead of opening the summary form.
    bot.sender.action(click(bot, "incident_close", "INC-1", card))
    bot.slack.wait_for("response_url", lambda c: "open follow-up task(s) (#1)" in c.args["text"])
    assert not bot.slack.calls_for("views.open")
    assert incident(bot).status == "open"

    assert ack_json(bot.command("close INC-1 all done --force tracked in SEC-12")) == {}
    thread_line(bot, "Closed with open follow-up task(s) #1: tracked in SEC-12")
    bot.idle()
    closed = incident(bot)
    assert closed.status == "closed" and closed.resolution == "all done"
    kinds = [e.kind for e in events(bot)]
    assert kinds.index("incident.close_forced") == kinds.index("incident.status") + 1
    assert [r.status for r in task_reminders(bot)] == ["cancelled"]


def test_close_without_tasks_needs_no_force(bot):
    open_incident(bot)
    assert ack_json(bot.command("close INC-1 nothing to follow up")) == {}
    bot.idle()
    assert incident(bot).status == "closed"
    assert "incident.close_forced" not in [e.kind for e in events(bot)]


# -- App Home ------------------------------------------------------------------------------------


def home_opened(bot, user: str) -> dict[str, Any]:
    event = {"type": "app_home_opened", "user": user, "channel": "D0", "tab": "home"}
    assert bot.sender.event(event).status_code == 200
    published = bot.slack.wait_for("views.publish", lambda c: c.args["user_id"] == user)
    return published.args["view"]


def test_home_shows_owner_roles_tasks_and_the_viewers_own_tasks(bot):
    for user in ("U0ALICE", "U0BOB"):
        bot.slack.add_user(user)
    open_incident(bot)
    ack_json(bot.command(f"role INC-1 scribe {ALICE}"))
    ack_json(bot.command(f"task INC-1 {BOB} due today Revoke the sessions"))
    bot.idle()
    view = home_opened(bot, "U0BOB")
    shown = flat(view)
    assert "*Your open tasks (1)*" in shown and "Revoke the sessions" in shown
    assert "*Owner* <@W111>" in shown and "*Roles* scribe <@U0ALICE>" in shown
    assert "*Open tasks* 1 · next due *today*" in shown
    [done] = [
        el
        for b in view["blocks"]
        if b["type"] == "actions"
        for el in b["elements"]
        if el["action_id"] == "incident_task_toggle"
    ]
    assert done["value"] == "INC-1 1 done"
    assert "Your open tasks" not in flat(home_opened(bot, "U0ALICE"))

    # Done from the Home tab: no response_url there, so the answer is a DM and Home re-renders.
    bot.slack.reset_calls()
    payload = block_actions_payload("incident_task_toggle", "INC-1 1 done", user_id="U0BOB")
    payload.pop("response_url")
    payload.pop("channel", None)
    payload["container"] = {"type": "view", "view_id": "V0HOME"}
    assert bot.sender.action(payload).status_code == 200
    dm = bot.slack.wait_for("chat.postMessage", lambda c: c.args.get("channel") == "U0BOB")
    assert dm.args["text"] == "Task #1 of *INC-1* is done."
    again = bot.slack.wait_for("views.publish", lambda c: c.args["user_id"] == "U0BOB")
    assert "Your open tasks" not in flat(again.args["view"])
    with bot.session() as session:
        assert session.scalars(select(Incident)).one().owner == "W111"
