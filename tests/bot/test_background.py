"""The background pool: errors reported, never swallowed; shutdown finishes or records work."""

from __future__ import annotations

import threading
import time

import pytest

from bot.background import Background, Busy
from tests.clock import flowing


def test_result_and_errors_reach_on_error():
    pool = Background(max_workers=2)
    errors: list[BaseException] = []
    ok = pool.submit(lambda: 42, description="answer")
    pool.submit(lambda: 1 / 0, description="divide", on_error=errors.append)
    assert ok.result(timeout=2) == 42
    assert pool.wait_idle(2)
    assert len(errors) == 1 and isinstance(errors[0], ZeroDivisionError)
    pool.shutdown(grace=1)


def test_failing_error_hook_does_not_kill_the_worker():
    pool = Background(max_workers=1)

    def bad_hook(exc: BaseException) -> None:
        raise RuntimeError("reporter down")

    pool.submit(lambda: 1 / 0, description="boom", on_error=bad_hook)
    assert pool.submit(lambda: "alive", description="next").result(timeout=2) == "alive"
    pool.shutdown(grace=1)


def test_bounded_queue_refuses_with_busy():
    pool = Background(max_workers=1, max_pending=2)
    gate, running = threading.Event(), threading.Event()
    pool.submit(lambda: (running.set(), gate.wait()), description="blocker")
    assert running.wait(5)  # the blocker is running; the next two wait in the queue
    pool.submit(lambda: None, description="q1")
    pool.submit(lambda: None, description="q2")
    with pytest.raises(Busy):
        pool.submit(lambda: None, description="q3")
    gate.set()
    assert pool.wait_idle(2)
    pool.shutdown(grace=1)


def test_shutdown_finishes_in_flight_and_interrupts_queued():
    pool = Background(max_workers=1)
    finished: list[str] = []
    interrupted: list[str] = []
    running = threading.Event()
    pool.submit(
        lambda: (running.set(), time.sleep(0.3), finished.append("slow")),
        description="slow",
        on_interrupt=lambda: interrupted.append("slow"),
    )
    assert running.wait(5)
    pool.submit(
        lambda: finished.append("queued"),
        description="queued",
        on_interrupt=lambda: interrupted.append("queued"),
    )
    jobs = pool.shutdown(grace=2)
    assert finished == ["slow"]
    assert interrupted == ["queued"]
    assert [j.description for j in jobs] == ["queued"]
    with pytest.raises(Busy):
        pool.submit(lambda: None, description="late")
    assert pool.closing


def test_shutdown_records_jobs_still_running_after_grace():
    pool = Background(max_workers=1)
    release, running = threading.Event(), threading.Event()
    interrupted: list[str] = []
    pool.submit(
        lambda: (running.set(), release.wait()),
        description="stuck",
        on_interrupt=lambda: interrupted.append("x"),
    )
    assert running.wait(5)
    jobs = pool.shutdown(grace=0.1)
    assert [j.description for j in jobs] == ["stuck"]
    assert interrupted == ["x"]
    release.set()


def test_runtime_shutdown_stops_producers_first_then_drains(tmp_path):
    from bot.runtime import make_runtime
    from tests.bot.conftest import bot_settings
    from tests.slack_fake import FakeSlack

    order: list[str] = []
    started = threading.Event()
    with FakeSlack() as slack:
        runtime = make_runtime(bot_settings(tmp_path, slack, {}), clock=flowing())
        runtime.background.submit(
            lambda: (started.set(), time.sleep(0.2), order.append("job finished")),
            description="job",
        )
        # A job already running is drained; one still queued would be interrupted at once.
        assert started.wait(5)
        runtime.on_shutdown(lambda: order.append("scheduler stopped"))
        runtime.on_shutdown(lambda: order.append("sweeper stopped"))
        runtime.on_shutdown(lambda: 1 / 0)  # a failing stopper does not stop the others
        assert runtime.shutdown(grace=2) == []
    assert order == ["sweeper stopped", "scheduler stopped", "job finished"]
    assert runtime.background.closing
