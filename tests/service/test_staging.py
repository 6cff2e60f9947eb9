"""The host staging buffer's bookkeeping, on CPU tensors: gather, reuse, grow, wait.

On CUDA the buffer is pinned and the copy to the device asynchronous; what can go wrong
there (a buffer overwritten while a transfer still reads it, a batch gathered wrongly,
memory reallocated every batch) is the bookkeeping tested here with a stand-in event.
"""

from __future__ import annotations

import torch

from service.staging import HostStaging

CPU = torch.device("cpu")


class RecordingEvent:
    """Counts what the staging asks of a transfer's end event."""

    def __init__(self) -> None:
        self.log: list[str] = []

    def record(self) -> None:
        self.log.append("record")

    def synchronize(self) -> None:
        self.log.append("synchronize")


def pixels(count: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 3, 8, 8), dtype=torch.uint8, generator=generator)


def test_requests_are_gathered_into_one_batch_in_order() -> None:
    staging = HostStaging(CPU, pin=False)
    parts = [pixels(2, 1), pixels(1, 2), pixels(3, 3)]
    batch = staging.to_device(parts)
    assert torch.equal(batch, torch.cat(parts))
    floats = [pixels(2, 4).float(), pixels(1, 5).float()]
    assert torch.equal(staging.to_device(floats), torch.cat(floats))  # any dtype


def test_the_buffer_is_reused_and_grows_only_past_its_size() -> None:
    staging = HostStaging(CPU, pin=False)
    first = staging.to_device([pixels(4, 1)])
    capacity, address = staging.capacity, first.data_ptr()
    assert capacity >= 4 * 3 * 8 * 8 and capacity & (capacity - 1) == 0  # a power of two
    smaller = staging.to_device([pixels(1, 2), pixels(2, 3)])
    assert (staging.capacity, smaller.data_ptr()) == (capacity, address)  # no new memory
    larger = staging.to_device([pixels(16, 4)])
    assert staging.capacity >= 16 * 3 * 8 * 8 > capacity
    assert torch.equal(larger, pixels(16, 4))


def test_a_cpu_device_needs_no_transfer_and_records_nothing() -> None:
    event = RecordingEvent()
    staging = HostStaging(CPU, pin=False, event=event)
    staging.to_device([pixels(2, 1)])
    staging.to_device([pixels(2, 2)])
    assert event.log == []


def test_the_buffer_is_written_again_only_after_the_last_transfer_ended() -> None:
    event = RecordingEvent()
    # A device other than the host: the transfer is `.to(device)`; `meta` stands in for CUDA.
    staging = HostStaging(torch.device("meta"), pin=False, event=event)
    batch = staging.to_device([pixels(2, 1)])
    assert batch.device.type == "meta" and batch.shape == (2, 3, 8, 8)
    assert event.log == ["record"]
    staging.to_device([pixels(3, 2)])
    assert event.log == ["record", "synchronize", "record"]
