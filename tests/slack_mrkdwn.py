"""A model of Slack's mrkdwn: which characters of a text can format it, ping or link.

Tests use it to check that nothing a user typed does any of that in what the bot sends.
"""

from __future__ import annotations

import unicodedata

# A model of Slack's mrkdwn delimiter rules, not Slack itself (Slack publishes no grammar;
# this is what it is observed to do, and what bot/views/blocks.py relies on):
# - `*bold*`, `_italic_`, `~strike~` and `` `code` `` are spans on one line;
# - a delimiter opens a span only after the start, whitespace, punctuation or a symbol,
#   and before a character that is not whitespace;
# - it closes one only after a character that is not whitespace, and before the end,
#   whitespace, punctuation or a symbol (so `snake_case_name` has no italics);
# - letters, digits and format characters such as U+2060 WORD JOINER are none of those;
# - nothing inside a code span is formatted;
# - `<…>` is a mention, a channel, a special command or a link.
DELIMITERS = "*_~`"


def _boundary(ch: str | None) -> bool:
    return ch is None or ch.isspace() or unicodedata.category(ch)[0] in "PSZ"


def _can_open(text: str, i: int) -> bool:
    after = text[i + 1] if i + 1 < len(text) else None
    return _boundary(text[i - 1] if i else None) and after is not None and not after.isspace()


def _can_close(text: str, i: int) -> bool:
    after = text[i + 1] if i + 1 < len(text) else None
    return i > 0 and not text[i - 1].isspace() and _boundary(after)


def _code_spans(text: str) -> list[tuple[int, int]]:
    spans, i = [], 0
    while i < len(text):
        if text[i] == "`" and _can_open(text, i):
            j = next(
                (j for j in range(i + 2, len(text)) if text[j] == "`" and _can_close(text, j)),
                None,
            )
            if j is not None and "\n" not in text[i:j]:
                spans.append((i, j))
                i = j + 1
                continue
        i += 1
    return spans


def formatting_from_user(text: str, user: list[bool]) -> list[str]:
    """What the user's characters (`user[i]`) do in this mrkdwn `text`, by the model: each
    delimiter that can open or close a span, each `<`."""
    inside = {p for a, b in _code_spans(text) for p in range(a + 1, b)}
    found = []
    for i, ch in enumerate(text):
        if not user[i]:
            continue
        if ch == "<":
            found.append(f"<@{i}")
        elif (
            ch in DELIMITERS
            and not (i in inside and ch != "`")
            and (_can_open(text, i) or _can_close(text, i))
        ):
            found.append(f"{ch}@{i}")
    return found
