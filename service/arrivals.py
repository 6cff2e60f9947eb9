"""Requests on their way to a batcher: what lets a worker wait for company only when it is coming.

The server counts a request from the moment its body has fully arrived (an ASGI
middleware watches the last body chunk), so while the event loop is still parsing,
routing or decoding others, a worker knows company is on its way and holds its
batch open for it (up to the delay). A request still uploading is not counted: an
upload that stalls must not make every lone request wait out the delay.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass


class Arrivals:
    """Requests that have reached the server but not yet a batcher's queue."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending = 0
        self._watchers: list[threading.Condition] = []
        # Told the count after each change (an HTTP worker shows it to the engine process).
        self.publish: Callable[[int], None] | None = None

    @property
    def pending(self) -> int:
        return self._pending

    def watch(self, condition: threading.Condition) -> None:
        """A batcher's condition, woken whenever an arrival settles."""
        with self._lock:
            self._watchers.append(condition)

    def arrive(self) -> Arrival:
        ticket = Arrival(self)
        ticket.arrive()
        return ticket

    def incoming(self, arrival: Arrival | None = None) -> Arrival:
        """The request's arrival ticket (made here unless the server made one on arrival),
        for a `with` block.

        Pass it to the model's `submit`: it settles right after the request is queued.
        A request that ends before that (a bad image, say) settles on leaving the block.
        """
        return arrival or self.arrive()

    def ticket(self) -> Arrival:
        """A ticket for a request whose body is still on its way: counted once it `arrive`s."""
        return Arrival(self)

    def _arrive(self) -> None:
        with self._lock:
            self._pending += 1
            if self.publish is not None:
                self.publish(self._pending)

    def _settle(self) -> None:
        with self._lock:
            self._pending -= 1
            if self.publish is not None:
                self.publish(self._pending)
            watchers = list(self._watchers)
        for condition in watchers:
            with condition:
                condition.notify_all()


@dataclass(eq=False)
class Arrival:
    """One request: counted once it arrives; settled once, when it is queued or ends without that.

    A ticket settled before it arrived is never counted.
    """

    arrivals: Arrivals
    arrived: bool = False
    settled: bool = False

    def arrive(self) -> None:
        if not self.arrived and not self.settled:
            self.arrived = True
            self.arrivals._arrive()

    def settle(self) -> None:
        if not self.settled:
            self.settled = True
            if self.arrived:
                self.arrivals._settle()

    # A context manager of its own (not contextlib's generator): entered on every request.
    def __enter__(self) -> Arrival:
        return self

    def __exit__(self, *_: object) -> None:
        self.settle()
