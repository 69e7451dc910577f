"""Team metrics over a window (`incident-bot report --since 30d`): incidents per week by
severity and by source, median and p90 time to contain, regulator clocks met or missed, and
the drills' results over time. Every figure comes from the incidents' timelines
(commands/review/metrics.py); drills are kept out of the incident counts and shown apart."""

from __future__ import annotations

import datetime as dt
import math
import re
from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from commands.errors import UserError
from commands.review.chart import png
from commands.review.metrics import Milestones, duration_text, milestones
from storage.facts import facts_of
from storage.models import SEVERITIES, Finding, Incident
from storage.timeline import stream_event_rows

_SINCE = re.compile(r"^\s*(\d{1,4})\s*([hdw])\s*$", re.IGNORECASE)
_UNITS = {"h": "hours", "d": "days", "w": "weeks"}


def parse_since(text: str) -> dt.timedelta:
    """`30d`, `12w`, `48h` -> a timedelta (UserError in one sentence otherwise)."""
    m = _SINCE.match(text or "")
    if not m or int(m.group(1)) == 0:
        raise UserError("--since {text!r}: give a window like 30d, 12w or 48h.", text=text)
    return dt.timedelta(**{_UNITS[m.group(2).lower()]: int(m.group(1))})


@dataclass(frozen=True)
class Row:
    key: str
    opened_at: dt.datetime
    severity: str
    source: str
    drill: bool
    title: str
    marks: Milestones

    @property
    def week(self) -> dt.date:
        day = self.opened_at.date()
        return day - dt.timedelta(days=day.weekday())  # the Monday starting its ISO week


@dataclass
class TeamReport:
    since: dt.datetime
    now: dt.datetime
    rows: list[Row] = field(default_factory=list)

    @property
    def incidents(self) -> list[Row]:
        return [r for r in self.rows if not r.drill]

    @property
    def drills(self) -> list[Row]:
        return [r for r in self.rows if r.drill]

    def weeks(self) -> list[dt.date]:
        first = self.since.date() - dt.timedelta(days=self.since.weekday())
        out = []
        while first <= self.now.date():
            out.append(first)
            first += dt.timedelta(days=7)
        return out

    def per_week(self, attribute: str) -> dict[str, dict[dt.date, int]]:
        """{value: {week: count}} of the real incidents, by `severity` or `source`."""
        table: dict[str, dict[dt.date, int]] = {}
        for r in self.incidents:
            table.setdefault(getattr(r, attribute), Counter())[r.week] += 1  # type: ignore[index]
        return table

    def contain_times(self) -> list[dt.timedelta]:
        return sorted(
            d for r in self.incidents if (d := r.marks.durations()["contain"]) is not None
        )

    def regulator(self) -> Counter[str]:
        return Counter(
            r.marks.regulator.state for r in self.incidents if r.marks.regulator is not None
        )


def percentile(values: list[dt.timedelta], p: float) -> dt.timedelta | None:
    """Nearest-rank percentile of sorted `values` (None when there are none)."""
    if not values:
        return None
    rank = max(1, math.ceil(p / 100 * len(values)))
    return values[rank - 1]


def team_report(
    *, session: Session, since: dt.timedelta, now: dt.datetime, gdpr_hours: float
) -> TeamReport:
    start = now - since
    report = TeamReport(since=start, now=now)
    incidents = session.scalars(
        select(Incident).where(Incident.created_at >= start).order_by(Incident.number)
    ).all()
    for incident in incidents:
        started = session.scalar(
            select(func.min(Finding.first_seen)).where(Finding.incident_id == incident.id)
        )
        marks = milestones(
            stream_event_rows(conn=session, incident_id=incident.id),
            started_at=started,
            gdpr_hours=gdpr_hours,
            now=now,
            fallback_opened_at=incident.created_at,
        )
        report.rows.append(
            Row(
                key=incident.key,
                opened_at=marks.opened_at,
                severity=incident.severity,
                source=str(facts_of(incident).get("source") or "slack"),
                drill=incident.is_drill,
                title=incident.title,
                marks=marks,
            )
        )
    return report


