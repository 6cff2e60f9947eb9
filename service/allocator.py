"""glibc malloc tuning for a long-running inference process.

With glibc's defaults, tensors of a few hundred kilobytes and up are mmap-ed
and unmapped on every forward pass, and freed heap is trimmed back to the
system: each batch then page-faults its activations in again. Raising the mmap
and trim thresholds keeps that memory in the process's heap for reuse (the
same effect people get from jemalloc or tcmalloc). What it saves on the
default model's batches is measured by `make bench` (bench/RESULTS.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("service.allocator")

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
THRESHOLD_BYTES = 256 * 1024 * 1024


def keep_freed_memory(threshold: int = THRESHOLD_BYTES) -> bool:
    """Ask glibc to reuse freed memory instead of returning it; False where there is no glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    applied = bool(mallopt(_M_MMAP_THRESHOLD, threshold)) and bool(
        mallopt(_M_TRIM_THRESHOLD, threshold)
    )
    log.debug("malloc thresholds", extra={"bytes": threshold, "applied": applied})
    return applied


def release_freed_memory() -> bool:
    """Hand the heap's free pages back to the system (malloc_trim); False where there is none.

    For after a rare large allocation (a full-size image decode): the thresholds above
    would otherwise keep its memory resident for good, in every thread's arena.
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return bool(trim(0))
