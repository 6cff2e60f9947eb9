"""Requests on their way to a batcher: what lets a worker wait for company only when it is coming.

The server counts a request from the moment it arrives (an ASGI middleware), so
while the event loop is still parsing, routing or decoding others, a worker knows
company is on its way and holds its batch open for it (up to the delay).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


class Arrivals:
    """Requests that have reached the server but not yet a batcher's queue."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending = 0
        self._watchers: list[threading.Condition] = []

    @property
    def pending(self) -> int:
        return self._pending

    def watch(self, condition: threading.Condition) -> None:
        """A batcher's condition, woken whenever an arrival settles."""
        with self._lock:
            self._watchers.append(condition)

    def arrive(self) -> Arrival:
        with self._lock:
            self._pending += 1
        return Arrival(self)

    def _settle(self) -> None:
        with self._lock:
            self._pending -= 1
            watchers = list(self._watchers)
        for condition in watchers:
            with condition:
                condition.notify_all()


@dataclass(eq=False)
class Arrival:
    """One arrived request; settled once, when it is queued or when it ends without that."""

    arrivals: Arrivals
    settled: bool = False

    def settle(self) -> None:
        if not self.settled:
            self.settled = True
            self.arrivals._settle()
