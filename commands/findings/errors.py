"""Signals raised while reading GuardDuty payloads."""


class BadFinding(ValueError):
    """The payload claims to be a finding but is malformed; the message is one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason.splitlines()[0] if reason else "malformed finding")

    @property
    def reason(self) -> str:
        return str(self)


class Ignored(Exception):
    """The payload is valid but carries no finding (another detail-type, an announcement...)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)

    @property
    def reason(self) -> str:
        return str(self)
