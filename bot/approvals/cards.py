"""Loading an approval card's view from the database, and pacing its live updates."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from bot.views.approval_card import CardView, StepView
from commands.approvals.execution import missing_evidence
from commands.approvals.plans import Plan
from commands.approvals.requests import get_request, incident_of

log = logging.getLogger(__name__)


def load_card(database: Any, request_id: int) -> tuple[CardView, str | None, str | None]:
    """The card's view of a request, and where the card is (channel, ts)."""
    with database.read_session() as session:
        request = get_request(session=session, request_id=request_id)
        incident = incident_of(session=session, request=request)
        view = CardView(
            request_id=request.id,
            kind=request.kind,
            status=request.status,
            incident_key=incident.key,
            incident_title=incident.title,
            target_type=request.target_type,
            target_id=request.target_id,
            region=request.region,
            account_id=request.account_id,
            requested_by=request.requested_by,
            requested_at=request.requested_at,
            reason=request.reason,
            expires_at=request.expires_at,
            decided_by=request.decided_by,
            decided_at=request.decided_at,
            decision_reason=request.decision_reason,
            dry_run=request.dry_run,
            plan=Plan.from_json(request.plan),
            parent_id=request.parent_id,
            steps=[
                StepView(s.action, s.status, s.error, (s.result or {}).get("note"))
                for s in request.steps
            ],
            finished_at=request.finished_at,
            drill=incident.is_drill,
            missing_evidence=missing_evidence({s.action: s.result or {} for s in request.steps})
            if request.status in ("succeeded", "partial")
            else [],
        )
        return view, request.card_channel, request.card_ts


class CardUpdater:
    """Coalesces progress pokes into card updates from one thread; the last state lands."""

    def __init__(self, send: Callable[[], None]) -> None:
        self._send = send
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="card-updater", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            try:
                self._send()  # refresh_card itself keeps to one update a second
            except Exception:
                log.exception("card update failed")
            if self._closed and not self._wake.is_set():
                return

    def close(self, timeout: float = 10.0) -> None:
        self._closed = True
        self._wake.set()
        self._thread.join(timeout)
