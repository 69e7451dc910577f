"""The post-incident report: what the review modal asked, the milestones, the containment
steps, the evidence and the whole timeline, as Markdown and as one self-contained HTML page
(its timeline chart embedded as a data: URI, so the file stands alone)."""

from __future__ import annotations

import base64
import datetime as dt
import html
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from commands.errors import UserError
from commands.review.chart import timeline_chart
from commands.review.metrics import METRIC_LABELS, Milestones, duration_text, milestones
from storage.db import clock_of
from storage.facts import REVIEW, ReviewFacts, facts_of
from storage.models import ActionStep, ContainmentRequest, Finding, Incident
from storage.timeline import append_event, iso, stream_event_rows

# The modal's questions, in order: (facts key, label).
QUESTIONS: tuple[tuple[str, str], ...] = (
    ("summary", "Summary"),
    ("root_cause", "Root cause"),
    ("went_well", "What went well"),
    ("to_improve", "What to improve"),
    ("lessons", "Lessons learned"),
)
ANSWER_MAX = 3000  # a modal's multiline input allows 3,000 characters


@dataclass(frozen=True)
class Event:
    seq: int
    at: dt.datetime
    actor: str
    kind: str
    summary: str


@dataclass(frozen=True)
class Step:
    request_id: int
    request_kind: str
    target: str
    dry_run: bool
    action: str
    status: str
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    note: str


@dataclass(frozen=True)
class EvidenceItem:
    step: str
    what: str
    where: str
    sha256: str | None  # None: stored, but no hash was recorded for it


@dataclass(frozen=True)
class Report:
    key: str
    title: str
    severity: str
    status: str
    source: str
    drill: bool
    created_by: str
    resource: str | None
    resolution: str | None
    generated_at: dt.datetime
    milestones: Milestones
    answers: ReviewFacts
    steps: list[Step] = field(default_factory=list)
    evidence: list[EvidenceItem] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    timeline_head: str | None = None


def record_review(
    *, session: Session, incident: Incident, actor: str, answers: Mapping[str, str]
) -> ReviewFacts:
    """Store the review's answers and put them on the timeline (`review.submitted`)."""
    cleaned = {k: str(answers.get(k) or "").strip()[:ANSWER_MAX] for k, _ in QUESTIONS}
    if not cleaned["summary"]:
        raise UserError("Write the review's summary first; the other answers may stay empty.")
    now = clock_of(session).now()
    stored: ReviewFacts = {**cleaned, "reviewed_by": actor, "reviewed_at": iso(now)}  # type: ignore[typeddict-item]
    REVIEW.set(incident, stored)
    append_event(
        session=session,
        incident=incident,
        actor=actor,
        kind="review.submitted",
        summary=f"Post-incident review submitted: {cleaned['summary'][:200]}",
        details=dict(cleaned),
    )
    return stored


def build_report(
    *, session: Session, incident: Incident, gdpr_hours: float, now: dt.datetime
) -> Report:
    started = session.scalar(
        select(func.min(Finding.first_seen)).where(Finding.incident_id == incident.id)
    )
    rows = list(stream_event_rows(conn=session, incident_id=incident.id))
    events = [Event(r.seq, r.occurred_at, r.actor, r.kind, r.summary) for r in rows]
    marks = milestones(
        rows,
        started_at=started,
        gdpr_hours=gdpr_hours,
        now=now,
        fallback_opened_at=incident.created_at,
    )
    steps, evidence = _steps_and_evidence(session, incident)
    facts = facts_of(incident)
    return Report(
        key=incident.key,
        title=incident.title,
        severity=incident.severity,
        status=incident.status,
        source=str(facts.get("source") or "slack"),
        drill=incident.is_drill,
        created_by=incident.created_by,
        resource=incident.resource_id,
        resolution=incident.resolution,
        generated_at=now,
        milestones=marks,
        answers=REVIEW.get(incident),
        steps=steps,
        evidence=evidence,
        events=events,
        timeline_head=incident.timeline_head,
    )


