"""commands/people: parsing who and when, the owner and roles on the timeline, task reminders
through the queue, and close refused while tasks are open (on each database backend)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import select

from commands import people
from commands.deadlines.policy import DeadlinePolicy
from commands.errors import UserError
from commands.incidents import close_incident, open_incident
from storage.models import Incident, IncidentTask, Reminder, TimelineEvent
from tests.clock import T0

pytestmark = pytest.mark.dates

TODAY = dt.date(2031, 5, 14)


@pytest.mark.parametrize(
    ("text", "due"),
    [
        ("today", TODAY),
        ("tomorrow", TODAY + dt.timedelta(days=1)),
        ("Tomorrow", TODAY + dt.timedelta(days=1)),
        ("+3d", TODAY + dt.timedelta(days=3)),
        ("+2w", TODAY + dt.timedelta(days=14)),
        ("2031-06-01", dt.date(2031, 6, 1)),
        ("2031-05-14", TODAY),
    ],
)
def test_due_dates_count_from_the_given_day(text: str, due: dt.date) -> None:
    assert people.parse_due(text, today=TODAY) == due


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("2031-05-13", "2031-05-13 is in the past: give today or a later day."),
        ("soon", "'soon' is not a due date: use YYYY-MM-DD, today, tomorrow or +3d."),
        ("2031-02-30", "is not a due date"),
        ("+3m", "is not a due date"),
        ("2061-01-01", "is over two years away: check the year."),
    ],
)
def test_bad_due_dates_say_what_to_write(text: str, answer: str) -> None:
    with pytest.raises(UserError) as err:
        people.parse_due(text, today=TODAY)
    assert answer in err.value.message


@pytest.mark.parametrize(
    ("token", "user"),
    [("<@U0ALICE|alice>", "U0ALICE"), ("<@W0BOB>", "W0BOB"), ("U0CAROL", "U0CAROL"), ("me", "W1")],
)
def test_users_from_mentions_ids_and_me(token: str, user: str) -> None:
    assert people.parse_user(token, actor="W1", example="x") == user


def test_a_plain_name_is_refused_with_what_to_write_instead() -> None:
    with pytest.raises(UserError) as err:
        people.parse_user("@alice", actor="W1", example="/incident assign INC-1 @user")
    assert "@-mention picked from Slack's list, their user ID or `me`" in err.value.message


def test_task_arguments_need_who_when_and_what() -> None:
    req = people.parse_task(
        "<@U0BOB|bob> due +1d Rotate   the keys", actor="W1", today=TODAY, key="INC-1"
    )
    assert req == people.TaskRequest("U0BOB", TODAY + dt.timedelta(days=1), "Rotate the keys")
    for bad in ("<@U0BOB> tomorrow Rotate", "<@U0BOB> due tomorrow", ""):
        with pytest.raises(UserError, match="Say who, when and what"):
            people.parse_task(bad, actor="W1", today=TODAY, key="INC-1")


def _incident(database) -> int:
    with database.session() as session:
        return open_incident(session=session, title="Keys leaked", created_by="guardduty").id


def _events(database, incident_id: int) -> list[TimelineEvent]:
    with database.read_session() as session:
        return list(
            session.scalars(
                select(TimelineEvent)
                .where(TimelineEvent.incident_id == incident_id)
                .order_by(TimelineEvent.seq)
            )
        )


def test_owner_and_roles_are_timeline_events_and_the_pings_stop(database) -> None:
    iid = _incident(database)
    with database.session() as session:
        inc = session.get(Incident, iid)
        assert inc is not None and inc.owner is None
        people.start_unowned_pings(session=session, incident=inc, every=dt.timedelta(minutes=5))
    with database.session() as session:
        inc = session.get(Incident, iid)
        people.take(session=session, incident=inc, actor="U0ALICE")
        people.set_role(session=session, incident=inc, actor="U0ALICE", role="scribe", user="U0B")
        people.set_role(session=session, incident=inc, actor="U0ALICE", role="scribe", user="U0C")
    with database.session() as session:
        inc = session.get(Incident, iid)
        with pytest.raises(UserError, match="already has an owner"):
            people.take(session=session, incident=inc, actor="U0BOB")
        with pytest.raises(UserError, match="already the scribe"):
            people.set_role(
                session=session, incident=inc, actor="U0ALICE", role="scribe", user="U0C"
            )
        assert people.roles_of(session=session, incident_ids=[iid]) == {iid: {"scribe": "U0C"}}
        pings = session.scalars(select(Reminder).where(Reminder.kind == "unowned")).all()
        assert [r.status for r in pings] == ["cancelled"]
    kinds = [(e.kind, json.loads(e.details)) for e in _events(database, iid)]
    assert kinds[1] == ("incident.owner", {"from": None, "to": "U0ALICE", "took": True})
    assert kinds[2][0] == "reminders.cancelled"
    assert kinds[3] == ("incident.role", {"role": "scribe", "from": None, "to": "U0B"})
    assert kinds[4] == ("incident.role", {"role": "scribe", "from": "U0B", "to": "U0C"})


def test_task_reminder_on_the_due_day_and_close_refused_until_forced(database) -> None:
    iid = _incident(database)
    policy = DeadlinePolicy(digest_time="09:00", timezone="Europe/Berlin")
    today = people.local_today(T0, policy)
    request = people.TaskRequest("U0BOB", today + dt.timedelta(days=2), "Rotate keys")
    with database.session() as session:
        inc = session.get(Incident, iid)
        task, remind_at = people.add_task(
            session=session, incident=inc, actor="W1", request=request, policy=policy
        )
    # 09:00 in Berlin on the due day is 08:00 UTC in winter (T0 is in November).
    assert remind_at == dt.datetime.combine(request.due_on, dt.time(8, 0), tzinfo=dt.UTC)
    with database.session() as session:
        inc = session.get(Incident, iid)
        with pytest.raises(UserError) as err:
            close_incident(session=session, incident=inc, actor="W1", summary="done")
    assert err.value.message == (
        f"{inc.key} has 1 open follow-up task(s) (#1): mark them done on its card, or close "
        f"anyway with `/incident close {inc.key} <summary> --force <reason>`."
    )
    with database.session() as session:
        inc = session.get(Incident, iid)
        assert inc.status == "open"
        close_incident(
            session=session, incident=inc, actor="W1", summary="done", force_reason="in JIRA"
        )
    with database.read_session() as session:
        reminder = session.scalars(select(Reminder).where(Reminder.kind == "task")).one()
        assert reminder.status == "cancelled"
        assert session.get(IncidentTask, task.id).done_at is None  # left open, on record
    forced = [e for e in _events(database, iid) if e.kind == "incident.close_forced"]
    assert len(forced) == 1
    assert forced[0].summary == "Closed with 1 open follow-up task(s) (#1): in JIRA"
