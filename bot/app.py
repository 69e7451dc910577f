"""The Bolt App subclass the bot runs (built by bot.wiring.create_app).

Listeners run inside the request (`process_before_response=True`): they answer fast reads in
the ack itself and hand anything slow to `runtime.background`, whose jobs report their own
errors. Bolt's own post-ack thread pool would swallow them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from slack_bolt import App, BoltContext, BoltRequest, BoltResponse
from slack_bolt.middleware import Middleware

from bot.runtime import Runtime

RUNTIME = "incident_bot.runtime"  # the context key every listener finds the runtime under


def runtime_of(context: BoltContext) -> Runtime:
    """The runtime a listener runs in (listeners are top-level functions taking `context`)."""
    runtime: Runtime = context[RUNTIME]
    return runtime


class IncidentBotApp(App):
    """A Bolt App that remembers which commands and events were registered.

    The manifest test compares these sets with manifest.yml in both directions.
    """

    runtime: Runtime

    def __init__(self, *, runtime: Runtime, **kwargs: Any) -> None:
        self.registered_commands: set[str] = set()
        self.registered_events: set[str] = set()
        super().__init__(**kwargs)
        self.runtime = runtime
        self.use(_AttachRuntime(runtime))

    def command(self, command: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(command, str):
            if command in self.registered_commands:
                # Bolt runs the first listener that matches: a second would never run.
                raise ValueError(f"{command} is registered twice")
            self.registered_commands.add(command)
        return super().command(command, *args, **kwargs)

    def event(self, event: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(event, str):
            self.registered_events.add(event)
        elif isinstance(event, dict) and isinstance(event.get("type"), str):
            self.registered_events.add(event["type"])
        return super().event(event, *args, **kwargs)

    def message(self, *args: Any, **kwargs: Any) -> Any:
        self.registered_events.add("message")
        return super().message(*args, **kwargs)


class _AttachRuntime(Middleware):
    """Puts the runtime in every request's context. A Middleware subclass, not a function:
    Bolt inspects a function middleware's signature and builds its arguments on every
    request (about 20 µs of the ack of `/incident status`)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def process(
        self,
        *,
        req: BoltRequest,
        resp: BoltResponse,
        next: Callable[[], BoltResponse],  # Bolt passes it by this name
    ) -> BoltResponse | None:
        req.context[RUNTIME] = self.runtime
        return next()
