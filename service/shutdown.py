"""Graceful shutdown: drain, finish the accepted requests, exit 0.

On SIGTERM (or SIGINT) the server
1. marks the registry draining at once, so /readyz answers 503 and load balancers
   stop routing here, while the listener keeps accepting for `drain_s` so that
   requests already routed here are answered (503 not_ready) instead of refused;
2. then stops new handshakes on the listener, accepts the connections the kernel
   had already queued (closing it with some queued would reset them), lets
   uvicorn close it and wait for the connections in flight, whose queued and
   running requests complete, for at most the grace period;
3. then runs the app's shutdown (the batchers finish what is queued) and returns,
   so the process exits 0.

A second signal skips the rest of the drain window; a SIGINT after that forces the
exit, as in plain uvicorn. uvicorn re-raises the signals it captured once it has
shut down, which would end the process by the signal instead of exiting 0; signals
handled here are therefore not recorded for re-raising.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from types import FrameType

import uvicorn

from service.listen_queue import queued_connections, refuse_new_connections

log = logging.getLogger("service.shutdown")

QUEUE_WAIT_S = 1.0  # for the accept queue to empty once handshakes have stopped


class GracefulServer(uvicorn.Server):
    def __init__(
        self, config: uvicorn.Config, *, drain_s: float, begin_draining: Callable[[], bool]
    ) -> None:
        """`begin_draining` marks the app draining; it returns False while still starting."""
        super().__init__(config)
        self.drain_s = drain_s
        self.drain_until: float | None = None
        self.refusing_since: float | None = None
        self._begin_draining = begin_draining

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler: it runs on the main thread between two bytecodes of the
        # event loop, so it only sets flags that the loop reads on its next tick.
        if self.drain_until is None:
            self.drain_until = time.monotonic() + self.drain_s
            if not self._begin_draining():  # still starting: nothing to drain, stop at once
                self.should_exit = True
            log.info(
                "draining", extra={"signal": signal.Signals(sig).name, "seconds": self.drain_s}
            )
            return
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        self.should_exit = True

    async def on_tick(self, counter: int) -> bool:
        if self.drain_until is not None and time.monotonic() >= self.drain_until:
            self.should_exit = self.should_exit or self._listeners_emptied()
        return await super().on_tick(counter)

    def _listeners_emptied(self) -> bool:
        """Stop new handshakes (first call), then True once the connections queued before
        are accepted, at the earliest on the next tick (their requests have been read by
        then, so uvicorn's shutdown finds them busy and answers them), at most QUEUE_WAIT_S."""
        sockets = [sock for server in self.servers for sock in server.sockets]
        now = time.monotonic()
        if self.refusing_since is None:
            self.refusing_since = now
            for sock in sockets:
                refuse_new_connections(sock)
            return False
        if now - self.refusing_since >= QUEUE_WAIT_S:
            return True
        return all(queued_connections(sock) == 0 for sock in sockets)