def _steps_and_evidence(
    session: Session, incident: Incident
) -> tuple[list[Step], list[EvidenceItem]]:
    requests = session.scalars(
        select(ContainmentRequest)
        .where(ContainmentRequest.incident_id == incident.id)
        .order_by(ContainmentRequest.id)
    ).all()
    steps: list[Step] = []
    evidence: list[EvidenceItem] = []
    for request in requests:
        rows = session.scalars(
            select(ActionStep)
            .where(ActionStep.request_id == request.id)
            .order_by(ActionStep.position)
        ).all()
        for row in rows:
            result = row.result or {}
            steps.append(
                Step(
                    request_id=request.id,
                    request_kind=request.kind,
                    target=request.target_id,
                    dry_run=request.dry_run,
                    action=row.action,
                    status=row.status,
                    started_at=row.started_at,
                    finished_at=row.finished_at,
                    note=str(row.error or result.get("note") or ""),
                )
            )
            if row.status == "succeeded" and not request.dry_run:
                found = result.get("evidence")
                if isinstance(found, Mapping):
                    evidence.extend(_evidence(row.action, found, ""))
    return steps, evidence


def _evidence(step: str, found: Mapping[str, Any], path: str, depth: int = 0) -> list[EvidenceItem]:
    """What a step stored or measured: objects, snapshots, and every recorded SHA-256."""
    items: list[EvidenceItem] = []
    if isinstance(found.get("bucket"), str) and isinstance(found.get("key"), str):
        version = found.get("version_id")
        where = f"s3://{found['bucket']}/{found['key']}" + (
            f" (version {version})" if version else ""
        )
        items.append(EvidenceItem(step, path or "S3 object", where, found.get("sha256")))
    for name, value in found.items():
        label = f"{path}.{name}" if path else name
        if name.endswith("sha256") and name != "sha256" and isinstance(value, str):
            what = label.removesuffix("_sha256").removesuffix("sha256").rstrip("._")
            items.append(EvidenceItem(step, what, "hash recorded at capture", value))
        elif name == "sha256" and isinstance(value, str) and "key" not in found:
            items.append(EvidenceItem(step, path, "hash recorded at capture", value))
        elif name == "snapshots" and isinstance(value, list):
            for snap in value:
                if isinstance(snap, Mapping) and snap.get("id"):
                    origin = f" of {snap['volume_id']}" if snap.get("volume_id") else ""
                    items.append(EvidenceItem(step, "EBS snapshot", f"{snap['id']}{origin}", None))
        elif isinstance(value, Mapping) and depth < 3:
            items.extend(_evidence(step, value, label, depth + 1))
    return items


# -- Markdown ----------------------------------------------------------------------------


def _md(text: object) -> str:
    """User text in a Markdown table cell: no raw HTML (renderers would run it), and no pipe
    or newline to break the table (the report is pasted into wikis and tickets)."""
    cell = html.escape(str(text), quote=False).replace("\\", "\\\\").replace("|", "\\|")
    return cell.replace("\r", " ").replace("\n", "<br>")


def _md_text(text: object) -> str:
    """User text as a Markdown paragraph: no raw HTML; line breaks kept."""
    return html.escape(str(text), quote=False)


def _ts(value: dt.datetime | None) -> str:
    if value is None:
        return "—"
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def regulator_text(report: Report) -> str:
    clock = report.milestones.regulator
    if clock is None:
        return "no regulator clock (no personal data recorded)"
    state = clock.state
    if state in ("on time", "late"):
        return f"notice {state}: sent {_ts(clock.notified_at)}, due {_ts(clock.due_at)}"
    return f"notice not sent: due {_ts(clock.due_at)} ({state})"


def metric_rows(report: Report) -> list[tuple[str, str]]:
    durations = report.milestones.durations()
    rows = [(METRIC_LABELS[name], duration_text(value)) for name, value in durations.items()]
    rows.append(("Regulator notice", regulator_text(report)))
    return rows


