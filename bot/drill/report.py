"""What a drill found: its named checks, the score, and how a failed check reads.

A failed check is named by what went wrong, never by the label it would have had on success.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TextIO

# What each check says when it fails: named by what went wrong, never by what was hoped for.
FAILED_AS = {
    "incident opened": "no incident opened",
    "containment planned": "no plan posted",
    "second responder approved": "approval not recorded",
    "containment ran": "containment incomplete",
    "snapshots taken": "volumes not snapshotted",
    "network isolated": "network not isolated",
    "out of Auto Scaling": "still in Auto Scaling",
    "out of the load balancer": "still behind the load balancer",
    "access key deactivated": "access key still active",
    "old sessions revoked": "old sessions not revoked",
    "role sessions revoked": "role sessions not revoked",
    "public access blocked": "public access not blocked",
    "caller denied on the bucket": "caller not denied on the bucket",
    "function throttled": "function not throttled",
    "public invoke removed": "function still public",
    "no regulator clock": "regulator clock started without personal data",
    "clock started by the PII tag": "PII tag did not start the clock",
    "GDPR clock started": "GDPR clock not started",
    "reminders scheduled": "reminders missing",
    "timeline exported": "timeline export incomplete",
    "timeline verified": "timeline hash chain broken",
    "retry completed the rest": "retry did not complete the rest",
}


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    phase: str = ""  # "after retry" for the recovery's checks

    @property
    def label(self) -> str:
        """The line's name: the check's when it passed, what went wrong when it failed."""
        text = self.name if self.ok else FAILED_AS.get(self.name, f"{self.name}: failed")
        return f"{self.phase}: {text}" if self.phase else text


@dataclass
class DrillReport:
    scenario: str
    checks: list[Check] = field(default_factory=list)
    detect_to_contain_s: float | None = None
    steps_succeeded: int = 0
    steps_total: int = 0
    deadlines: list[str] = field(default_factory=list)
    # The chaos drill's recovery: None when nothing failed (or no retry was rehearsed).
    recovered: bool | None = None

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def recovery_checks(self) -> list[Check]:
        return [c for c in self.checks if c.phase]


def print_score(report: DrillReport, out: TextIO) -> None:
    out.write("\n════ Score ════\n")
    ttc = report.detect_to_contain_s
    out.write(
        f"  detection → containment: {f'{ttc:.1f}s' if ttc is not None else 'not contained'}\n"
    )
    out.write(f"  steps succeeded:         {report.steps_succeeded}/{report.steps_total}\n")
    out.write(
        f"  deadlines set:           {len(report.deadlines)}"
        + (f" (first {report.deadlines[0]})" if report.deadlines else "")
        + "\n"
    )
    passed = sum(c.ok for c in report.checks)
    out.write(f"  checks passed:           {passed}/{len(report.checks)}\n")
    if report.recovered is not None:
        out.write(
            "  recovery:                "
            + ("the retry completed the rest" if report.recovered else "NOT recovered")
            + "\n"
        )
    if report.ok:
        out.write("  RESULT: PASS\n")
    else:
        out.write("  RESULT: FAIL — " + "; ".join(c.label for c in report.failed()) + "\n")
    out.flush()
