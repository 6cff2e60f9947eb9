"""A worker's shared-memory arena: its requests' pixels, read in place by the engine.

The worker owns one file in the run directory (tmpfs where there is one) mapped
in both processes. It allocates a block per request, writes the pixels once and
sends only the offset; the block is freed when the engine's answer arrives, so
the engine never reads a block that is being reused. The first bytes hold the
worker's count of requests on their way (service.arrivals): the engine's
batcher reads every worker's count to know whether company is coming.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

HEADER_BYTES = 64
ALIGN = 64
_PENDING = struct.Struct("<q")


def _aligned(size: int) -> int:
    return -(-size // ALIGN) * ALIGN


class Arena:
    """The worker's side: first-fit allocation over one mapped file."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            # Reserved now: a tmpfs that fills up later would kill the process (SIGBUS) on
            # a write to the mapping; here it fails at once (OSError), and the caller goes
            # without an arena.
            os.posix_fallocate(fd, 0, size)
            self._map = mmap.mmap(fd, size)
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        os.close(fd)
        self._free: list[tuple[int, int]] = [(HEADER_BYTES, size - HEADER_BYTES)]  # by offset
        self._used: dict[int, int] = {}

    def allocate(self, nbytes: int) -> int | None:
        """The offset of a free block of `nbytes`, or None when none is left (send inline)."""
        need = _aligned(max(1, nbytes))
        for index, (offset, length) in enumerate(self._free):
            if length >= need:
                if length == need:
                    del self._free[index]
                else:
                    self._free[index] = (offset + need, length - need)
                self._used[offset] = need
                return offset
        return None

    def release(self, offset: int) -> None:
        length = self._used.pop(offset)
        self._free.append((offset, length))
        self._free.sort()
        merged: list[tuple[int, int]] = []
        for start, size in self._free:
            if merged and merged[-1][0] + merged[-1][1] == start:
                merged[-1] = (merged[-1][0], merged[-1][1] + size)
            else:
                merged.append((start, size))
        self._free = merged

    def write(self, offset: int, array: NDArray[Any]) -> None:
        target = np.ndarray(array.shape, array.dtype, buffer=self._map, offset=offset)
        np.copyto(target, array)

    def publish_pending(self, count: int) -> None:
        _PENDING.pack_into(self._map, 0, count)

    @property
    def in_use(self) -> int:
        return sum(self._used.values())

    def close(self) -> None:
        self._map.close()
        self.path.unlink(missing_ok=True)


class ArenaReader:
    """The engine's side of one worker's arena."""

    def __init__(self, path: Path) -> None:
        fd = os.open(path, os.O_RDWR)
        try:
            self._map = mmap.mmap(fd, os.fstat(fd).st_size)
        finally:
            os.close(fd)

    def array(self, offset: int, shape: list[int], dtype: str) -> NDArray[Any]:
        """The block as an array, in place: valid until the engine answers its request."""
        return np.ndarray(tuple(shape), np.dtype(dtype), buffer=self._map, offset=offset)

    @property
    def pending(self) -> int:
        return int(_PENDING.unpack_from(self._map, 0)[0])
