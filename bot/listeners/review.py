"""`/incident review`: the post-incident review modal, and its report posted in the thread.

The command opens the modal inline (a trigger_id is good for 3 seconds); the submission
closes the modal at once, stores the answers (`review.submitted`), then renders the report
(Markdown, the self-contained HTML page, the timeline chart PNG) and uploads the three files
to the incident's thread through the one Slack writer. `review.report_posted` is written
only after Slack accepted the upload.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from slack_bolt import Ack, BoltContext

from bot.app import runtime_of
from bot.listeners.incident_subcommands import take_incident
from bot.listeners.slash import Invocation, Reply, Subcommand, dispatch, spec
from bot.listeners.views import field_value, view_invocation
from bot.views.review import (
    FORM_NAMES_NO_INCIDENT,
    REVIEW_MODAL,
    SUMMARY_EMPTY,
    report_comment,
    report_file_names,
    report_files,
    report_posted,
    review_modal,
    run_from_slack,
)
from commands import incidents as svc
from commands.errors import UserError
from commands.review.chart import timeline_chart
from commands.review.report import QUESTIONS, build_report, record_review, to_html, to_markdown
from storage.facts import REVIEW
from storage.timeline import append_event

if TYPE_CHECKING:
    from bot.app import IncidentBotApp
    from bot.runtime import Runtime

EXAMPLE = "/incident review INC-42"


def review_cmd(inv: Invocation) -> Reply | None:
    with inv.runtime.database.read_session() as session:
        found, _ = take_incident(inv, session, example=EXAMPLE)
        key, answers = found.key, REVIEW.get(found)
    if not inv.trigger_id:
        raise UserError(run_from_slack(EXAMPLE, key))
    inv.runtime.slack.call(
        "views_open", trigger_id=inv.trigger_id, view=review_modal(key, inv.channel_id, answers)
    )
    return None


def post_report(runtime: Runtime, key: str, user_id: str, fallback_channel: str) -> str:
    """Render the report and upload it to the incident's thread; the channel it went to."""
    with runtime.database.read_session() as session:
        incident = svc.get_incident(session=session, key=key)
        report = build_report(
            session=session,
            incident=incident,
            gdpr_hours=runtime.config.deadlines.gdpr_hours,
            now=runtime.now(),
        )
        channel = incident.channel_id or fallback_channel
        thread_ts = incident.thread_ts if incident.channel_id else None
    chart = timeline_chart(report)
    names = report_file_names(key)
    markdown = to_markdown(report, chart_name=names["png"])
    files = report_files(key, names, markdown=markdown, html=to_html(report, chart), chart=chart)
    response = runtime.slack.upload(
        channel,
        thread_ts,
        files,
        initial_comment=report_comment(key, user_id, events=len(report.events)),
    )
    uploaded = [f.get("id") for f in (response.get("files") or []) if isinstance(f, dict)]
    with runtime.database.session() as session:
        target = svc.get_incident(session=session, key=key)
        append_event(
            session=session,
            incident=target,
            actor="system",
            kind="review.report_posted",
            summary=f"Post-incident report posted in {channel} ({', '.join(names.values())})",
            details={"channel": channel, "thread_ts": thread_ts, "files": uploaded},
        )
    return channel


def on_submit(ack: Ack, body: dict[str, Any], view: dict[str, Any], context: BoltContext) -> None:
    runtime = runtime_of(context)
    answers = {name: field_value(view, name) for name, _ in QUESTIONS}
    if not answers["summary"]:
        ack(response_action="errors", errors={"summary": SUMMARY_EMPTY})
        return
    inv = view_invocation(runtime, body, name="review")
    key = inv.args

    def work(i: Invocation) -> Reply:
        if not svc.looks_like_key(key):
            raise UserError(FORM_NAMES_NO_INCIDENT)
        with runtime.database.session() as session:
            target = svc.get_incident(session=session, key=key)
            record_review(session=session, incident=target, actor=i.user_id, answers=answers)
        channel = post_report(runtime, key, i.user_id, i.channel_id)
        return Reply(report_posted(key, channel))

    dispatch(inv, work, background=True, ack=ack, answer_in_ack=False)


SUBCOMMANDS: tuple[Subcommand, ...] = (
    spec(
        "review",
        usage="/incident review [INC-N]",
        summary="Write the post-incident review; its report goes to the incident's thread.",
        handler=review_cmd,
    ),
)


def register(app: IncidentBotApp) -> None:
    app.view(REVIEW_MODAL)(on_submit)