def report_lines(report: TeamReport) -> list[str]:
    """The printed summary."""
    fmt = "%Y-%m-%d"
    lines = [
        f"Incidents opened {report.since.strftime(fmt)} .. {report.now.strftime(fmt)}: "
        f"{len(report.incidents)} (drills: {len(report.drills)})",
        "",
        "Per week (Monday)  " + "  ".join(f"{s:>8}" for s in SEVERITIES),
    ]
    by_severity = report.per_week("severity")
    for week in report.weeks():
        counts = [by_severity.get(s, {}).get(week, 0) for s in SEVERITIES]
        lines.append(f"{week.isoformat():<18} " + "  ".join(f"{c:>8}" for c in counts))
    by_source = report.per_week("source")
    lines += [
        "",
        "By source: "
        + (
            ", ".join(
                f"{source} {sum(weeks.values())}" for source, weeks in sorted(by_source.items())
            )
            or "none"
        ),
    ]
    times = report.contain_times()
    lines += [
        "",
        f"Time to contain ({len(times)} contained): median "
        f"{duration_text(percentile(times, 50))}, p90 {duration_text(percentile(times, 90))}",
    ]
    clocks = report.regulator()
    met = clocks.get("on time", 0)
    missed = clocks.get("late", 0) + clocks.get("overdue", 0)
    lines.append(
        f"Regulator clocks: {met} met, {missed} missed"
        f" ({clocks.get('late', 0)} late, {clocks.get('overdue', 0)} overdue), "
        f"{clocks.get('running', 0)} running"
    )
    lines += ["", f"Drills ({len(report.drills)}):"]
    for d in report.drills:
        ttc = d.marks.durations()["contain"]
        verdict = "contained" if ttc is not None else "not contained"
        lines.append(
            f"  {d.opened_at.strftime('%Y-%m-%d %H:%M')}  {d.key}  {verdict}"
            + (f" in {duration_text(ttc)}" if ttc is not None else "")
        )
    if not report.drills:
        lines.append("  none")
    return lines


SEVERITY_COLOURS = {"low": "#8fbc8f", "medium": "#f0c05a", "high": "#f08a4b", "critical": "#c0392b"}


def report_chart(report: TeamReport) -> bytes:
    """Four panels: per week by severity, per week by source, time to contain, drills."""
    from matplotlib.dates import date2num  # drawn only here (see chart.timeline_chart)
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(12, 8), dpi=100, layout="constrained")
    axes = fig.subplots(2, 2)
    weeks = report.weeks()
    labels = [w.strftime("%m-%d") for w in weeks]
    positions = list(range(len(weeks)))

    def stacked(
        ax,
        table: dict[str, dict[dt.date, int]],
        order: list[str],
        title: str,
        colours: dict[str, str] | None = None,
    ) -> None:
        bottom = [0] * len(weeks)
        for name in order:
            counts = [table.get(name, {}).get(w, 0) for w in weeks]
            ax.bar(positions, counts, bottom=bottom, label=name, color=(colours or {}).get(name))
            bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
        ax.set_xticks(positions, labels, rotation=45, fontsize=8)
        ax.set_title(title)
        ax.set_ylabel("incidents")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        if order:
            ax.legend(fontsize=8)

    by_severity = report.per_week("severity")
    stacked(
        axes[0][0],
        by_severity,
        [s for s in SEVERITIES if s in by_severity],
        "Incidents per week by severity",
        SEVERITY_COLOURS,
    )
    by_source = report.per_week("source")
    stacked(axes[0][1], by_source, sorted(by_source), "Incidents per week by source")

    ax = axes[1][0]
    minutes = [t.total_seconds() / 60 for t in report.contain_times()]
    if minutes:
        ax.hist(minutes, bins=min(20, max(5, len(minutes))), color="#4a7fb5")
        for p, style in ((50, "--"), (90, ":")):
            value = percentile(report.contain_times(), p)
            assert value is not None
            ax.axvline(
                value.total_seconds() / 60,
                color="black",
                linestyle=style,
                label=f"p{p} {duration_text(value)}",
            )
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "nothing contained in this window", ha="center", transform=ax.transAxes)
    clocks = report.regulator()
    missed = clocks.get("late", 0) + clocks.get("overdue", 0)
    ax.set_title(
        f"Time to contain (minutes) · regulator clocks {clocks.get('on time', 0)} "
        f"met, {missed} missed"
    )
    ax.set_ylabel("incidents")

    ax = axes[1][1]
    drills = report.drills
    if drills:
        for ok, colour, label in (
            (True, "#2ca02c", "contained"),
            (False, "#d62728", "not contained"),
        ):
            picked = [d for d in drills if (d.marks.durations()["contain"] is not None) == ok]
            if not picked:
                continue
            xs = [float(date2num(d.opened_at)) for d in picked]
            ys = [
                (d.marks.durations()["contain"] or dt.timedelta()).total_seconds() / 60
                for d in picked
            ]
            ax.scatter(xs, ys, color=colour, label=label, marker="o" if ok else "x")
        ax.xaxis_date()
        ax.set_xlim(float(date2num(report.since)), float(date2num(report.now)))
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
        for tick in ax.get_xticklabels():
            tick.set_rotation(45)
    else:
        ax.text(0.5, 0.5, "no drills in this window", ha="center", transform=ax.transAxes)
    ax.set_title("Drill results over time (time to contain, minutes)")
    fig.suptitle(f"incident-bot team report {report.since:%Y-%m-%d} .. {report.now:%Y-%m-%d}")
    return png(fig)
