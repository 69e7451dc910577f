"""The post-incident review's modal and the messages around its report."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from bot.views import blocks as bk
from commands.review.report import ANSWER_MAX, QUESTIONS

REVIEW_MODAL = "incident_review_modal"
PLACEHOLDERS = {
    "summary": "What happened, in a few sentences (required)",
    "root_cause": "Why it happened",
    "went_well": "What helped: detection, tooling, people",
    "to_improve": "What slowed us down or went wrong",
    "lessons": "What we will do differently; follow-ups",
}


def review_modal(key: str, channel_id: str, answers: Mapping[str, Any]) -> dict[str, Any]:
    """One multiline input per question; a second review starts from the last answers."""
    blocks = []
    for field, label in QUESTIONS:
        block = bk.text_input(
            field,
            label,
            max_length=ANSWER_MAX,
            placeholder=PLACEHOLDERS[field],
            optional=field != "summary",
        )
        previous = answers.get(field)
        if isinstance(previous, str) and previous:
            block["element"]["initial_value"] = previous[:ANSWER_MAX]
        blocks.append(block)
    return bk.modal(
        REVIEW_MODAL,
        f"Review of {key}",
        blocks,
        submit="Post report",
        private_metadata=json.dumps({"key": key, "channel": channel_id}),
    )


def report_comment(key: str, user_id: str, *, events: int) -> str:
    return (
        f"Post-incident review of {key} by {bk.user(user_id)}: the report (Markdown, and an "
        f"HTML page that stands alone) and its timeline chart, over {events} events."
    )


def report_posted(key: str, channel_id: str) -> str:
    return f"The review of *{key}* is posted in {bk.channel(channel_id)}."
