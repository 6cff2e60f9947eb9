"""The Python heap of a serving process: the start-up objects leave the garbage collector's view.

After loading, a process holds a few hundred thousand long-lived objects (torch
modules, their parameters' wrappers, pydantic models, FastAPI's routes). CPython's
full (generation 2) collection walks all of them, and under load the requests'
garbage triggers one every second or so: each stalled the event loop for 100 to
400 ms on the development machine, which was the whole of W1's p99 at c=32.
`gc.freeze()` moves every object alive at that moment to a permanent generation
that collections skip (what Instagram did for their pre-fork servers); reference
counting still frees them, only a cycle among them would now outlive its use.
bench/RESULTS.md has the measured p99 with and without.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger("service.heap")


def freeze_startup_heap() -> int:
    """Collect the start-up garbage once, then freeze what remains; return how many objects."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.info("start-up heap frozen", extra={"objects": frozen})
    return frozen
