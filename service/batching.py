"""Dynamic batching: requests from the event loop, batches on worker threads.

One bounded queue per model; one worker thread per model instance. A worker
that finds requests queued takes them at once (up to max batch size images),
so a lone request never pays the delay window. It waits for company only while
other requests have reached the server and not yet a queue (`Arrivals`: they
are being parsed, routed or decoded): then it holds the batch open until it is
full, nothing more is on its way, or the oldest request has waited
max_batch_delay. Under load that turns many small forward passes into a few
large ones; at low load it costs nothing. Requests whose deadline
passed or whose caller went away before their batch ran are dropped, never
computed. An error in a batch is bisected down to the requests that cause it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from numpy.typing import NDArray

from service.engine import EngineOutput
from service.errors import InferenceFailed, NotReady, Overloaded, RequestTimeout, ServiceError

log = logging.getLogger("service.batching")


class BatchRunner(Protocol):
    """What a worker runs a batch on: service.engine.Engine, or a test's small fake."""

    @property
    def device_name(self) -> str: ...

    def run(
        self, inputs: Sequence[torch.Tensor], capture: frozenset[str] = ...
    ) -> EngineOutput: ...


class BatchObserver(Protocol):
    """Told about every batch; the metrics module implements it."""

    def batch_done(
        self, *, size: int, seconds: float, device: str, queue_waits: Sequence[float]
    ) -> None: ...

    def batch_failed(self, *, kind: str) -> None: ...

    def queue_changed(self, depth: int) -> None: ...


class _NoObserver:
    def batch_done(
        self, *, size: int, seconds: float, device: str, queue_waits: Sequence[float]
    ) -> None:
        pass

    def batch_failed(self, *, kind: str) -> None:
        pass

    def queue_changed(self, depth: int) -> None:
        pass


@dataclass(frozen=True)
class ItemResult:
    """What one request gets back, its images in order."""

    probabilities: NDArray[np.float32]
    logits: NDArray[np.float32]
    features: dict[str, NDArray[np.float32]]
    queue_wait_s: float
    inference_s: float
    batch_size: int
    device: str


class Arrivals:
    """Requests that have reached the server but not yet a batcher's queue.

    The server counts a request from the moment it arrives (an ASGI middleware),
    so while the event loop is still parsing, routing or decoding others, a worker
    knows company is on its way and holds its batch open for it (up to the delay).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending = 0
        self._watchers: list[threading.Condition] = []

    @property
    def pending(self) -> int:
        return self._pending

    def watch(self, condition: threading.Condition) -> None:
        """A batcher's condition, woken whenever an arrival settles."""
        with self._lock:
            self._watchers.append(condition)

    def arrive(self) -> Arrival:
        with self._lock:
            self._pending += 1
        return Arrival(self)

    def _settle(self) -> None:
        with self._lock:
            self._pending -= 1
            watchers = list(self._watchers)
        for condition in watchers:
            with condition:
                condition.notify_all()


@dataclass(eq=False)
class Arrival:
    """One arrived request; settled once, when it is queued or when it ends without that."""

    arrivals: Arrivals
    settled: bool = False

    def settle(self) -> None:
        if not self.settled:
            self.settled = True
            self.arrivals._settle()


@dataclass(eq=False)
class _WorkItem:
    pixels: torch.Tensor
    capture: frozenset[str]
    deadline: float
    future: asyncio.Future[ItemResult]
    loop: asyncio.AbstractEventLoop
    enqueued_at: float = field(default_factory=time.monotonic)

    @property
    def size(self) -> int:
        return int(self.pixels.shape[0])


Settle = tuple[asyncio.Future[ItemResult], ItemResult | BaseException]


def _settle_all(outcomes: list[Settle]) -> None:
    """Runs on the event loop: resolve futures nobody has given up on."""
    for future, outcome in outcomes:
        if future.done():
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError)


