from __future__ import annotations

import threading

import pytest

from bot.periodic import Periodic


class Flaky(Periodic):
    name = "flaky"

    def __init__(self) -> None:
        super().__init__(0.01)
        self.rounds = 0
        self.three = threading.Event()

    def tick(self) -> None:
        self.rounds += 1
        if self.rounds == 3:
            self.three.set()
        if self.rounds == 1:
            raise RuntimeError("AWS said no")


def test_a_failed_round_is_logged_and_the_next_runs(caplog: pytest.LogCaptureFixture) -> None:
    worker = Flaky()
    worker.start()
    assert worker.three.wait(5)
    worker.stop()
    assert not worker._thread.is_alive()
    assert "flaky failed" in caplog.text
    rounds = worker.rounds
    threading.Event().wait(0.05)
    assert worker.rounds == rounds  # stopped means no more rounds
