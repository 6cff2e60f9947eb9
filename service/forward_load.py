"""How busy a model's forward passes have been lately.

The batcher asks this before it lets a helper instance run (service.batching): a
second forward pass in parallel pays only where the forward passes are what limits
the service, not the HTTP side that feeds them.
"""

from __future__ import annotations

from collections import deque

WINDOW_S = 0.25  # long enough to span several batches, short enough to follow a change of load


class BusyWindow:
    """Seconds of forward pass per second over the last `window_s`, summed over instances
    (1.0: one instance never idle). Not thread-safe: the batcher calls it under its lock."""

    def __init__(self, window_s: float = WINDOW_S) -> None:
        self.window_s = window_s
        self._ended: deque[tuple[float, float]] = deque()  # (start, end) of finished passes
        self._running: dict[int, float] = {}  # pass token -> start

    def started(self, token: int, now: float) -> None:
        self._running[token] = now

    def ended(self, token: int, now: float) -> None:
        start = self._running.pop(token, None)
        if start is not None:
            self._ended.append((start, now))
        self._forget_before(now - self.window_s)

    def fraction(self, now: float) -> float:
        since = now - self.window_s
        self._forget_before(since)
        busy = sum(end - max(start, since) for start, end in self._ended)
        busy += sum(now - max(start, since) for start in self._running.values())
        return busy / self.window_s

    def _forget_before(self, since: float) -> None:
        while self._ended and self._ended[0][1] <= since:
            self._ended.popleft()
