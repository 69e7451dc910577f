"""Run-time values in an exported state machine (commands/asl.py): a plan's `<placeholders>`
filled with what the machine knows when a state runs (the ids of the groups, snapshots and
incident KMS key it made, under `$.created`; the time a state runs; the capture an evidence
object holds)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

from commands.asl_sdk import PLACEHOLDER, quote, recorded, sdk_resource, send_problem

SNAPSHOTS = "snapshots"  # $.created.snapshots: the snapshot ids CreateSnapshots made
KEY = "key"  # $.created.key: {KeyId, Arn} of the incident's own KMS key (commands/asl_key.py)
KEY_ID = "<incident key id>"  # containment.actions.evidence.INCIDENT_KEY_ID
KEY_ARN = "<incident key arn>"
NEW_SNAPSHOTS = "<new snapshots>"
NOW = "<now>"
_NOW_PLUS = re.compile(r"^<now \+ (\d+) days>$")
CAPTURE = "<capture>"
CAPTURE_SHA256 = "<capture sha256>"  # containment.custody.CAPTURE_SHA256
_IF_CREATED = re.compile(r"^<(\w+) group, if created>$")
_ANY_GROUP = re.compile(r"^<(?:new )?(\w+) group>$")
_DROP = object()  # a list item that names nothing the machine has (a group never created)


class PlaceholderFiller:
    """Fills a call's `<placeholders>` with what the machine knows when the state runs."""

    def __init__(self, *, now: dt.datetime, reads: Mapping[str, list[Mapping[str, Any]]]):
        self.now = now
        self.reads = reads

    def fill(self, params: Mapping[str, Any], known: set[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in params.items():
            if key.endswith(".$"):
                out[key] = value
                continue
            filled, is_path = self._value(value, known)
            out[f"{key}.$" if is_path else key] = filled
        return out

    def _value(self, value: Any, known: set[str]) -> tuple[Any, bool]:
        if isinstance(value, Mapping):
            return self.fill(value, known), False
        if isinstance(value, list):
            items = [
                self._value(v, known) if not isinstance(v, str) else self._item(v, known)
                for v in value
            ]
            items = [(v, p) for v, p in items if v is not _DROP]
            if any(p for _, p in items) and all(isinstance(v, str) for v, _ in items):
                parts = [v if p else f"'{quote(v)}'" for v, p in items]
                return f"States.Array({', '.join(parts)})", True
            return [v for v, _ in items], False
        if isinstance(value, str):
            return self._string(value, known)
        return value, False

    def _item(self, value: str, known: set[str]) -> tuple[Any, bool]:
        match = _IF_CREATED.match(value)
        if match:
            return (f"$.created.{match[1]}.GroupId", True) if match[1] in known else (_DROP, False)
        return self._string(value, known)

    def _string(self, value: str, known: set[str]) -> tuple[Any, bool]:
        group = _ANY_GROUP.match(value)
        if group and group[1] in known:
            return f"$.created.{group[1]}.GroupId", True
        if value in (KEY_ID, KEY_ARN) and KEY in known:
            return f"$.created.{KEY}.{'KeyId' if value == KEY_ID else 'Arn'}", True
        if value == NOW:
            return "$$.State.EnteredTime", True
        if value == CAPTURE:
            return "States.JsonToString($.capture)", True
        plus = _NOW_PLUS.match(value)
        if plus:
            until = self.now + dt.timedelta(days=int(plus[1]))
            return until.strftime("%Y-%m-%dT%H:%M:%SZ"), False
        if value == CAPTURE_SHA256:
            # In the manifest: the SHA-256 of the body the evidence write just stored (its
            # state sets it; commands/asl.py), as `verify --evidence` computes it.
            return "$.evidence.sha256", True
        if NOW in value and not PLACEHOLDER.match(value):
            # A document with the run time inside it (a policy's condition).
            template = "{}".join(quote(part) for part in value.split(NOW))
            stamps = ", ".join(["$$.State.EnteredTime"] * value.count(NOW))
            return f"States.Format('{template}', {stamps})", True
        return value, False

    def capture_read(self, step: Mapping[str, Any]) -> dict[str, Any] | None:
        """The first read of the step's capture that can be sent as recorded, as a Task whose
        result is the evidence body ($.capture)."""
        for dep in [*(step.get("depends_on") or ()), *(step.get("after") or ())]:
            for call in self.reads.get(dep, []):
                params = recorded(call)
                service, operation = str(call.get("service")), str(call.get("operation"))
                if params is None or send_problem(service, operation, params) is not None:
                    continue
                return {
                    "Type": "Task",
                    "Comment": f"{dep}: {call.get('text')} (the evidence object's body)",
                    "Resource": sdk_resource(service, operation),
                    "Parameters": dict(params),
                    "ResultPath": "$.capture",
                }
        return None
