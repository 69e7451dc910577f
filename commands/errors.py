"""Errors a user caused. The message is one sentence that says what to do instead.

The sentence is the bot's; what came from outside it (what a user typed: an option, a key,
a name, a date; a configured value; an AWS error code) is kept apart: the sentence is a
`str.format` template naming each such value as a field, and the values are keyword
arguments.

    raise UserError("{text!r} is not a due date: use YYYY-MM-DD.", text=text[:40])

`message` is the plain sentence with the values put in (the CLI prints it); `parts` says
which pieces came from outside, so a view can show them literally (in Slack: never a mention,
a link or formatting) while keeping the sentence's own markup. A sentence with no user
text is a plain string, braces and all; with values, the template's own braces are doubled
(`{{` / `}}`), as in any `str.format` template (an f-string template doubles them too, and
what it puts in itself must be the bot's own text).
"""

from __future__ import annotations

from string import Formatter

_FORMATTER = Formatter()


class UserError(Exception):
    def __init__(self, message: str, /, **given: object) -> None:
        self.template = message
        self.given = given
        # The sentence as (text, from_outside) pieces, in order; joined, `message`.
        self.parts = _split(message, given) if given else ((message, False),)
        self.message = "".join(text for text, _ in self.parts)
        super().__init__(self.message)


def _split(template: str, given: dict[str, object]) -> tuple[tuple[str, bool], ...]:
    """`template` with each field filled from `given` (its `!r` and format spec applied), each
    filled value marked as outside text. Fields are plain names; every value is used."""
    parts: list[tuple[str, bool]] = []
    used: set[str] = set()
    for literal, field, spec, conversion in _FORMATTER.parse(template):
        if literal:
            parts.append((literal, False))
        if field is None:
            continue
        if not field.isidentifier():
            raise ValueError(f"UserError fields are plain names: {template!r}")
        used.add(field)
        text = _FORMATTER.format_field(
            _FORMATTER.convert_field(given[field], conversion), spec or ""
        )
        if text:
            parts.append((text, True))
    if used != set(given):
        raise ValueError(f"UserError values not in its sentence: {sorted(set(given) - used)}")
    return tuple(parts)


class NotFound(UserError):
    pass


class NotAllowed(UserError):
    pass
