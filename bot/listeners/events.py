"""Events API listeners: the App Home tab."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from bot.views.home import home_view
from commands.overview import live_overviews

if TYPE_CHECKING:
    from bot.app import IncidentBotApp, Runtime

log = logging.getLogger(__name__)


def publish_home(runtime: Runtime, user_id: str) -> None:
    views = live_overviews(
        database=runtime.database, gdpr_hours=runtime.config.deadlines.gdpr_hours
    )
    view = home_view(views, now=runtime.now())
    runtime.client.views_publish(user_id=user_id, view=view)


def register(app: IncidentBotApp) -> None:
    runtime = app.runtime

    @app.event("app_home_opened")
    def on_home_opened(event: dict[str, Any]) -> None:
        if event.get("tab", "home") != "home":
            return
        user_id = event["user"]
        # Events have no one to answer; a failure is logged by the background pool.
        runtime.background.submit(
            publish_home, runtime, user_id, description=f"publish App Home for {user_id}"
        )
