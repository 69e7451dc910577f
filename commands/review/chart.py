"""Charts as PNG bytes, drawn with matplotlib's Agg canvas (no display, no pyplot state, so
threads of the serving process can draw at once)."""

from __future__ import annotations

import datetime as dt
import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from commands.review.report import Report

# Timeline lanes, top to bottom: an event's kind prefix -> its lane.
LANES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Detection", ("incident.opened", "finding.", "resource.", "impact.", "trail.")),
    (
        "Decisions",
        (
            "containment.requested",
            "containment.approved",
            "containment.rejected",
            "containment.expired",
            "review.",
        ),
    ),
    ("Containment", ("containment.",)),
    ("Status", ("incident.status", "incident.severity")),
    ("Regulator", ("incident.personal_data", "incident.notified", "reminder.gdpr", "gdpr")),
    ("Notes & other", ("",)),
)
MILESTONE_COLOURS = {
    "first seen": "#7f7f7f",
    "opened": "#1f77b4",
    "acknowledged": "#9467bd",
    "approved": "#ff7f0e",
    "contained": "#2ca02c",
    "resolved": "#17becf",
    "regulator due": "#d62728",
}


def lane_of(kind: str) -> int:
    for index, (_, prefixes) in enumerate(LANES):
        if any(kind.startswith(p) for p in prefixes):
            return index
    return len(LANES) - 1


def _utc(ts: dt.datetime) -> dt.datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=dt.UTC)


def png(fig: Figure) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    out = io.BytesIO()
    FigureCanvasAgg(fig)
    fig.savefig(out, format="png", metadata={"Software": None})
    return out.getvalue()


def timeline_chart(report: Report) -> bytes:
    """Every event as a dot in its lane, containment steps as bars, milestones as lines."""
    # matplotlib (with numpy) is imported where a chart is drawn: it would add about 0.4 s
    # to the start of every bot and CLI process, which draws a chart only for a review.
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(f"{report.key} timeline (UTC)")
    lanes = len(LANES)
    xs: list[float] = []
    ys: list[int] = []
    for ev in report.events:
        xs.append(float(date2num(_utc(ev.at))))
        ys.append(lanes - 1 - lane_of(ev.kind))
    ax.scatter(xs, ys, s=18, color="#444", zorder=3, label="event")
    for step in report.steps:
        if step.started_at is None or step.dry_run:
            continue
        start = float(date2num(_utc(step.started_at)))
        end = float(date2num(_utc(step.finished_at or step.started_at)))
        colour = "#2ca02c" if step.status == "succeeded" else "#d62728"
        row = lanes - 1 - 2  # the Containment lane
        ax.broken_barh(
            [(start, max(end - start, 1e-6))], (row - 0.3, 0.6), color=colour, alpha=0.35
        )
    marks = report.milestones
    lines = {
        "first seen": marks.started_at,
        "opened": marks.opened_at,
        "acknowledged": marks.acknowledged_at,
        "approved": marks.approved_at,
        "contained": marks.contained_at,
        "resolved": marks.resolved_at,
    }
    span = list(xs)
    for name, when in lines.items():
        if when is None:
            continue
        x = float(date2num(_utc(when)))
        span.append(x)
        ax.axvline(x, color=MILESTONE_COLOURS[name], linestyle="--", linewidth=1.2, label=name)
    if marks.regulator is not None:
        # Days away, the deadline would squash the incident into one column: draw it only
        # when it falls inside the chart, and name it in the legend otherwise.
        due = float(date2num(_utc(marks.regulator.due_at)))
        if span and min(span) <= due <= max(span):
            ax.axvline(
                due,
                color=MILESTONE_COLOURS["regulator due"],
                linestyle=":",
                linewidth=1.5,
                label="regulator due",
            )
        else:
            when = _utc(marks.regulator.due_at).strftime("%Y-%m-%d %H:%M")
            ax.plot([], [], " ", label=f"regulator due {when} (off chart)")
    ax.set_yticks(range(lanes), [name for name, _ in reversed(LANES)])
    ax.set_ylim(-0.7, lanes - 0.3)
    if span:
        low, high = min(span), max(span)
        pad = max((high - low) * 0.04, 2 / 86400)  # at least two seconds each side
        ax.set_xlim(low - pad, high + pad)
    locator = AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    return png(fig)
