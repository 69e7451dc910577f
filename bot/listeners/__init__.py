"""Bolt listeners, one module per kind or feature, each with `register(app)`.

`register_all` registers the core groups first (commands, actions, views, events) and then
every other module in this package that defines `register(app)`, in name order. A feature
adds listeners by dropping a module here (e.g. `containment.py` with `/contain` and the
approval buttons); `/incident` subcommands go through
`bot.listeners.incident_subcommands.subcommand` and need no `register` of their own, only an
import, which this discovery does. A module may also define `register_routes(router)` to add
HTTP routes (see bot/http.py), and `register_fallback(app)` for listeners that must come after
every other module's (Bolt runs only the first listener that matches a request).
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.app import IncidentBotApp

CORE = ("commands", "actions", "views", "events")


def listener_modules() -> list[ModuleType]:
    names = [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
    ordered = [n for n in CORE if n in names] + sorted(n for n in names if n not in CORE)
    return [importlib.import_module(f"{__name__}.{n}") for n in ordered]


def register_all(app: IncidentBotApp) -> None:
    for module in listener_modules():
        register = getattr(module, "register", None)
        if callable(register):
            register(app)
    for module in listener_modules():
        register_fallback = getattr(module, "register_fallback", None)
        if callable(register_fallback):
            register_fallback(app)
