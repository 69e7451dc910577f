"""Events API listeners: the App Home tab, and an acknowledgement for every other message.

Slack retries an event delivery that is not answered 200 and disables the event
subscriptions of an app whose deliveries keep failing (which would also stop App Home and
trusted bots' findings). `message.channels` delivers every message in the channels the bot
is in (people talking, edits, deletions, file shares, thread broadcasts, joins...); the
feature listeners act on a few of them and this fallback acknowledges the rest.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from slack_bolt import BoltContext

from bot.app import runtime_of
from bot.views.home import HomePeople, home_view
from commands import people
from commands.overview import live_overviews

if TYPE_CHECKING:
    from bot.app import IncidentBotApp
    from bot.runtime import Runtime

log = logging.getLogger(__name__)


def publish_home(runtime: Runtime, user_id: str) -> None:
    views = live_overviews(
        database=runtime.database, gdpr_hours=runtime.config.deadlines.gdpr_hours
    )
    ids = [v.incident.id for v in views]
    with runtime.database.read_session() as session:
        crew = HomePeople(
            roles=people.roles_of(session=session, incident_ids=ids),
            tasks=people.tasks_of(session=session, incident_ids=ids, open_only=True),
            mine=people.tasks_for_user(session=session, user=user_id),
        )
    now = runtime.now()
    today = people.local_today(now, runtime.deadline_policy)
    view = home_view(views, now=now, people=crew, today=today)
    runtime.client.views_publish(user_id=user_id, view=view)


def on_home_opened(event: dict[str, Any], context: BoltContext) -> None:
    runtime = runtime_of(context)
    if event.get("tab", "home") != "home":
        return
    user_id = event["user"]
    # Events have no one to answer; a failure is logged by the background pool.
    runtime.background.submit(
        publish_home, runtime, user_id, description=f"publish App Home for {user_id}"
    )


def register(app: IncidentBotApp) -> None:
    app.event("app_home_opened")(on_home_opened)


def acknowledge_message(event: dict[str, Any]) -> None:
    log.debug("message %s in %s: nothing to do", event.get("subtype"), event.get("channel"))


def register_fallback(app: IncidentBotApp) -> None:
    """Registered after every feature listener: those act first on the messages they match."""
    app.event("message")(acknowledge_message)
