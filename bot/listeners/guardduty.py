"""GuardDuty intake, found by listener discovery; the code lives in bot/guardduty/."""

from bot.guardduty.wiring import register, register_routes, start

__all__ = ["register", "register_routes", "start"]