class Batcher:
    def __init__(
        self,
        name: str,
        runners: Sequence[BatchRunner],
        *,
        max_batch_size: int,
        max_delay_s: float,
        max_queue_images: int,
        observer: BatchObserver | None = None,
        arrivals: Arrivals | None = None,
    ) -> None:
        if not runners:
            raise ValueError("a batcher needs at least one runner")
        self.name = name
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.max_queue_images = max_queue_images
        self._runners = list(runners)
        self._observer: BatchObserver = observer or _NoObserver()
        self._queue: deque[_WorkItem] = deque()
        self._queued_images = 0
        self._busy_workers = 0
        self._accepting = True
        self._stopping = False
        self._cond = threading.Condition()
        self._threads: list[threading.Thread] = []
        self._arrivals = arrivals or Arrivals()
        self._arrivals.watch(self._cond)

    # ---- event-loop side -------------------------------------------------

    @property
    def queue_depth(self) -> int:
        return self._queued_images

    @property
    def idle(self) -> bool:
        with self._cond:
            return not self._queue and self._busy_workers == 0

    @contextlib.contextmanager
    def incoming(self, arrival: Arrival | None = None) -> Iterator[Arrival]:
        """The request's arrival ticket (made here unless the server made one on arrival).

        Pass it to `submit`: it settles right after the request is queued. A request
        that ends before that (a bad image, say) settles on leaving this block.
        """
        ticket = arrival or self._arrivals.arrive()
        try:
            yield ticket
        finally:
            ticket.settle()

    async def submit(
        self,
        pixels: torch.Tensor,
        *,
        deadline: float,
        capture: frozenset[str] = frozenset(),
        arrival: Arrival | None = None,
    ) -> ItemResult:
        """Queue [N,C,H,W] pixels; answer when their batch has run. Splits N > max batch size."""
        loop = asyncio.get_running_loop()
        chunks = (
            [pixels]
            if pixels.shape[0] <= self.max_batch_size
            else list(torch.split(pixels, self.max_batch_size))
        )
        items = [_WorkItem(c, capture, deadline, loop.create_future(), loop) for c in chunks]
        self._enqueue(items, arrival)
        futures = [item.future for item in items]
        try:
            async with asyncio.timeout_at(self._loop_deadline(loop, deadline)):
                results = await asyncio.gather(*futures)
        except TimeoutError:
            raise RequestTimeout(
                f"no answer within the request timeout ({self._timeout_text(items)})"
            ) from None
        finally:
            for future in futures:
                future.cancel()  # a no-op for the settled; drops the rest from their batch
        return results[0] if len(results) == 1 else _concat(results)

    def _enqueue(self, items: list[_WorkItem], arrival: Arrival | None) -> None:
        count = sum(item.size for item in items)
        try:
            depth = self._enqueue_locked(items, count)
        finally:
            if arrival is not None:
                arrival.settle()  # after queueing: a worker may briefly wait for it, never miss it
        self._observer.queue_changed(depth)

    def _enqueue_locked(self, items: list[_WorkItem], count: int) -> int:
        with self._cond:
            if not self._accepting:
                raise NotReady("the server is shutting down")
            if self._queued_images + count > self.max_queue_images:
                raise Overloaded(
                    f"queue for model {self.name!r} is full "
                    f"({self._queued_images} of {self.max_queue_images} images waiting)",
                    headers={"Retry-After": "1"},
                )
            self._queue.extend(items)
            self._queued_images += count
            self._cond.notify_all()
            return self._queued_images

    @staticmethod
    def _loop_deadline(loop: asyncio.AbstractEventLoop, deadline: float) -> float:
        return loop.time() + max(0.0, deadline - time.monotonic())

    @staticmethod
    def _timeout_text(items: list[_WorkItem]) -> str:
        waited = time.monotonic() - items[0].enqueued_at
        return f"waited {waited:.3f} s"

    # ---- worker side -----------------------------------------------------

    def start(self) -> None:
        for index, runner in enumerate(self._runners):
            thread = threading.Thread(
                target=self._work, args=(runner,), name=f"batcher-{self.name}-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float | None = None) -> bool:
        """Finish what is queued, then end the workers; True when they ended in time."""
        with self._cond:
            self._accepting = False
            self._stopping = True
            self._cond.notify_all()
        end = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if end is None else max(0.0, end - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    def _work(self, runner: BatchRunner) -> None:
        while True:
            items = self._next_batch()
            if items is None:
                return
            try:
                self._run_batch(runner, items)
            except BaseException:  # never let a worker die
                log.exception("batch worker error", extra={"model": self.name})
                # Answer now rather than at the deadline; futures already settled are skipped.
                failed = InferenceFailed("the model failed on this input")
                self._deliver([(item, failed) for item in items])
            finally:
                with self._cond:
                    self._busy_workers -= 1

    def _next_batch(self) -> list[_WorkItem] | None:
        with self._cond:
            while not self._queue:
                if self._stopping:
                    return None
                self._cond.wait()
            oldest = self._queue[0].enqueued_at
            while (
                self._queued_images < self.max_batch_size
                and self._arrivals.pending > 0
                and not self._stopping
            ):
                remaining = oldest + self.max_delay_s - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            items = [self._queue.popleft()]
            total = items[0].size
            while self._queue and total + self._queue[0].size <= self.max_batch_size:
                item = self._queue.popleft()
                items.append(item)
                total += item.size
            self._queued_images -= total
            self._busy_workers += 1
            depth = self._queued_images
        self._observer.queue_changed(depth)
        return items

    def _run_batch(self, runner: BatchRunner, items: list[_WorkItem]) -> None:
        now = time.monotonic()
        live: list[_WorkItem] = []
        outcomes: list[tuple[_WorkItem, ItemResult | BaseException]] = []
        for item in items:
            if item.future.done():  # the caller gave up (timeout or disconnect)
                continue
            if item.deadline <= now:
                outcomes.append((item, RequestTimeout("the request waited past its deadline")))
                self._observer.batch_failed(kind="timeout")
            else:
                live.append(item)
        if live:
            self._bisect(runner, live, now, outcomes)
        self._deliver(outcomes)

    def _bisect(
        self,
        runner: BatchRunner,
        items: list[_WorkItem],
        started: float,
        outcomes: list[tuple[_WorkItem, ItemResult | BaseException]],
    ) -> None:
        """Run the batch; on failure, split it so that only the failing requests fail."""
        capture = frozenset().union(*(item.capture for item in items))
        try:
            output = runner.run([item.pixels for item in items], capture)
        except Exception as exc:
            kind = "oom" if _is_oom(exc) else "error"
            self._observer.batch_failed(kind=kind)
            if len(items) > 1:
                middle = len(items) // 2
                self._bisect(runner, items[:middle], started, outcomes)
                self._bisect(runner, items[middle:], started, outcomes)
                return
            log.error(
                "inference failed: %s: %s",
                type(exc).__name__,
                exc,
                extra={"model": self.name, "images": items[0].size},
            )
            outcomes.append((items[0], self._failure(exc)))
            return
        size = sum(item.size for item in items)
        self._observer.batch_done(
            size=size,
            seconds=output.seconds,
            device=runner.device_name,
            queue_waits=[started - item.enqueued_at for item in items],
        )
        offset = 0
        for item in items:
            rows = slice(offset, offset + item.size)
            offset += item.size
            outcomes.append(
                (
                    item,
                    ItemResult(
                        probabilities=output.probabilities[rows],
                        logits=output.logits[rows],
                        features={n: output.features[n][rows] for n in item.capture},
                        queue_wait_s=started - item.enqueued_at,
                        inference_s=output.seconds,
                        batch_size=size,
                        device=runner.device_name,
                    ),
                )
            )

    @staticmethod
    def _failure(exc: Exception) -> ServiceError:
        if isinstance(exc, ServiceError):
            return exc
        if _is_oom(exc):
            return InferenceFailed("the image does not fit in device memory, even alone")
        return InferenceFailed("the model failed on this input")

    @staticmethod
    def _deliver(outcomes: list[tuple[_WorkItem, ItemResult | BaseException]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[Settle]] = {}
        for item, outcome in outcomes:
            by_loop.setdefault(item.loop, []).append((item.future, outcome))
        for loop, settles in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting
                loop.call_soon_threadsafe(_settle_all, settles)


def _concat(results: Sequence[ItemResult]) -> ItemResult:
    first = results[0]
    return ItemResult(
        probabilities=np.concatenate([r.probabilities for r in results]),
        logits=np.concatenate([r.logits for r in results]),
        features={n: np.concatenate([r.features[n] for r in results]) for n in first.features},
        queue_wait_s=max(r.queue_wait_s for r in results),
        inference_s=sum(r.inference_s for r in results),
        batch_size=max(r.batch_size for r in results),
        device=first.device,
    )


def warm_up_sizes(max_batch_size: int) -> list[int]:
    """Powers of two up to, and including, the max batch size: the buckets warmed at start-up."""
    sizes = [2**i for i in range(int(math.log2(max_batch_size)) + 1)]
    return sorted({*sizes, max_batch_size})