def to_markdown(report: Report, *, chart_name: str | None = None) -> str:
    out = [f"# Post-incident review: {report.key}: {_md(report.title)}", ""]
    out.append(
        f"Severity {report.severity} · Status {report.status} · Source {report.source}"
        + (" · DRILL" if report.drill else "")
        + f" · Opened {_ts(report.milestones.opened_at)} by {_md(report.created_by)}"
    )
    if report.resource:
        out.append(f"Resource: {_md(report.resource)}")
    out.append("")
    out.append("## Review")
    for key, label in QUESTIONS:
        answer = _md_text(str(report.answers.get(key) or "").strip()) or "_(not answered)_"
        out += [f"### {label}", "", answer, ""]
    if report.answers.get("reviewed_by"):
        out += [
            f"Reviewed by {_md(report.answers['reviewed_by'])} "
            f"at {report.answers.get('reviewed_at')}",
            "",
        ]
    out += ["## Metrics", "", "| Metric | Value |", "|---|---|"]
    out += [f"| {label} | {_md(value)} |" for label, value in metric_rows(report)]
    out.append("")
    if chart_name:
        out += [f"Timeline chart: `{chart_name}` (attached).", ""]
    out += ["## Containment steps", ""]
    if report.steps:
        out += ["| Request | Target | Step | Status | Started | Finished | Note |"]
        out += ["|---|---|---|---|---|---|---|"]
        for s in report.steps:
            req = f"#{s.request_id} {s.request_kind}" + (" (dry run)" if s.dry_run else "")
            out.append(
                f"| {_md(req)} | {_md(s.target)} | {_md(s.action)} | {_md(s.status)} "
                f"| {_ts(s.started_at)} | {_ts(s.finished_at)} | {_md(s.note)} |"
            )
    else:
        out.append("No containment was run.")
    out += ["", "## Evidence", ""]
    if report.evidence:
        out += ["| Step | What | Where | SHA-256 |", "|---|---|---|---|"]
        for e in report.evidence:
            out.append(
                f"| {_md(e.step)} | {_md(e.what)} | {_md(e.where)} | {_md(e.sha256 or '—')} |"
            )
    else:
        out.append("No evidence was stored.")
    out += ["", f"## Timeline ({len(report.events)} events)", ""]
    out += ["| # | Time (UTC) | Actor | Event | Summary |", "|---|---|---|---|---|"]
    for ev in report.events:
        out.append(
            f"| {ev.seq} | {_ts(ev.at)} | {_md(ev.actor)} | {_md(ev.kind)} | {_md(ev.summary)} |"
        )
    if report.timeline_head:
        out += [
            "",
            f"Timeline head hash: `{report.timeline_head}` "
            f"(check with `incident-bot verify {report.key}`).",
        ]
    out += ["", f"Generated {_ts(report.generated_at)} by incident-bot.", ""]
    return "\n".join(out)


# -- HTML --------------------------------------------------------------------------------

