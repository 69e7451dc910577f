"""Group commit: concurrent deliveries share a transaction; a failure fails its delivery only."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from bot.guardduty import intake as intake_module
from bot.guardduty.intake import BatchWriter
from commands.findings.normalize import normalize_finding
from storage.models import Finding
from tests.bot.guardduty.conftest import GuardDutyBot
from tests.commands.findings.guardduty_fixtures import ec2_detail


def deliveries(n: int) -> list[list[Any]]:
    return [
        [
            normalize_finding(
                ec2_detail(id=f"f-{i}", resource__instanceDetails__instanceId=f"i-{i:017x}")
            )
        ]
        for i in range(n)
    ]


def run_concurrently(writer: BatchWriter, batches: list[list[Any]]) -> list[Any]:
    outcomes: list[Any] = [None] * len(batches)
    gate = threading.Barrier(len(batches))

    def send(i: int) -> None:
        gate.wait()
        try:
            outcomes[i] = writer.record(batches[i])
        except Exception as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


def test_concurrent_deliveries_are_written_together(
    guardduty_bot: Callable[..., GuardDutyBot],
) -> None:
    gd = guardduty_bot()
    writer = BatchWriter(gd.bot.runtime)
    outcomes = run_concurrently(writer, deliveries(12))
    writer.stop()
    assert [o[0].finding_id for o in outcomes] == [f"f-{i}" for i in range(12)]
    assert all(o[0].outcome == "opened" for o in outcomes)
    assert writer.findings == 12
    assert writer.batches < 12  # at least two deliveries shared a transaction


def test_a_failing_delivery_fails_alone(
    guardduty_bot: Callable[..., GuardDutyBot], monkeypatch: pytest.MonkeyPatch
) -> None:
    gd = guardduty_bot()
    real = intake_module.record_findings

    def poisoned(**kwargs: Any) -> Any:
        if any(f.id == "f-3" for f in kwargs["findings"]):
            raise RuntimeError("constraint violated")
        return real(**kwargs)

    monkeypatch.setattr(intake_module, "record_findings", poisoned)
    writer = BatchWriter(gd.bot.runtime)
    outcomes = run_concurrently(writer, deliveries(8))
    writer.stop()
    assert isinstance(outcomes[3], RuntimeError)
    assert [o[0].outcome for i, o in enumerate(outcomes) if i != 3] == ["opened"] * 7
    with gd.bot.session() as session:
        stored = set(session.scalars(select(Finding.finding_id)))
    assert stored == {f"f-{i}" for i in range(8)} - {"f-3"}


def test_after_stop_deliveries_are_written_inline(
    guardduty_bot: Callable[..., GuardDutyBot],
) -> None:
    gd = guardduty_bot()
    writer = BatchWriter(gd.bot.runtime)
    writer.stop()
    (result,) = writer.record(deliveries(1)[0])
    assert result.outcome == "opened"
