"""A host staging buffer per engine instance: a batch's pixels gathered once, then copied
to the device without blocking.

Without it a batch costs two host copies (gather the requests' pixels, then copy them
into freshly pinned memory) before the transfer. Here the requests' pixels are gathered
straight into one pinned buffer that lives as long as the instance and only grows (to the
largest batch seen, in powers of two), and the transfer to the device is asynchronous on
the instance's stream. Before the buffer is written again, the event recorded after the
last transfer is waited on, so a transfer still in flight never reads half-new pixels.
The engine stages only for a CUDA device; the bookkeeping is the same on a CPU device,
where nothing is pinned and the batch is the buffer itself: testable without a GPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch


class TransferDone(Protocol):
    """What marks a transfer's end: a torch.cuda.Event (or a test's stand-in)."""

    def record(self) -> None: ...

    def synchronize(self) -> None: ...


class HostStaging:
    def __init__(self, device: torch.device, *, pin: bool, event: TransferDone | None = None):
        """`event`: recorded after each transfer, waited on before the next write."""
        self.device = device
        self.pin = pin
        self._event = event
        self._buffer = torch.empty(0, dtype=torch.uint8)
        self._in_flight = False

    @property
    def capacity(self) -> int:
        """Bytes the buffer holds (it grows, never shrinks)."""
        return self._buffer.numel()

    def to_device(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        """The host tensors (same dtype and image shape) as one batch on the device."""
        first = tensors[0]
        count = sum(int(t.shape[0]) for t in tensors)
        shape = (count, *first.shape[1:])
        nbytes = count * first[0].numel() * first.element_size()
        if self._in_flight and self._event is not None:
            self._event.synchronize()  # the last transfer has read the buffer
        self._in_flight = False
        if nbytes > self._buffer.numel():
            self._buffer = torch.empty(_grown(nbytes), dtype=torch.uint8, pin_memory=self.pin)
        staged = self._buffer[:nbytes].view(first.dtype).view(shape)
        torch.cat(list(tensors), out=staged)
        if self.device.type == "cpu":
            return staged  # the buffer itself: valid until the next call
        batch = staged.to(self.device, non_blocking=self.pin)
        if self._event is not None:
            self._event.record()
            self._in_flight = True
        return batch


def _grown(nbytes: int) -> int:
    """The next power of two: a few growths at most, then none."""
    return 1 << max(0, nbytes - 1).bit_length()