_CSS = """
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;margin:2rem auto;
max-width:1100px;padding:0 1rem;color:#1d1d1f;line-height:1.45}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;
margin-top:2rem}.meta{color:#555}table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{border:1px solid #ddd;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f4f4f6}td.hash,td.mono{font-family:Menlo,Consolas,monospace;font-size:.8rem;
word-break:break-all}.answer{white-space:pre-wrap;background:#fafafa;border-left:3px solid #4a7;
padding:.4rem .8rem}.empty{color:#888;font-style:italic}img.chart{max-width:100%;
border:1px solid #ddd}.late{color:#b00020;font-weight:bold}.ok{color:#176f2c;font-weight:bold}
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def to_html(report: Report, chart_png: bytes | None = None) -> str:
    """The page; `chart_png` defaults to the report's own timeline chart."""
    png = chart_png if chart_png is not None else timeline_chart(report)
    chart_uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    title = f"{report.key}: {report.title}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Post-incident review: {_e(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f'<h1 id="title">Post-incident review: {_e(title)}</h1>',
        '<p class="meta">'
        + " · ".join(
            _e(x)
            for x in (
                f"Severity {report.severity}",
                f"Status {report.status}",
                f"Source {report.source}",
                *(["DRILL"] if report.drill else []),
                f"Opened {_ts(report.milestones.opened_at)} by {report.created_by}",
                *([f"Resource {report.resource}"] if report.resource else []),
            )
        )
        + "</p>",
        '<section id="review"><h2>Review</h2>',
    ]
    for key, label in QUESTIONS:
        answer = str(report.answers.get(key) or "").strip()
        body = (
            f'<div class="answer">{_e(answer)}</div>'
            if answer
            else '<p class="empty">(not answered)</p>'
        )
        parts.append(f'<h3 id="review-{_e(key)}">{_e(label)}</h3>{body}')
    if report.answers.get("reviewed_by"):
        parts.append(
            f'<p class="meta">Reviewed by {_e(report.answers["reviewed_by"])} at '
            f"{_e(report.answers.get('reviewed_at', ''))}</p>"
        )
    parts.append("</section>")
    parts.append(
        '<section id="metrics"><h2>Metrics</h2><table><tr><th>Metric</th><th>Value</th></tr>'
    )
    clock = report.milestones.regulator
    for label, value in metric_rows(report):
        css = ""
        if label == "Regulator notice" and clock is not None:
            css = {True: ' class="ok"', False: ' class="late"'}.get(clock.met, "")  # type: ignore[arg-type]
        parts.append(f"<tr><td>{_e(label)}</td><td{css}>{_e(value)}</td></tr>")
    parts.append("</table></section>")
    parts.append(
        '<section id="chart"><h2>Timeline chart</h2>'
        f'<img class="chart" id="timeline-chart" alt="Timeline chart of {_e(report.key)}" '
        f'src="{chart_uri}"></section>'
    )
    parts.append('<section id="containment"><h2>Containment steps</h2>')
    if report.steps:
        parts.append(
            "<table><tr><th>Request</th><th>Target</th><th>Step</th><th>Status</th>"
            "<th>Started</th><th>Finished</th><th>Note</th></tr>"
        )
        for s in report.steps:
            req = f"#{s.request_id} {s.request_kind}" + (" (dry run)" if s.dry_run else "")
            parts.append(
                f'<tr><td>{_e(req)}</td><td class="mono">{_e(s.target)}</td><td>{_e(s.action)}</td>'
                f"<td>{_e(s.status)}</td><td>{_e(_ts(s.started_at))}</td>"
                f"<td>{_e(_ts(s.finished_at))}</td><td>{_e(s.note)}</td></tr>"
            )
        parts.append("</table>")
    else:
        parts.append('<p class="empty">No containment was run.</p>')
    parts.append('</section><section id="evidence"><h2>Evidence</h2>')
    if report.evidence:
        parts.append("<table><tr><th>Step</th><th>What</th><th>Where</th><th>SHA-256</th></tr>")
        for e in report.evidence:
            parts.append(
                f'<tr><td>{_e(e.step)}</td><td>{_e(e.what)}</td><td class="mono">{_e(e.where)}</td>'
                f'<td class="hash">{_e(e.sha256 or "—")}</td></tr>'
            )
        parts.append("</table>")
    else:
        parts.append('<p class="empty">No evidence was stored.</p>')
    parts.append(
        f'</section><section id="timeline"><h2>Timeline ({len(report.events)} events)</h2>'
        "<table><tr><th>#</th><th>Time (UTC)</th><th>Actor</th><th>Event</th><th>Summary</th></tr>"
    )
    for ev in report.events:
        parts.append(
            f"<tr><td>{ev.seq}</td><td>{_e(_ts(ev.at))}</td><td>{_e(ev.actor)}</td>"
            f"<td>{_e(ev.kind)}</td><td>{_e(ev.summary)}</td></tr>"
        )
    parts.append("</table>")
    if report.timeline_head:
        parts.append(
            f'<p class="meta">Timeline head hash: <code>{_e(report.timeline_head)}</code> '
            f"(check with <code>incident-bot verify {_e(report.key)}</code>).</p>"
        )
    parts.append(
        f'</section><footer class="meta"><p>Generated {_e(_ts(report.generated_at))} by '
        "incident-bot.</p></footer></body></html>"
    )
    return "\n".join(parts) + "\n"
