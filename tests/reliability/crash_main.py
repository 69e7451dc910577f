"""`incident-bot` with a crash switch, for the kill -9 tests (tests/reliability/test_crash.py).

INCIDENT_BOT_TEST_CRASH names a JSON file the test writes once it knows the request:
`{"request_id": R, "at": POINT}`, POINT one of
  "approved"           the approval committed, R about to be claimed (nothing run)
  "claimed"            R moved approved -> running (containment.started committed)
  "started:ACTION"     step ACTION's start committed, before any of its AWS calls
  "finished:ACTION"    step ACTION's result committed (a step boundary)
  "call:SERVICE.OP"    an AWS call answered (AWS did it), before its step recorded anything
It also runs incident-bot-revoker in the bot's process (moto_server runs no Lambda code).
When the bot reaches POINT it renames the file to `<file>.fired` (so the next process does not
crash again) and SIGKILLs its whole process group, gunicorn's master and worker: no cleanup,
no atexit, no shutdown drain, as a power cut. Without the variable this is `incident-bot`.

The hooks wrap module attributes the bot looks up at call time; they are installed in the
gunicorn master before it forks the worker, which inherits them.

Run as `python -m tests.reliability.crash_main run --http ...`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path
from typing import Any

from bot import wiring
from bot.clock import SystemClock
from commands.approvals import execution, step_records
from containment import clients
from containment.revoker.local import in_process_revoker


def _switch() -> dict[str, Any] | None:
    path = os.environ.get("INCIDENT_BOT_TEST_CRASH")
    if not path:
        return None
    try:
        return dict(json.loads(Path(path).read_text()))
    except (OSError, ValueError):
        return None


def _crash_if(point: str, request_id: int | None) -> None:
    switch = _switch()
    if switch is None or switch.get("at") != point:
        return
    if request_id is not None and switch.get("request_id") != request_id:
        return
    path = os.environ["INCIDENT_BOT_TEST_CRASH"]
    with contextlib.suppress(OSError):
        os.rename(path, path + ".fired")
    os.killpg(os.getpgid(0), signal.SIGKILL)


_claim = execution.claim


def _claim_then_crash(*, database: Any, request_id: int, now: Any = None) -> bool:
    _crash_if("approved", request_id)  # the approval is committed; nothing claimed yet
    won = _claim(database=database, request_id=request_id, now=now)
    if won:
        _crash_if("claimed", request_id)
    return won


_call = step_records.StepWriter.__call__


def _step_then_crash(self: Any, action: str, phase: str, result: Any) -> None:
    _call(self, action, phase, result)
    _crash_if(f"{phase}:{action}", self.request_id)  # the writer's transaction committed


_watch = clients.watch


def _watch_and_crash(client: Any) -> Any:
    client = _watch(client)
    service = client.meta.service_model.service_name

    def answered(model: Any, **_: Any) -> None:
        _crash_if(f"call:{service}.{model.name}", None)

    client.meta.events.register(
        f"after-call.{service}", answered, unique_id="incident-bot-test-crash"
    )
    return client


_create_app = wiring.create_app


def _with_revoker(*args: Any, **kwargs: Any) -> Any:
    """incident-bot-revoker's code in the bot's process: moto_server runs no Lambda code (as
    the reliability bench and bench/contain do)."""
    app = _create_app(*args, **kwargs)
    options = app.runtime.options
    options.client_hooks = (*options.client_hooks, in_process_revoker(SystemClock().now))
    return app


wiring.create_app = _with_revoker  # type: ignore[assignment]
execution.claim = _claim_then_crash  # type: ignore[assignment]
step_records.StepWriter.__call__ = _step_then_crash  # type: ignore[method-assign]
clients.watch = _watch_and_crash  # type: ignore[assignment]

if __name__ == "__main__":
    from bot.cli import main

    main()
