"""A daemon thread that runs one method every so many seconds until stopped.

Sweepers and watchers in serving processes (bot.server.start_services) subclass it: `tick`
does one round; an exception is logged and the next round runs as usual.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod

log = logging.getLogger(__name__)


class Periodic(ABC):
    name = "periodic"  # the thread's name, and how failures are logged

    def __init__(self, every: float) -> None:
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)

    @abstractmethod
    def tick(self) -> object:
        """One round."""

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.tick()
            except Exception:
                log.exception("%s failed", self.name)
