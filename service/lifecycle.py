"""The app's life as its server sees it: made by serve(), filled by the app's lifespan.

The server needs two things from a running app: a way to start draining on
SIGTERM, and the error that stopped start-up, to report it in one line. Both
travel on this object, which serve() owns, instead of through the server's or
the app's internals.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from service.registry import ModelRegistry


@dataclass
class Lifecycle:
    registry: ModelRegistry = field(default_factory=ModelRegistry)  # the current lifespan's
    startup_error: Exception | None = None
    # A serving process freezes its start-up heap once ready (service/heap.py); an app made
    # in a test process, which makes many, does not.
    freeze_heap_when_ready: bool = False

    def begin_draining(self) -> bool:
        """Mark the models draining (/readyz 503); False while still starting: nothing to drain."""
        if not self.registry.ready:
            return False
        self.registry.draining = True
        return True
