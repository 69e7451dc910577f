"""`/incident review` over real HTTP: the modal, its submission, and the report files the
fake Slack receives in the incident's thread through the upload flow."""

from __future__ import annotations

import base64
import json

from sqlalchemy import select

from storage.facts import REVIEW
from storage.models import Incident, TimelineEvent
from tests.bot.test_incident_commands import EVIL, ack_json, open_incident
from tests.slack_signing import view_submission_payload

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def values(**answers: str) -> dict:
    return {k: {k: {"type": "plain_text_input", "value": v}} for k, v in answers.items()}


def kinds(bot) -> list[str]:
    with bot.session() as session:
        return list(session.scalars(select(TimelineEvent.kind).order_by(TimelineEvent.seq)))


def test_review_modal_then_report_in_the_thread(bot) -> None:
    card = open_incident(bot)
    assert ack_json(bot.command("review INC-1")) == {}
    opened = bot.slack.wait_for("views.open")
    view = opened.args["view"]
    assert view["callback_id"] == "incident_review_modal"
    assert [b["block_id"] for b in view["blocks"]] == [
        "summary",
        "root_cause",
        "went_well",
        "to_improve",
        "lessons",
    ]
    assert opened.args["trigger_id"]

    refused = bot.sender.action(
        view_submission_payload(
            view["callback_id"], values(summary="  "), private_metadata=view["private_metadata"]
        )
    )
    assert refused.json() == {
        "response_action": "errors",
        "errors": {"summary": "Write the summary first."},
    }
    assert "review.submitted" not in kinds(bot)

    answers = {
        "summary": f"Disk filled by runaway logs {EVIL}",
        "root_cause": "log rotation off",
        "went_well": "paged fast",
        "to_improve": "alert earlier",
        "lessons": "rotate logs",
    }
    submit = view_submission_payload(
        view["callback_id"], values(**answers), private_metadata=view["private_metadata"]
    )
    assert bot.sender.action(submit).status_code == 200
    done = bot.slack.wait_for("files.completeUploadExternal")
    bot.idle()

    # Three files, in the incident's thread, in one upload.
    assert done.args["channel_id"] == "C0INCIDENT"
    assert done.args["thread_ts"] == card.response["ts"]
    files = {
        bot.slack.files[f["id"]]["filename"]: bot.slack.files[f["id"]] for f in done.args["files"]
    }
    assert set(files) == {"INC-1-review.md", "INC-1-review.html", "INC-1-timeline.png"}
    assert files["INC-1-timeline.png"]["content"].startswith(PNG_MAGIC)
    md = files["INC-1-review.md"]["content"].decode()
    assert "### Root cause\n\nlog rotation off" in md and "| Time to acknowledge |" in md
    page = files["INC-1-review.html"]["content"].decode()
    assert "&lt;!channel&gt;" in page and "<!channel>" not in page
    embedded = page.split('src="data:image/png;base64,', 1)[1].split('"', 1)[0]
    assert base64.b64decode(embedded).startswith(PNG_MAGIC)
    assert "<!channel>" not in (done.args.get("initial_comment") or "")

    # Recorded after Slack took the files: answers, then the posting.
    assert kinds(bot)[-2:] == ["review.submitted", "review.report_posted"]
    with bot.session() as session:
        incident = session.scalars(select(Incident)).one()
        stored = REVIEW.get(incident)
        posted = session.scalars(
            select(TimelineEvent).where(TimelineEvent.kind == "review.report_posted")
        ).one()
    assert stored["root_cause"] == "log rotation off" and stored["reviewed_by"] == "W111"
    assert json.loads(posted.details)["files"] == [f["id"] for f in done.args["files"]]
    dm = bot.slack.wait_for("chat.postMessage", lambda c: c.args["channel"] == "W111")
    assert "review of *INC-1* is posted" in dm.args["text"]

    # A second review starts from the first one's answers.
    assert ack_json(bot.command("review INC-1")) == {}
    again = bot.slack.wait_for("views.open", lambda c: c is not opened)
    assert again.args["view"]["blocks"][1]["element"]["initial_value"] == "log rotation off"


def test_review_of_unknown_incident_is_one_sentence(bot) -> None:
    body = ack_json(bot.command("review INC-404"))
    assert "INC-404" in body["text"]
    assert not bot.slack.calls_for("views.open")


def test_upload_failure_is_not_recorded_as_posted(bot) -> None:
    open_incident(bot)
    assert ack_json(bot.command("review INC-1")) == {}
    view = bot.slack.wait_for("views.open").args["view"]
    bot.slack.fail_next("files.getUploadURLExternal", "not_in_channel")
    submit = view_submission_payload(
        view["callback_id"], values(summary="s"), private_metadata=view["private_metadata"]
    )
    assert bot.sender.action(submit).status_code == 200
    dm = bot.slack.wait_for(
        "chat.postMessage", lambda c: c.args["channel"] == "W111" and "failed" in c.args["text"]
    )
    bot.idle()
    assert "not_in_channel" in dm.args["text"]
    assert "review.report_posted" not in kinds(bot)
    assert "review.submitted" in kinds(bot)  # the answers are kept; the report can be re-sent
