"""The explanation lane: its own bounded queue, a private module, and yielding to classification."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import torch
from torch import nn

from service.errors import Overloaded, RequestTimeout
from service.explain_lane import ExplainLane


class Classification:
    """A batcher stand-in whose idleness the test switches."""

    def __init__(self) -> None:
        self.idle = threading.Event()
        self.idle.set()
        self.waits = 0

    def wait_idle(self, timeout: float) -> bool:
        self.waits += 1
        return self.idle.wait(timeout)


def lane(classification: Classification, max_queue: int = 2) -> tuple[ExplainLane, nn.Module]:
    source = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    return (
        ExplainLane("m", source, torch.device("cpu"), classification=classification,
                    max_queue=max_queue),
        source,
    )  # fmt: skip


def forwards(count: list[int]):  # type: ignore[no-untyped-def]
    def job(module: nn.Module) -> torch.Tensor:
        x = torch.ones(1, 4, requires_grad=True)
        out = module(x)
        count[0] += 1
        out.sum().backward()
        assert x.grad is not None
        return x.grad

    return job


async def test_a_job_runs_on_a_private_copy_with_gradients() -> None:
    classification = Classification()
    explain, source = lane(classification)
    count = [0]
    grad = await explain.run(forwards(count), deadline=time.monotonic() + 10)
    weight = source[1].weight.detach()
    assert torch.allclose(grad, weight.sum(dim=0, keepdim=True))  # d(sum of outputs)/dx
    assert count == [1] and classification.waits == 1  # yielded once, before its one pass
    assert source[1].weight.grad is None  # the served module's parameters were not touched
    explain.stop()


async def test_a_job_waits_while_classification_is_busy_and_times_out() -> None:
    classification = Classification()
    classification.idle.clear()
    explain, _ = lane(classification)
    count = [0]
    with pytest.raises(RequestTimeout):
        await explain.run(forwards(count), deadline=time.monotonic() + 0.3)
    classification.idle.set()
    await asyncio.sleep(0.2)  # the abandoned job sees it was abandoned at its next turn
    assert count == [0]  # it never ran a forward pass
    assert explain.pending == 0
    explain.stop()


async def test_the_queue_is_bounded() -> None:
    classification = Classification()
    classification.idle.clear()
    explain, _ = lane(classification, max_queue=2)
    count = [0]
    deadline = time.monotonic() + 5
    waiting = [
        asyncio.create_task(explain.run(forwards(count), deadline=deadline)) for _ in range(2)
    ]
    await asyncio.sleep(0.1)
    with pytest.raises(Overloaded) as refused:
        await explain.run(forwards(count), deadline=deadline)
    assert refused.value.headers["Retry-After"] == "1"
    classification.idle.set()
    done = await asyncio.gather(*waiting)
    assert len(done) == 2 and count == [2]
    explain.stop()
