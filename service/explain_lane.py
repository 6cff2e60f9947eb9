"""The explanation lane: gradients and many forward passes, never inside a classification batch.

Each served model has one lane: one thread and a bounded queue of its own. A job
(an explanation) runs on a private fp32 copy of the model, so the hooks and
gradients it needs never touch the module that classification batches run on.
Before each of its forward passes the job yields to classification: it waits
until the model's batcher has nothing queued or running. A classification
request therefore never waits behind an explanation for more than the one
forward pass in flight, and under sustained load explanations wait, time out
(504) or are refused at once when the lane's queue is full (503, Retry-After).
"""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

import torch
from torch import nn

from service.errors import Overloaded, RequestTimeout

T = TypeVar("T")


class Idleness(Protocol):
    """The classification side the lane yields to: service.batching.Batcher."""

    def wait_idle(self, timeout: float) -> bool: ...


class Expired(Exception):
    """The job's deadline passed (or its caller left) while it waited for its turn."""


class Yielding(nn.Module):
    """Wraps the lane's module: each forward pass first waits for classification to be idle."""

    def __init__(self, module: nn.Module, turn: Callable[[], None]) -> None:
        super().__init__()
        self.module = module
        self._turn = turn

    def forward(self, x: torch.Tensor) -> Any:
        self._turn()
        return self.module(x)


class ExplainLane:
    def __init__(
        self, name: str, module: nn.Module, device: torch.device, *, classification: Idleness,
        max_queue: int,
    ) -> None:  # fmt: skip
        self.name = name
        self.max_queue = max_queue
        self._source = module
        self._device = device
        self._classification = classification
        self._module: nn.Module | None = None  # the private copy, made on first use
        self._pending = 0
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"explain-{name}")

    @property
    def pending(self) -> int:
        return self._pending

    async def run(self, job: Callable[[Yielding], T], *, deadline: float) -> T:
        """Run `job(module)` on the lane; `module` yields to classification before each pass."""
        with self._lock:
            if self._pending >= self.max_queue:
                raise Overloaded(
                    f"the explanation queue for model {self.name!r} is full "
                    f"({self._pending} of {self.max_queue})",
                    headers={"Retry-After": "1"},
                )
            self._pending += 1
        abandoned = threading.Event()
        loop = asyncio.get_running_loop()
        try:
            future = loop.run_in_executor(self._executor, self._work, job, deadline, abandoned)
            # A job left behind by its caller still ends (Expired): nobody reads that error.
            future.add_done_callback(lambda done: done.cancelled() or done.exception())
            async with asyncio.timeout_at(loop.time() + max(0.0, deadline - time.monotonic())):
                return await asyncio.shield(future)
        except (TimeoutError, Expired):
            raise RequestTimeout(
                "the explanation did not get its turn within the deadline"
            ) from None
        finally:
            abandoned.set()  # a job still queued or running stops at its next forward pass
            with self._lock:
                self._pending -= 1

    def stop(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _work(self, job: Callable[[Yielding], T], deadline: float, abandoned: threading.Event) -> T:
        def turn() -> None:
            while not self._classification.wait_idle(0.05):
                if abandoned.is_set() or time.monotonic() >= deadline:
                    raise Expired
            if abandoned.is_set():
                raise Expired

        return job(Yielding(self._private_module(), turn))

    def _private_module(self) -> nn.Module:
        if self._module is None:
            # fp32 and eager whatever classification runs (bf16, a frozen graph): gradients
            # and hooks need the plain module, and a copy keeps them off the shared one.
            self._module = copy.deepcopy(self._source).float().to(self._device).eval()
        return self._module
