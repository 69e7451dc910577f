"""Slash commands. `/incident` is a registry of subcommands (incident_subcommands.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.listeners.incident_subcommands import incident

if TYPE_CHECKING:
    from bot.app import IncidentBotApp


def register(app: IncidentBotApp) -> None:
    incident.register(app)
