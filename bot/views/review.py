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


def report_file_names(key: str) -> dict[str, str]:
    return {"md": f"{key}-review.md", "html": f"{key}-review.html", "png": f"{key}-timeline.png"}


def report_files(
    key: str, names: Mapping[str, str], *, markdown: str, html: str, chart: bytes
) -> list[dict[str, Any]]:
    """The three files of the report, as `SlackWriter.upload` takes them."""
    return [
        {"filename": names["md"], "title": f"{key} post-incident review", "content": markdown},
        {"filename": names["html"], "title": f"{key} post-incident review (HTML)", "content": html},
        {"filename": names["png"], "title": f"{key} timeline chart", "content": chart},
    ]


SUMMARY_EMPTY = "Write the summary first."
FORM_NAMES_NO_INCIDENT = "This form does not name an incident; run /incident review INC-N."


def run_from_slack(example: str, key: str) -> str:
    """A `UserError`: the form opens only from Slack (a trigger id is needed)."""
    return f"Run `{example.replace('INC-42', key)}` from Slack to open the form."
