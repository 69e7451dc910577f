"""Errors a user caused. The message is one sentence that says what to do instead."""


class UserError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(UserError):
    pass


class NotAllowed(UserError):
    pass
